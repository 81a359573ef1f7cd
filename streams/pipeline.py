"""The join and batching logic: validate, attribute, wait, cut, deliver.

The commit gate hands it one fetch of a partition at a time (``on_clicks``, ``on_items``); the
work per record is synchronous (no ``await`` per record, metrics counted per fetch), and the
delivery lanes take the sealed batches away.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime, timezone
from time import monotonic
from typing import Any

from schemas.validation import InvalidEvent, check_event_age, event_time, validate_click, validate_order_item

from .attribution import attribute, remember
from .batching import Batch, Entry, PartitionBatcher, resolve
from .commitgate import Ledger
from .config import Settings
from .csvfile import conversion_row, render
from .delivery import Job, PartitionLanes, RetryPolicy

log = logging.getLogger(__name__)

NO_CLICK = "no_click"
CLICK_OUTSIDE_WINDOW = "click_outside_window"


def origin_headers(record: Any, reason: str, detail: str = "") -> list[tuple[str, bytes]]:
    """Where a side-output record came from; ``record`` is a fetched record or a Faust message."""
    return [
        ("imref.reason", reason.encode()),
        ("imref.detail", detail.encode()),
        ("imref.source.topic", record.topic.encode()),
        ("imref.source.partition", str(record.partition).encode()),
        ("imref.source.offset", str(record.offset).encode()),
    ]


async def confirmed(sent) -> None:
    """Wait for a Faust send without owning it: a revoke cancels the waiting task, and a send
    future cancelled with it makes Faust's own completion fail (``InvalidStateError``)."""
    await asyncio.shield(sent)


def parse_item(raw: bytes, key: bytes | None, max_age_days: int, now: datetime | None = None) -> tuple[dict, datetime]:
    """A valid order item and its event time, or ``InvalidEvent`` with the dead-letter reason;
    shared with ``streams.replay`` so a backfill rejects exactly what the worker rejects."""
    item = validate_order_item(raw, key)
    occurred = event_time(item)
    check_event_age(occurred, now or datetime.now(timezone.utc), max_age_days)
    return item, occurred


class Pipeline:
    def __init__(self, settings: Settings, *, ledger: Ledger, clicks_table, cuts_table, dead_letter, unattributed,
                 connections, metrics=None):
        self.s = settings
        self.ledger = ledger
        self.clicks = clicks_table
        self.cuts = cuts_table
        self.dead_letter = dead_letter
        self.unattributed = unattributed
        self.connections = connections
        self.metrics = metrics
        self.window_s = settings.attribution.window_days * 86400
        self.grace_s = settings.attribution.grace_s
        self._batchers: dict[int, PartitionBatcher] = {}
        self._lanes: dict[int, PartitionLanes] = {}
        self._waiting: dict[tuple[int, str], list] = {}
        self._deadlines: deque = deque()
        self._retry = RetryPolicy()
        self._counts: dict[tuple[str, str | None], int] = {}
        self._stopping = False
        self._items_in = self._joined = 0  # the per-item counts, kept apart: the cheapest increment
        impact = settings.impact
        self._row_fields = (impact.campaign_id, impact.action_tracker_id)
        self._extra_fields, self._max_age_days = impact.extra_fields, impact.max_event_age_days
        self.header = settings.impact.csv_header
        # Awaited with each delivered batch before its records are acked (streams.modifications).
        self.delivered_hooks: list = []

    # -- clicks ---------------------------------------------------------------------------
    async def on_clicks(self, tp, records, epoch: int) -> None:
        """One fetch of a clicks partition: the newest history per customer into the table, the
        items waiting for those customers attributed. Counted as processed (committable) once
        done; the changelog writes are flushed by the commit before the offsets."""
        histories, dead, part, first, last, taken = {}, [], None, -1, -1, 0
        keep, window_s, partition = self.s.attribution.clicks_per_customer, self.window_s, tp.partition
        for record in records:
            source = self.ledger.admit(tp, record.offset, epoch)
            if source is None:
                continue
            part, last = source, record.offset
            first = last if first < 0 else first
            try:
                click = validate_click(record.value, record.key)
            except InvalidEvent as exc:
                dead.append(self._send_soon(self.dead_letter, record, exc.reason, exc.detail))
                self._count("dead_letter", exc.reason)
                continue
            taken += 1
            key = click["customer_id"]
            history = histories[key] = remember(histories.get(key) or self.clicks.get(key),
                                                event_time(click).timestamp(), click["im_ref"], keep, window_s)
            for waiting in self._waiting.pop((partition, key), ()):
                if waiting[0].pending and not self._try_attribute(waiting, history):
                    self._waiting.setdefault((partition, key), []).append(waiting)
        if part is None:
            return
        self.clicks.put(partition, histories)
        self._count("clicks_in", n=taken)
        self._publish_counts()
        for fut in dead:  # confirmed before the offsets are: a dead letter is never lost
            await confirmed(fut)
        self.ledger.delivered(part, first, last)

    # -- order items ----------------------------------------------------------------------
    async def on_items(self, tp, records, epoch: int) -> None:
        """One fetch of an order-items partition, in offset order."""
        sealed, now, clock = [], datetime.now(timezone.utc), monotonic()
        for record in records:
            sealed += self._item(tp, record, epoch, now, clock)
        self._publish_counts()
        if sealed:
            await self.submit(sealed)

    def _item(self, tp, record, epoch: int, now: datetime, clock: float) -> list[Batch]:
        batcher = self._admit(tp, record.offset, epoch)
        if batcher is None:
            return []
        entry = Entry(record.offset, record.timestamp)
        if batcher.was_delivered(record.offset):
            return batcher.add(entry, clock)
        self._items_in += 1
        try:
            item, occurred = parse_item(record.value, record.key, self._max_age_days, now)
        except InvalidEvent as exc:
            entry.confirm = self._send_soon(self.dead_letter, record, exc.reason, exc.detail)
            self._count("dead_letter", exc.reason)
        else:
            entry.order_id = item["order_id"]
            waiting = (entry, item, occurred, record)
            click_id = item.get("im_ref")
            if click_id:
                entry.row = self._row(item, occurred, click_id)
            elif not self._try_attribute(waiting, self.clicks.get(item["customer_id"])):
                entry.pending = True
                self._waiting.setdefault((tp.partition, item["customer_id"]), []).append(waiting)
                self._deadlines.append((clock + self.grace_s, tp.partition, item["customer_id"], waiting))
        return batcher.add(entry, clock)

    def _row(self, item: dict, occurred: datetime, click_id: str):
        self._joined += 1
        return conversion_row(*self._row_fields, item, occurred, click_id, self._extra_fields)

    def _try_attribute(self, waiting, history) -> bool:
        entry, item, occurred, _ = waiting
        click_id = attribute(history, occurred.timestamp(), self.window_s, self.grace_s)
        if click_id is None:
            return False
        row = self._row(item, occurred, click_id)
        if entry.pending:
            self._resolved(resolve(entry, row))
        else:
            entry.row = row
        return True

    def expire_waiting(self, now: float) -> None:
        """Items whose grace ran out go to the unattributed topic, never into a file."""
        while self._deadlines and self._deadlines[0][0] <= now:
            _, partition, key, waiting = self._deadlines.popleft()
            entry, _, _, record = waiting
            if not entry.pending or entry.batch is None:
                continue
            reason = CLICK_OUTSIDE_WINDOW if self.clicks.get(key) else NO_CLICK
            fut = self._send_soon(self.unattributed, record, reason, f"no click within {self.grace_s:g}s grace")
            self._count("unattributed", reason)
            queue = self._waiting.get((partition, key), [])
            if waiting in queue:
                queue.remove(waiting)
            if not queue:
                self._waiting.pop((partition, key), None)
            self._resolved(resolve(entry, None, fut))

    # -- batches --------------------------------------------------------------------------
    def _admit(self, tp, offset: int, epoch: int) -> PartitionBatcher | None:
        """The batcher for the record's partition, or None when the commit gate drops the record
        (fetched before the partition's last seek, or held or delivered already)."""
        source = self.ledger.admit(tp, offset, epoch)
        if source is None:
            return None
        partition = tp.partition
        batcher = self._batchers.get(partition)
        if batcher is None or batcher.source is not source:
            recorded = [tuple(c) for c in self.cuts.get(str(partition)) or () if c[1] >= offset]
            batcher = self._batchers[partition] = PartitionBatcher(partition, self.s.batch.max_rows, recorded, source)
            if recorded:
                log.info("partition %d: replaying %d recorded cut(s) from offset %d", partition, len(recorded), offset)
        return batcher

    async def submit(self, batches: list[Batch]) -> None:
        for batch in batches:
            if batch.delivered:
                await self._ack(batch)
                continue
            fut = self._record_cut(batch)
            batch.resolved_event = asyncio.Event()
            if batch.resolved:
                batch.resolved_event.set()
            job = Job(batch.file_name(self.s.batch.file_title), prepare=None,
                      on_delivered=lambda b=batch: self._ack(b))
            job.prepare = lambda b=batch, f=fut, j=job: self._prepare(b, f, j)
            lane = self._lane(batch.partition, batch.source.tp)
            lane.submit(job)
            if lane.full and not self._stopping:
                # Stop fetching this partition until a batch leaves (never wait here: the held
                # batches may be waiting for clicks the same fetch loop brings).
                self.ledger.pause(batch.source.tp)

    async def tick(self) -> None:
        now = monotonic()
        self.expire_waiting(now)
        self._publish_counts()
        settings = self.s.batch
        for partition, batcher in list(self._batchers.items()):
            lane = self._lanes.get(partition)
            if lane is not None and lane.full:
                # Not fetched while its lanes are full (the rest of an order may be waiting in the
                # log): its quiet counts from the last tick of the pause.
                batcher.quiet_since = now
            batch = (batcher.seal_if_older(now, settings.max_age_s)
                     or batcher.seal_if_full(now, settings.order_settle_s))
            if batch is not None:
                await self.submit([batch])

    async def drain(self, timeout: float) -> None:
        """Graceful stop: seal what is open, deliver what can be delivered within the bound."""
        self._stopping = True  # fetching stays paused
        for batcher in list(self._batchers.values()):
            batch = batcher.seal_open()
            if batch is not None:
                await self.submit([batch])
        try:
            await asyncio.wait_for(asyncio.gather(*(lane.wait_idle() for lane in self._lanes.values())), timeout)
        except asyncio.TimeoutError:
            log.warning("stop bound of %.0fs reached; undelivered batches will be re-read after restart", timeout)

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked: their un-acked records go to the new owner, which re-forms them."""
        for p in partitions:
            self._batchers.pop(p, None)
            lane = self._lanes.pop(p, None)
            if lane:
                lane.cancel()
        self._waiting = {k: v for k, v in self._waiting.items() if k[0] not in partitions}
        self._deadlines = deque(d for d in self._deadlines if d[1] not in partitions)

    def _lane(self, partition: int, tp) -> PartitionLanes:
        lane = self._lanes.get(partition)
        if lane is None:
            lane = self._lanes[partition] = PartitionLanes(partition, self.connections, self._retry,
                                                           metrics=self.metrics)
            lane.on_change = lambda: self._maybe_resume(lane, tp)
        return lane

    def _maybe_resume(self, lane: PartitionLanes, tp) -> None:
        if not lane.full and not self._stopping and self._lanes.get(tp.partition) is lane:
            self.ledger.resume(tp)

    def _record_cut(self, batch: Batch):
        """Written, and confirmed in ``_prepare``, before any upload: a restart replays the cut."""
        committed, cut = batch.source.committed, [batch.first, batch.last]
        key = str(batch.partition)
        # A replayed cut is recorded already: appended again, the list would grow with every
        # re-read of the partition (a rebalance before the next commit).
        cuts = [c for c in self.cuts.get(key) or () if c[1] >= committed and list(c) != cut]
        cuts.append(cut)
        self.cuts.data[key] = cuts
        return self.cuts.send_changelog(batch.partition, key, cuts)

    async def _prepare(self, batch: Batch, cut_recorded, job: Job) -> bytes | None:
        await confirmed(cut_recorded)
        await batch.resolved_event.wait()
        for entry in batch.entries:
            if entry.confirm is not None:
                await confirmed(entry.confirm)
        rows = batch.rows()
        job.rows = len(rows)
        return render(rows, self.header) if rows else None

    async def _ack(self, batch: Batch) -> None:
        rows = sum(e.row is not None for e in batch.entries)
        for hook in self.delivered_hooks:
            await hook(batch)
        if self.ledger.delivered(batch.source, batch.first, batch.last):
            log.info("partition %d offsets %d-%d %s: %d rows", batch.partition, batch.first, batch.last,
                     "were delivered before the restart" if batch.delivered else "delivered", rows)
        else:
            log.info("partition %d offsets %d-%d delivered after the partition was revoked: %d rows; "
                     "not committed here, the next owner reads them again", batch.partition, batch.first,
                     batch.last, rows)

    def _resolved(self, batch: Batch | None) -> None:
        if batch is not None and batch.resolved_event is not None:
            batch.resolved_event.set()

    # -- side outputs ---------------------------------------------------------------------
    def _send_soon(self, topic, record, reason: str, detail: str):
        """``record``: a fetched record or a Faust message (same fields)."""
        return topic.send_soon(key=record.key, value=record.value, headers=origin_headers(record, reason, detail))

    def _count(self, what: str, label: str | None = None, n: int = 1) -> None:
        """Counted here, published per fetch (``_publish_counts``): a Prometheus update per item
        cost as much as the item's validation."""
        key = (what, label)
        self._counts[key] = self._counts.get(key, 0) + n

    def _publish_counts(self) -> None:
        self._count("items_in", n=self._items_in)
        self._count("joined", n=self._joined)
        self._items_in = self._joined = 0
        if self.metrics is not None:
            for (what, label), n in self._counts.items():
                self.metrics.inc(what, label, n)
        self._counts.clear()
