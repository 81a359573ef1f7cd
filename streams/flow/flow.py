"""One stream's way from admitted records to acked files, per partition: batcher, recorded cut,
delivery lanes, ack in the commit gate's ledger.

Conversions and order changes are two sources on this flow (``streams.flow.conversions``,
``streams.flow.changes``), each with a ``Flow`` of its own: a source admits a record here, fills
its entry (rows, a pending item, or no row) and hands back the batches the batcher sealed.

A file reaches each connection once. The recorded cut of a batch (the ``batch-cuts`` table, written
before any upload) also records, per connection, the digest of the file that connection confirmed,
written right after the confirmation and before the ack. A batch read again (a restart or a
rebalance before the commit) is not sent again where its file was confirmed; a re-formed file that
differs from the confirmed one never replaces it: the delivered file stands, and the difference is
logged and counted.
"""
from __future__ import annotations

import asyncio
import logging
from functools import partial
from time import monotonic
from typing import Any, Awaitable, Callable

from ..core.batching import Batch, PartitionBatcher
from ..core.csvfile import render
from ..core.join import origin_headers
from ..delivery.lanes import Job, PartitionLanes, RetryPolicy
from ..delivery.ledger import Ledger, PartitionLedger

log = logging.getLogger(__name__)


async def confirmed(sent) -> None:
    """Wait for a send without owning it: a revoke cancels the waiting task, and a send future
    cancelled with it makes Faust's own completion fail (``InvalidStateError``)."""
    await asyncio.shield(sent)


class Outputs:
    """A source's side outputs (dead letters, unattributed items, unmatched changes) and counts.
    Counts are published per fetch: a Prometheus update per item cost as much as its validation."""

    def __init__(self, metrics=None):
        self.metrics = metrics
        self._counts: dict[tuple[str, str | None], int] = {}

    @staticmethod
    def send(topic, record, reason: str, detail: str, files: tuple[str, ...] = ()):
        """The record as it was read, with where it came from and why, to ``topic``."""
        return topic.send_soon(key=record.key, value=record.value,
                               headers=origin_headers(record, reason, detail, files))

    def count(self, what: str, label: str | None = None, n: int = 1) -> None:
        key = (what, label)
        self._counts[key] = self._counts.get(key, 0) + n

    def publish(self) -> None:
        if self.metrics is not None:
            for (what, label), n in self._counts.items():
                self.metrics.inc(what, label, n)
        self._counts.clear()


class Flow:
    def __init__(self, batch_settings, *, title: str, header, ledger: Ledger, cuts, connections: list,
                 metrics=None, retry: RetryPolicy | None = None):
        """``batch_settings``: ``Settings.batch`` (``max_rows``, ``max_age_s``, ``order_settle_s``);
        ``title``: the file title; ``cuts``: the table of recorded cuts (``get``, ``put``)."""
        self.batch = batch_settings
        self.title, self.header = title, header
        self.ledger, self.cuts, self.connections, self.metrics = ledger, cuts, connections, metrics
        self.retry = retry or RetryPolicy()
        # A source's per-partition state, created with each partition's batcher (its ``orders``).
        self.new_orders: Callable[[int], Any] | None = None
        # Called as a batch is submitted; the sends they return are confirmed before any upload.
        self.sealed_hooks: list[Callable[[Batch], list]] = []
        # Awaited once every entry of a batch is resolved, before its file is made.
        self.resolved_hooks: list[Callable[[Batch], Awaitable[None]]] = []
        # Awaited with each delivered batch before its records are acked (Changes.record_reported).
        self.delivered_hooks: list[Callable[[Batch], Awaitable[None]]] = []
        self._batchers: dict[int, PartitionBatcher] = {}
        self._lanes: dict[int, PartitionLanes] = {}
        self._stopping = False

    def admit(self, tp, offset: int, epoch: int) -> PartitionBatcher | None:
        """The batcher for the record's partition, or None when the commit gate drops the record
        (fetched before the partition's last seek, or held or delivered already)."""
        source = self.ledger.admit(tp, offset, epoch)
        if source is None:
            return None
        partition = tp.partition
        batcher = self._batchers.get(partition)
        if batcher is None or batcher.source is not source:
            recorded = [(c[0], c[1]) for c in self.cuts.get(str(partition)) or () if c[1] >= offset]
            orders = self.new_orders(partition) if self.new_orders is not None else None
            batcher = self._batchers[partition] = PartitionBatcher(partition, self.batch.max_rows, recorded, source,
                                                                   orders)
            if recorded:
                log.info("partition %d: replaying %d recorded cut(s) from offset %d", partition, len(recorded), offset)
        return batcher

    def open_batch(self, partition: int) -> Batch | None:
        batcher = self._batchers.get(partition)
        return batcher.open if batcher is not None else None

    def held(self) -> int:
        """Batches cut and not yet delivered (queued behind another or waiting for a slot)."""
        return sum(lane.held for lane in self._lanes.values())

    async def submit(self, batches: list[Batch]) -> None:
        for batch in batches:
            if batch.delivered:
                await self.ack(batch)
                continue
            name = batch.file_name(self.title)
            recorded, confirmed_before = self._record_cut(batch)
            written = [recorded] + [sent for hook in self.sealed_hooks for sent in hook(batch)]
            for entry in batch.entries:
                if entry.later is not None:  # a refusal that names the file: sent now that it is named
                    entry.confirm, entry.later = entry.later(), None
            batch.resolved_event = asyncio.Event()
            if batch.resolved:
                batch.resolved_event.set()
            job = Job(name, prepare=partial(self.make_file, batch, written),
                      on_delivered=partial(self.ack, batch), on_confirmed=partial(self.record_confirmation, batch),
                      confirmed=confirmed_before, cut=batch.cut, cut_at=batch.cut_at or monotonic())
            lane = self._lane(batch.partition, batch.source.tp)
            lane.submit(job)
            if lane.full and not self._stopping:
                # Stop fetching this partition until a batch leaves (never wait here: the held
                # batches may be waiting for clicks the same fetch loop brings).
                self.ledger.pause(batch.source.tp)

    async def tick(self, now: float | None = None) -> None:
        """The timer's cuts: a batch too old, or full on a partition quiet for the settle time."""
        now = monotonic() if now is None else now
        for partition, batcher in list(self._batchers.items()):
            lane = self._lanes.get(partition)
            if lane is not None and lane.full:
                # Not fetched while its lanes are full (the rest of an order may be waiting in the
                # log): its quiet counts from the last tick of the pause.
                batcher.quiet_since = now
            batch = (batcher.seal_if_older(now, self.batch.max_age_s, self.batch.order_settle_s)
                     or batcher.seal_if_full(now, self.batch.order_settle_s))
            if batch is not None:
                await self.submit([batch])

    async def drain(self, timeout: float) -> None:
        """Graceful stop: seal what is open, deliver what can be delivered within the bound."""
        self._stopping = True  # fetching stays paused
        for batcher in list(self._batchers.values()):
            batch = batcher.seal_open(monotonic())
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

    @staticmethod
    def resolved(batch: Batch | None) -> None:
        """A pending entry of ``batch`` got its answer (``batching.resolve``)."""
        if batch is not None and batch.resolved_event is not None:
            batch.resolved_event.set()

    def _lane(self, partition: int, tp) -> PartitionLanes:
        lane = self._lanes.get(partition)
        if lane is None:
            lane = self._lanes[partition] = PartitionLanes(partition, self.connections, self.retry,
                                                           metrics=self.metrics)
            lane.on_change = lambda: self._maybe_resume(lane, tp)
        return lane

    def _maybe_resume(self, lane: PartitionLanes, tp) -> None:
        if not lane.full and not self._stopping and self._lanes.get(tp.partition) is lane:
            self.ledger.resume(tp)

    def _record_cut(self, batch: Batch) -> tuple[Any, dict[str, str]]:
        """Written, and confirmed in ``make_file``, before any upload: a restart replays the cut.
        Also returns the connections that confirmed this batch's file before (name -> digest)."""
        committed, key = batch.source.committed, str(batch.partition)
        # A cut is [first, last, {connection: digest of the file it confirmed}]; a replayed cut is
        # recorded already (appended again, the list would grow with every re-read of the
        # partition: a rebalance before the next commit) and keeps what it confirmed.
        before: dict[str, str] = {}
        cuts = []
        for c in self.cuts.get(key) or ():
            if (c[0], c[1]) == (batch.first, batch.last):
                before = dict(c[2]) if len(c) > 2 else {}
            elif c[1] >= committed:
                cuts.append(list(c))
        cuts.append([batch.first, batch.last, before])
        sent, = self.cuts.put(batch.partition, {key: cuts})
        return sent, before

    async def record_confirmation(self, batch: Batch, connection: str, file_digest: str) -> None:
        """``connection`` confirmed the batch's file: recorded with the cut before the ack, so the
        file is never sent to it again."""
        key = str(batch.partition)
        cuts = [list(c) for c in self.cuts.get(key) or ()]
        for c in cuts:
            if (c[0], c[1]) == (batch.first, batch.last):
                c[2:] = [{**(c[2] if len(c) > 2 else {}), connection: file_digest}]
                break
        else:  # pruned by a later cut's record: committed already, never read again
            return
        sent, = self.cuts.put(batch.partition, {key: cuts})
        await confirmed(sent)

    async def make_file(self, batch: Batch, written: list) -> tuple[bytes | None, int]:
        """The file, once its cut and the sealed hooks' records are written, every entry resolved
        (and the resolved hooks run) and every side output sent."""
        for sent in written:
            await confirmed(sent)
        await batch.resolved_event.wait()
        for hook in self.resolved_hooks:
            await hook(batch)
        for entry in batch.entries:
            if entry.confirm is not None:
                await confirmed(entry.confirm)
        rows = batch.rows()
        return (render(rows, self.header) if rows else None), len(rows)

    async def ack(self, batch: Batch) -> None:
        """Every connection confirmed the batch's file (or it was delivered before a restart): its
        records are delivered, committable once everything before them is."""
        rows = sum(len(e.rows) for e in batch.entries if e.rows)
        for hook in self.delivered_hooks:
            await hook(batch)
        source: PartitionLedger = batch.source
        if self.ledger.delivered(source, batch.first, batch.last):
            log.info("partition %d offsets %d-%d %s: %d rows", batch.partition, batch.first, batch.last,
                     "were delivered before the restart" if batch.delivered else "delivered", rows)
        else:
            log.info("partition %d offsets %d-%d delivered after the partition was revoked: %d rows; "
                     "not committed here, the next owner reads them again", batch.partition, batch.first,
                     batch.last, rows)
