"""``imref-stream replay``: re-process a time range of order items into files, for backfills.

The range is one of Kafka record timestamps: in every order-item partition, from the first
record at or after ``--from`` up to (not including) the first record at or after ``--to``
(``offsets_for_times`` semantics). Clicks are read from ``from - attribution.window_days`` to
``to + attribution.grace_s``, only for the customers of the range. The worker's own pure logic
decides everything: item validation (``parse_item``), click history (``remember``), the
choice of click (``attribute``), the row (``conversion_row``), the cuts (``PartitionBatcher``,
at ``batch.max_rows``, orders kept together) and the file names. Nothing is published to the
dead-letter or unattributed topics and no consumer offset is committed: a replay only reads.

A replay is deterministic: the same range gives the same files. Its cuts are only the row
limit, so where the worker also cut by age its file names differ from the worker's: sending a
range the worker already delivered delivers those rows again (try ``--output DIR`` first).
"""
from __future__ import annotations

import ssl
import sys
import time
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

from kafka import KafkaConsumer, TopicPartition
from tqdm import tqdm

from connectors import Connection, build_connection
from connectors.fsspec_dir import FsspecConnection, FsspecSettings
from schemas.validation import InvalidEvent, event_time, validate_click

from .attribution import History, attribute, remember
from .batching import Batch, Entry, PartitionBatcher
from .config import KafkaSettings, Settings
from .csvfile import conversion_row, render
from .delivery import RetryPolicy
from .pipeline import CLICK_OUTSIDE_WINDOW, NO_CLICK, parse_item

PUT_ATTEMPTS = 5


class ReplayError(Exception):
    """The replay cannot go on; the message says why (never a secret)."""


class DeliveryFailed(ReplayError):
    """A connection did not take a file; running the same replay again is safe."""


@dataclass
class Summary:
    items: int = 0
    rows: int = 0
    files: list[str] = field(default_factory=list)
    unattributed: Counter = field(default_factory=Counter)
    invalid: Counter = field(default_factory=Counter)
    clicks: int = 0

    def report(self) -> str:
        def detail(c: Counter) -> str:
            return f" ({', '.join(f'{k} {v}' for k, v in sorted(c.items()))})" if c else ""
        return "\n".join([
            f"order items read: {self.items}",
            f"rows written:     {self.rows}",
            f"files:            {len(self.files)}",
            f"unattributed:     {sum(self.unattributed.values())}{detail(self.unattributed)}",
            f"invalid:          {sum(self.invalid.values())}{detail(self.invalid)}",
            f"clicks used:      {self.clicks}",
        ])


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ReplayError(f"{text!r} is not an ISO 8601 time, e.g. 2026-11-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise ReplayError(f"{text!r} has no zone; add one, e.g. Z or +01:00")
    return moment


def run_replay(settings: Settings, start: datetime, end: datetime, output: str | None = None,
               progress: bool | None = None) -> Summary:
    if start >= end:
        raise ReplayError("--from must be before --to")
    connections = _connections(settings, output)
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
        window = timedelta(days=settings.attribution.window_days)
        grace = timedelta(seconds=settings.attribution.grace_s)
        summary = Summary()
        with bar("clicks") as b:
            clicks = _clicks(_between(consumer, clicks_topic, _ms(start - window), _ms(end + grace)), customers, b)
        summary.clicks = sum(len(c) for c in clicks.values())
        total = sum(last - first + 1 for first, last in ranges.values())
        with bar("order items", total) as b:
            records = _offsets(consumer, {tp: (first, last) for tp, (first, last) in ranges.items()})
            _process(settings, records, clicks, summary, lambda batch: _deliver(batch, settings, connections, summary), b)
        return summary
    finally:
        if consumer is not None:
            consumer.close()
        for conn in connections:
            conn.close()


def _process(settings: Settings, records, clicks: dict[str, list[tuple[float, str]]], summary: Summary,
             deliver: Callable[[Batch], None], bar) -> None:
    a = settings.attribution
    window_s, grace_s = a.window_days * 86400, a.grace_s
    now = datetime.now(timezone.utc)  # impact ignores EventDates that are too old *now*
    batchers: dict[int, PartitionBatcher] = {}
    for r in records:
        summary.items += 1
        bar.update()
        batcher = batchers.setdefault(r.partition, PartitionBatcher(r.partition, settings.batch.max_rows))
        entry = Entry(r.offset, r.timestamp)
        try:
            item, occurred = parse_item(r.value, r.key, settings.impact.max_event_age_days, now)
        except InvalidEvent as exc:
            summary.invalid[exc.reason] += 1
        else:
            entry.order_id = item["order_id"]
            at = occurred.timestamp()
            history = history_until(clicks.get(item["customer_id"], []), at + grace_s, a.clicks_per_customer, window_s)
            # As in the worker: an im_ref checkout put on the item wins over the click table.
            click_id = item.get("im_ref") or attribute(history, at, window_s, grace_s)
            if click_id:
                entry.row = conversion_row(settings.impact.campaign_id, settings.impact.action_tracker_id,
                                           item, occurred, click_id, settings.impact.extra_fields)
            else:
                summary.unattributed[CLICK_OUTSIDE_WINDOW if history else NO_CLICK] += 1
        for batch in batcher.add(entry, 0.0):
            deliver(batch)
    for batcher in batchers.values():
        batch = batcher.seal_open()
        if batch is not None:
            deliver(batch)


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


def _deliver(batch: Batch, settings: Settings, connections: list[Connection], summary: Summary) -> None:
    rows = batch.rows()
    if not rows:
        return
    name, data = batch.file_name(settings.batch.file_title), render(rows, settings.impact.csv_header)
    for conn in connections:
        _put(conn, name, data)
    summary.rows += len(rows)
    summary.files.append(name)


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
    return [build_connection(c) for c in settings.connections
            if c.direction == "into_impact" and c.data_type == "conversions"]


# -- reading Kafka ------------------------------------------------------------------------
def _consumer(k: KafkaSettings) -> KafkaConsumer:
    # No group: a replay must not move the worker's committed offsets or join its group.
    options = dict(bootstrap_servers=[b.split("://", 1)[-1] for b in k.brokers], group_id=None,
                   enable_auto_commit=False, security_protocol=k.security_protocol, max_poll_records=2000)
    if k.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(cafile=str(k.ca_file) if k.ca_file else None)
    if k.security_protocol.startswith("SASL"):
        options.update(sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.username,
                       sasl_plain_password=k.password.reveal().get_secret_value())
    return KafkaConsumer(**options)


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


def run(config: str, start: str, end: str, output: str | None) -> int:
    """The ``replay`` command: 0 done, 1 a file could not be delivered, 2 bad config or arguments."""
    from kafka.errors import KafkaError

    from .config import ConfigError, load_settings

    try:
        settings = load_settings(config)
        summary = run_replay(settings, parse_time(start), parse_time(end), output)
    except (DeliveryFailed, KafkaError) as exc:
        print(f"imref-stream replay: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, ReplayError) as exc:
        print(f"imref-stream replay: {exc}", file=sys.stderr)
        return 2
    print(summary.report())
    for name in summary.files:
        print(f"  {name}")
    return 0
