"""``imref-stream replay``: re-process a time range of order items into files, for backfills.

The range is one of Kafka record timestamps: in every order-item partition, from the first
record at or after ``--from`` up to (not including) the first record at or after ``--to``
(``offsets_for_times`` semantics), widened to the whole of any recorded cut it touches (below).
Clicks are read from ``attribution.window_days`` before the range to ``attribution.grace_s``
after it, only for the customers of the range. The worker's own core (``streams.core``)
decides everything: record validation (``parse_record``), click history (``remember``), the
choice of click (``click_for``), the rows (``conversion_row``), one order in one file
(``PartitionOrders``, starting from the orders the worker recorded in its ``orders`` changelog),
the cuts (``PartitionBatcher``, at ``batch.max_rows``, orders kept together) and the file names.
Nothing is published to the dead-letter, unattributed or audit topics and no consumer offset is
committed: a replay only reads.

A replay must not report a conversion twice. What the worker delivered is read from Kafka, never
changed: its consumer group's committed offsets (every order item below one went out in a file)
and the cuts still in its ``batch-cuts`` changelog (a file's offset range, recorded before its
upload). A recorded cut the range touches is replayed whole, so its file gets the worker's name
and the worker's rows and replaces the worker's file. A delivered offset whose cut is no longer
recorded would go out again in a file of another name: such a replay writes nothing unless
``allow_duplicates``. Offsets past the committed ones outside any cut are not delivered yet; the
replay cuts them itself. The same range and the same Kafka state give the same files.
"""
from __future__ import annotations

import sys
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from pathlib import Path
from typing import Callable, Iterator

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from tqdm import tqdm

from connectors import Connection, build_connection
from connectors.fsspec_dir import FsspecConnection, FsspecSettings
from schemas.validation import InvalidEvent, event_time, validate_click

from ..config import KafkaSettings, Settings
from ..core.attribution import History, remember
from ..core.batching import Batch, Entry, PartitionBatcher
from ..core.csvfile import conversion_row, render
from ..core.join import click_for, parse_record, unattributed_reason
from ..core.orders import PartitionOrders, line_identities
from ..delivery.lanes import RetryPolicy
from ..kafka import client_options

PUT_ATTEMPTS = 5
# Faust's changelog topics of the worker's "batch-cuts" and "orders" tables (streams.runtime.app).
CUTS_CHANGELOG = "{app_id}-batch-cuts-changelog"
ORDERS_CHANGELOG = "{app_id}-orders-changelog"
TWIN = "the worker's file: same name, replaces it"
DUPLICATE = "duplicates rows the worker delivered"
NEW = "not delivered by the worker yet"


class ReplayError(Exception):
    """The replay cannot go on; the message says why (never a secret)."""


class DeliveryFailed(ReplayError):
    """A connection did not take a file; running the same replay again is safe."""


@dataclass
class Delivered:
    """What the worker delivered from one order-item partition, as Kafka records it."""

    committed: int = 0  # every offset below it went out in a file
    cuts: list[tuple[int, int]] = field(default_factory=list)  # files' offset ranges: sorted, disjoint
    orders: dict[str, dict] = field(default_factory=dict)  # the orders the worker took (core.orders records)

    def widen(self, first: int, last: int) -> tuple[int, int]:
        """A recorded cut the range touches is replayed whole, or its file would lose rows."""
        for f, l in self.cuts:
            if f <= first <= l:
                first = f
            if f <= last <= l:
                last = l
        return first, last

    def unknown(self, first: int, last: int) -> list[tuple[int, int]]:
        """The offsets of ``first``-``last`` delivered in files whose cuts are no longer recorded."""
        gaps, at, end = [], first, min(last, self.committed - 1)
        for f, l in self.cuts:
            gaps.append((at, min(f - 1, end)))
            at = max(at, l + 1)
        gaps.append((at, end))
        return [(a, b) for a, b in gaps if a <= b]

    def note(self, first: int, last: int) -> str:
        """What a replayed file of offsets ``first``-``last`` is to impact."""
        if (first, last) in self.cuts:
            return TWIN
        in_a_cut = any(f <= last and first <= l for f, l in self.cuts)  # the worker's file has other bounds
        return DUPLICATE if in_a_cut or self.unknown(first, last) else NEW


def merge_cuts(lists) -> list[tuple[int, int]]:
    """Every cut in a partition's changelog records, oldest first. Each record is the list the
    worker held then (it drops cuts below its committed offset, and Kafka compacts old records
    away); where two cuts overlap (a partition moved between workers mid-batch) the later wins,
    as in the worker's own table."""
    cuts: list[tuple[int, int]] = []
    for recorded in lists:
        for first, last, *_ in recorded:
            # cuts stays sorted and disjoint: the ones overlapping [first, last] are contiguous.
            lo = bisect_left(cuts, first, key=itemgetter(1))
            hi = bisect_right(cuts, last, key=itemgetter(0))
            cuts[lo:hi] = [(first, last)]
    return cuts


@dataclass
class Summary:
    items: int = 0
    rows: int = 0
    files: list[tuple[str, int, str]] = field(default_factory=list)  # name, rows, note
    # partition -> offset ranges of the replay the worker delivered in files whose cuts are gone
    unknown: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    unattributed: Counter = field(default_factory=Counter)
    invalid: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)  # its order is in a file already
    clicks: int = 0

    def report(self) -> str:
        def detail(c: Counter) -> str:
            return f" ({', '.join(f'{k} {v}' for k, v in sorted(c.items()))})" if c else ""
        return "\n".join([
            f"order items read: {self.items}",
            f"rows:             {self.rows}",
            f"files:            {len(self.files)}",
            f"unattributed:     {sum(self.unattributed.values())}{detail(self.unattributed)}",
            f"invalid:          {sum(self.invalid.values())}{detail(self.invalid)}",
            f"refused:          {sum(self.refused.values())}{detail(self.refused)}",
            f"clicks used:      {self.clicks}",
            *(f"  {name}  {rows} rows  ({note})" for name, rows, note in self.files),
        ])

    def duplicates(self) -> list[tuple[str, int, str]]:
        return [f for f in self.files if f[2] == DUPLICATE]


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ReplayError(f"{text!r} is not an ISO 8601 time, e.g. 2026-11-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise ReplayError(f"{text!r} has no zone; add one, e.g. Z or +01:00")
    return moment


def run_replay(settings: Settings, start: datetime, end: datetime, output: str | None = None,
               progress: bool | None = None, allow_duplicates: bool = False, dry_run: bool = False) -> Summary:
    """Replay the range; nothing is written when ``dry_run``, nor when a file would carry rows the
    worker delivered under another name (``Summary.duplicates``) unless ``allow_duplicates``."""
    if start >= end:
        raise ReplayError("--from must be before --to")
    connections = [] if dry_run else _connections(settings, output)
    consumer = None
    bar = _bars(progress)
    try:
        consumer = _consumer(settings.kafka)
        items_topic, clicks_topic = settings.topics.order_items, settings.topics.clicks
        # First pass: which offsets the range covers and whose items they are, so only those
        # customers' clicks are held in memory.
        ranges: dict[TopicPartition, list[int]] = {}
        customers: set[bytes] = set()
        with bar("order items (scan)") as b:
            for r in _between(consumer, items_topic, _ms(start), _ms(end)):
                ranges.setdefault(TopicPartition(r.topic, r.partition), [r.offset, r.offset])[1] = r.offset
                customers.add(r.key)
                b.update()
        worker = _delivered(settings, consumer, list(ranges))
        wide = {tp: worker[tp.partition].widen(*offsets) for tp, offsets in ranges.items()}
        # The records a widened cut adds: their customers and times count for the clicks too.
        lo, hi = _ms(start), _ms(end)
        for added in ({tp: (w[0], ranges[tp][0] - 1) for tp, w in wide.items()},
                      {tp: (ranges[tp][1] + 1, w[1]) for tp, w in wide.items()}):
            for r in _offsets(consumer, {tp: offsets for tp, offsets in added.items() if offsets[0] <= offsets[1]}):
                customers.add(r.key)
                lo, hi = min(lo, r.timestamp), max(hi, r.timestamp + 1)
        window_ms = int(settings.attribution.window_days * 86_400_000)
        grace_ms = int(settings.attribution.grace_s * 1000)
        with bar("clicks") as b:
            clicks = _clicks(_between(consumer, clicks_topic, lo - window_ms, hi + grace_ms), customers, b)

        unknown = {tp.partition: gaps for tp, w in wide.items() if (gaps := worker[tp.partition].unknown(*w))}

        def replay(targets: list[Connection]) -> Summary:
            summary = Summary(clicks=sum(len(c) for c in clicks.values()), unknown=unknown)
            with bar("order items", sum(last - first + 1 for first, last in wide.values())) as b:
                _process(settings, _offsets(consumer, wide), clicks, summary, b, worker,
                         lambda batch: _deliver(batch, settings, targets, summary, worker[batch.partition]))
            return summary

        if dry_run or allow_duplicates or not unknown:
            return replay(connections)
        # Delivered offsets whose cuts are gone: write only if no file would carry a row of them.
        summary = replay([])
        return summary if summary.duplicates() else replay(connections)
    finally:
        if consumer is not None:
            consumer.close()
        for conn in connections:
            conn.close()


def _process(settings: Settings, records, clicks: dict[str, list[tuple[float, str]]], summary: Summary, bar,
             worker: dict[int, Delivered], deliver: Callable[[Batch], None]) -> None:
    a, impact, title = settings.attribution, settings.impact, settings.batch.file_title
    window_s, grace_s = a.window_days * 86400, a.grace_s
    now = datetime.now(timezone.utc)  # impact ignores EventDates that are too old *now*
    batchers: dict[int, PartitionBatcher] = {}

    def sealed(batch: Batch) -> None:
        taken: dict[str, dict[str, int]] = {}
        for e in batch.entries:
            if e.rows:
                taken.setdefault(e.order_id, {}).update(dict.fromkeys(e.lines, e.offset))
        batch.orders.store.update(batch.orders.seal(taken, batch.file_name(title), batch.split, 0.0))
        deliver(batch)

    for r in records:
        summary.items += 1
        bar.update()
        batcher = batchers.get(r.partition)
        if batcher is None:
            orders = PartitionOrders(dict(worker[r.partition].orders), settings.batch.order_wait_s)
            batcher = batchers[r.partition] = PartitionBatcher(r.partition, settings.batch.max_rows,
                                                               worker[r.partition].cuts, orders=orders)
        entry = Entry(r.offset, r.timestamp)
        try:
            items, whole, occurred = parse_record(r.value, r.key, settings.max_event_age_days, now,
                                                  settings.batch.max_rows)
        except InvalidEvent as exc:
            summary.invalid[exc.reason] += 1
        else:
            first = items[0]
            lines = line_identities(items, r.value)
            refusal = batcher.orders.take(first["order_id"], lines, r.offset, 0.0, first.get("items_in_order"), whole)
            history = history_until(clicks.get(first["customer_id"], []), occurred.timestamp() + grace_s,
                                    a.clicks_per_customer, window_s)
            click_id = click_for(first, occurred, history, window_s, grace_s)
            if refusal is not None:
                summary.refused[refusal.reason] += 1
            elif click_id:
                entry.order_id, entry.lines = first["order_id"], lines
                entry.rows = tuple(conversion_row(impact.campaign_id, impact.action_tracker_id, item, occurred,
                                                  click_id, impact.extra_fields) for item in items)
            else:
                summary.unattributed[unattributed_reason(history)] += 1
        for batch in batcher.add(entry, 0.0):
            sealed(batch)
    for batcher in batchers.values():
        batch = batcher.seal_open(float("inf"))  # the range is read whole: no order grows any more
        if batch is not None:
            sealed(batch)


def history_until(clicks: list[tuple[float, str]], until: float, keep: int, window_s: float) -> History:
    """The customer's click history as the worker's table holds it once every click up to
    ``until`` has arrived (``clicks`` sorted, without duplicates). ``remember`` keeps the newest
    ``keep`` inside the window of the newest, so folding the last ``keep`` is the same as
    folding all of them."""
    upto = bisect_right(clicks, (until, "\U0010ffff"))
    recent = clicks[max(0, upto - keep):upto]
    if not recent:
        return []
    at, im_ref = recent[-1]
    return remember(recent[:-1], at, im_ref, keep, window_s)


def _clicks(records, customers: set[bytes], bar) -> dict[str, list[tuple[float, str]]]:
    found: dict[str, set[tuple[float, str]]] = {}
    for r in records:
        bar.update()
        if r.key not in customers:
            continue
        try:
            click = validate_click(r.value, r.key)
        except InvalidEvent:
            continue  # the worker dead-letters it; it never attributes anything
        found.setdefault(click["customer_id"], set()).add((event_time(click).timestamp(), click["im_ref"]))
    return {customer: sorted(c) for customer, c in found.items()}


def _deliver(batch: Batch, settings: Settings, connections: list[Connection], summary: Summary,
             worker: Delivered) -> None:
    rows = batch.rows()
    if not rows:
        return  # as in the worker: no file without rows
    name, data = batch.file_name(settings.batch.file_title), render(rows, settings.impact.csv_header)
    for conn in connections:
        _put(conn, name, data)
    summary.rows += len(rows)
    summary.files.append((name, len(rows), worker.note(batch.first, batch.last)))


def _put(conn: Connection, name: str, data: bytes) -> None:
    policy = RetryPolicy()
    for attempt in range(PUT_ATTEMPTS):
        try:
            conn.put(name, data)
            return
        except Exception as exc:  # the replay can be run again: the same range gives the same files
            if attempt == PUT_ATTEMPTS - 1:
                raise DeliveryFailed(f"connection {conn.name!r} did not take {name} after {PUT_ATTEMPTS} attempts: "
                                  f"{type(exc).__name__}: {exc}") from None
            delay = policy.delay(attempt)
            tqdm.write(f"connection {conn.name!r}: {name} failed ({type(exc).__name__}: {exc}); "
                       f"retry in {delay:.1f}s", file=sys.stderr)
            time.sleep(delay)


def _connections(settings: Settings, output: str | None) -> list[Connection]:
    if output is not None:
        Path(output).mkdir(parents=True, exist_ok=True)
        return [FsspecConnection(FsspecSettings(name="--output", method="fsspec", url=str(output)))]
    return [build_connection(c) for c in settings.pushes("conversions")]


# -- reading Kafka ------------------------------------------------------------------------
def _consumer(k: KafkaSettings) -> KafkaConsumer:
    # No group: a replay must not move the worker's committed offsets or join its group.
    return KafkaConsumer(group_id=None, enable_auto_commit=False, max_poll_records=2000, **client_options(k))


def _delivered(settings: Settings, consumer: KafkaConsumer, tps: list[TopicPartition]) -> dict[int, Delivered]:
    """What the worker delivered from these order-item partitions: its group's committed offsets
    (read, never committed) and the cuts in its changelog, read to the high watermark the fetches
    report, not ListOffsets(latest), which Tansu, the test broker, answers wrongly."""
    if not tps:
        return {}
    admin = KafkaAdminClient(**client_options(settings.kafka))
    try:
        committed = admin.list_group_offsets({settings.app_id: tps})[settings.app_id]
    finally:
        admin.close()
    lists: dict[int, list] = {tp.partition: [] for tp in tps}
    orders: dict[int, dict] = {tp.partition: {} for tp in tps}
    # The worker writes partition p's cut list, under key str(p), to changelog partition p; an
    # order's record to the partition of its customer (a tombstone when the sweep deleted it).
    for r in _changelog(consumer, CUTS_CHANGELOG.format(app_id=settings.app_id), tps):
        if r.value is not None:
            lists[r.partition].append(orjson.loads(r.value))
    for r in _changelog(consumer, ORDERS_CHANGELOG.format(app_id=settings.app_id), tps):
        order_id = r.key.decode()
        if r.value is None:
            orders[r.partition].pop(order_id, None)
        else:
            orders[r.partition][order_id] = orjson.loads(r.value)
    # A cut whose first records left the log cannot be replayed whole: it counts as not recorded.
    log_start = consumer.beginning_offsets(tps)
    return {tp.partition: Delivered(max(committed[tp].offset, 0),
                                    [c for c in merge_cuts(lists[tp.partition]) if c[0] >= log_start[tp]],
                                    orders[tp.partition])
            for tp in tps}


def _changelog(consumer: KafkaConsumer, topic: str, tps: list[TopicPartition]) -> Iterator:
    """The records of a worker's table changelog for the partitions of ``tps`` (none before the
    worker's first write)."""
    logged = consumer.partitions_for_topic(topic) or set()
    changelog = [TopicPartition(topic, tp.partition) for tp in tps if tp.partition in logged]
    return _read(consumer, consumer.beginning_offsets(changelog), lambda tp, record: True) if changelog else iter(())


def _partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise ReplayError(f"topic {topic!r} does not exist")
    return [TopicPartition(topic, p) for p in sorted(parts)]


def _between(consumer: KafkaConsumer, topic: str, start_ms: int, end_ms: int) -> Iterator:
    """Records of every partition from the first with timestamp >= start_ms up to the first with
    timestamp >= end_ms. The broker's ``offsets_for_times`` answer is where reading starts; the
    timestamps are checked again while reading, so a broker whose time index answers too early
    an offset costs time, never correctness."""
    found = consumer.offsets_for_times({tp: start_ms for tp in _partitions(consumer, topic)})
    begun: set[TopicPartition] = set()

    def take(tp: TopicPartition, record) -> bool | None:
        if record.timestamp >= end_ms:
            return None
        if tp not in begun:
            if record.timestamp < start_ms:
                return False
            begun.add(tp)
        return True

    return _read(consumer, {tp: hit.offset for tp, hit in found.items() if hit is not None}, take)


def _offsets(consumer: KafkaConsumer, ranges: dict[TopicPartition, tuple[int, int]]) -> Iterator:
    def take(tp: TopicPartition, record) -> bool | None:
        return None if record.offset > ranges[tp][1] else True

    return _read(consumer, {tp: first for tp, (first, _) in ranges.items()}, take)


def _read(consumer: KafkaConsumer, starts: dict[TopicPartition, int],
          take: Callable[[TopicPartition, object], bool | None]) -> Iterator:
    """Records from ``starts`` on, partition by partition in offset order, while ``take`` says
    True (False: skip it, None: this partition is done); a partition is also done at the end of
    its log as the last fetch saw it."""
    consumer.assign(list(starts))
    for tp, offset in starts.items():
        consumer.seek(tp, offset)
    active = set(starts)
    while active:
        for tp, records in consumer.poll(timeout_ms=1000).items():
            for record in records:
                if tp not in active:
                    break
                verdict = take(tp, record)
                if verdict is None:
                    active.discard(tp)
                    consumer.pause(tp)
                elif verdict:
                    yield record
        for tp in list(active):
            high = consumer.highwater(tp)
            if high is not None and consumer.position(tp) >= high:
                active.discard(tp)
                consumer.pause(tp)
    consumer.assign([])


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _bars(enabled: bool | None):
    # disable=None: a bar on a terminal, none in a log file.
    def bar(desc: str, total: int | None = None):
        return tqdm(desc=desc, total=total, unit=" rec", file=sys.stderr, disable=None if enabled is None else not enabled,
                    leave=True, dynamic_ncols=True)
    return bar


def run(config: str, start: str, end: str, output: str | None, allow_duplicates: bool = False,
        dry_run: bool = False) -> int:
    """The ``replay`` command: 0 done, 1 a file could not be delivered, 2 bad config or arguments,
    3 refused: a file would report rows the worker delivered (a dry run answers as the replay would)."""
    from kafka.errors import KafkaError

    from ..config import ConfigError, load_settings

    try:
        settings = load_settings(config)
        summary = run_replay(settings, parse_time(start), parse_time(end), output, allow_duplicates=allow_duplicates,
                             dry_run=dry_run)
    except (DeliveryFailed, KafkaError) as exc:
        print(f"imref-stream replay: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, ReplayError) as exc:
        print(f"imref-stream replay: {exc}", file=sys.stderr)
        return 2
    duplicates = [] if allow_duplicates else summary.duplicates()
    if dry_run or duplicates:
        print("dry run: nothing written" if dry_run else "refused: nothing written")
    print(summary.report())
    if duplicates:
        gone = [f"  partition {p} offsets {a}-{b}" for p, gaps in sorted(summary.unknown.items()) for a, b in gaps]
        print("imref-stream replay: refused without --allow-duplicates. The worker already delivered", *gone,
              "in files whose cuts are no longer recorded; these files would report those rows to impact again:",
              *(f"  {name}  {rows} rows" for name, rows, _ in duplicates),
              "--allow-duplicates writes them anyway.", sep="\n", file=sys.stderr)
        return 3
    return 0
