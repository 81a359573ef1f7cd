"""The commit gate: which offsets of the order topics may be committed, owned by us, not Faust.

Records of a gated topic (order items, order changes) are acked only once the file holding them
is confirmed by every connection. Faust's own bookkeeping cannot carry that guarantee: it marks
offsets it never handed out as acked (gaps, events in flight when an agent stops), it drops
records below a read offset that a stale fetch can move past a seek, and an ack arriving after a
revoke lands in bookkeeping the revoke had just cleared. So for these topics:

- ``Ledger`` admits records strictly in offset order from the committed offset the partition was
  assigned at, and commits only up to the end of what was delivered contiguously. A record past
  the next expected offset is never taken: the partition is sought back, and the jump is only
  accepted when the re-read from that offset starts at the same record (the offsets between do
  not exist: transaction markers, retention). Delivery reported against an earlier assignment
  (the partition was revoked meanwhile) is ignored: the next owner re-reads those records.
- ``GatedConsumer`` is the one adapter to Faust: it hands the ledger the assignments, revokes,
  seeks and commits, and turns the ledger into the offsets Faust commits.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Callable

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger(__name__)


@dataclass(eq=False)
class PartitionLedger:
    """One gated partition from its assignment to this worker until its revocation."""

    tp: TP
    resumed_from: int  # the committed offset (or the log start) at assignment
    next: int = -1  # the next offset to admit
    delivered_to: int = -1  # every offset below it is delivered, or was before the assignment
    committed: int = -1  # the last offset the broker confirmed as committed
    revoked: bool = False
    probe: int | None = None  # offset past ``next`` that made us seek back to ``next``
    probe_armed: bool = False  # the seek for the probe took effect
    skipped: dict[int, int] = field(default_factory=dict)  # accepted jumps: from -> to

    def __post_init__(self) -> None:
        self.next = self.delivered_to = self.committed = self.resumed_from

    def delivered(self, first: int, last: int) -> bool:
        """A batch ``first..last`` of this partition is confirmed; False if nothing advanced
        (revoked meanwhile, or not contiguous with what was delivered before)."""
        if self.revoked:
            return False
        while self.delivered_to in self.skipped:
            self.delivered_to = self.skipped.pop(self.delivered_to)
        if first > self.delivered_to:
            log.error("%s partition %d: batch %d-%d confirmed before offsets %d-%d; not committed past %d",
                      self.tp.topic, self.tp.partition, first, last, self.delivered_to, first - 1, self.delivered_to)
            return False
        self.delivered_to = max(self.delivered_to, last + 1)
        return True


class Ledger:
    """Per gated partition: what is admitted, what is delivered, what may be committed."""

    def __init__(self, topics: set[str], count: Callable[[str, str], None] = lambda what, topic: None):
        self.topics = set(topics)
        self._count = count
        # Asks the consumer to reposition the partition at ``part.next``, and to call ``armed``
        # once that took effect; set by the consumer.
        self.seek: Callable[[PartitionLedger], None] = lambda part: None
        self._parts: dict[TP, PartitionLedger] = {}
        self._last_delivered: dict[TP, int] = {}  # across assignments, for the resume log line

    def gates(self, tp: TP) -> bool:
        return tp.topic in self.topics

    def assigned(self, tp: TP) -> bool:
        return tp in self._parts

    def assign(self, tp: TP, resume_from: int) -> PartitionLedger:
        part = self._parts[tp] = PartitionLedger(tp, resume_from)
        last = self._last_delivered.get(tp)
        log.info("%s partition %d assigned: resumes from offset %d; last offset this worker delivered: %s",
                 tp.topic, tp.partition, resume_from, "none" if last is None else last)
        return part

    def revoke(self, tps) -> None:
        for tp in tps:
            part = self._parts.pop(tp, None)
            if part is not None:
                part.revoked = True

    def admit(self, tp: TP, offset: int) -> PartitionLedger | None:
        """The partition's ledger if the record at ``offset`` is the next one to process, else None
        (the record is dropped: held or delivered already, stale, or past a jump being checked)."""
        part = self._parts.get(tp)
        if part is None:
            return None  # fetched before a revoke; whoever owns the partition reads it
        if offset < part.next:
            self._count("redelivered", tp.topic)
            return None
        if offset > part.next:
            if part.probe == offset and part.probe_armed:
                self._accept_jump(part, offset)
            else:
                # A record fetched after the last seek took effect restarts the check from it;
                # one fetched before (a seek is pending) proves nothing either way.
                if part.probe is None or part.probe_armed:
                    log.info("%s partition %d: offset %d arrived while %d was expected; reading again from %d",
                             tp.topic, tp.partition, offset, part.next, part.next)
                    part.probe, part.probe_armed = offset, False
                    self.seek(part)
                return None
        part.probe, part.next = None, offset + 1
        return part

    def armed(self, part: PartitionLedger) -> None:
        """The seek to ``part.next`` took effect: the next record fetched starts at ``part.next``."""
        part.probe_armed = True

    def _accept_jump(self, part: PartitionLedger, offset: int) -> None:
        log.warning("%s partition %d: offsets %d-%d are not in the log (read again from %d, it starts at %d)",
                    part.tp.topic, part.tp.partition, part.next, offset - 1, part.next, offset)
        self._count("resume_beyond_committed" if part.next == part.resumed_from else "offset_gap", part.tp.topic)
        part.skipped[part.next] = offset

    def delivered(self, part: PartitionLedger, first: int, last: int) -> bool:
        ok = part.delivered(first, last)
        if ok:
            self._last_delivered[part.tp] = last
        return ok

    def committable(self, tp: TP) -> int | None:
        part = self._parts.get(tp)
        if part is None or part.delivered_to <= part.committed:
            return None
        return part.delivered_to

    def committed(self, tp: TP, offset: int) -> None:
        part = self._parts.get(tp)
        if part is not None:
            part.committed = max(part.committed, offset)

    def partitions(self) -> list[TP]:
        return list(self._parts)

    def get(self, tp: TP) -> PartitionLedger | None:
        return self._parts.get(tp)


class _UngatedReadOffsets(dict):
    """Faust's read offsets, blind for gated topics: Faust's drain loop drops every record below
    a partition's read offset, and a stale fetch can move that past a seek. The ledger filters
    those partitions instead."""

    def __init__(self, topics: set[str]):
        super().__init__()
        self.topics = topics

    def __getitem__(self, tp):
        return None if tp.topic in self.topics else self.get(tp)


# The Faust internals the adapter relies on: checked at start-up so that a Faust upgrade that
# renames one stops the worker instead of silently losing the guarantee.
_FAUST_HOOKS = ("_read_offset", "_acked", "_acked_index", "_committed_offset", "_new_offset",
                "_filter_tps_with_pending_acks", "_commit", "perform_seek", "seek", "earliest_offsets",
                "on_partitions_revoked", "assignment")


class GatedConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with ``app.ledger`` in charge of the gated topics' offsets."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        missing = [name for name in _FAUST_HOOKS if not hasattr(self, name)]
        if missing:
            raise RuntimeError(f"this Faust version lacks {', '.join(missing)}: the commit gate cannot hold")
        self.ledger: Ledger = self.app.ledger
        self.ledger.seek = self._seek_back
        self._read_offset = _UngatedReadOffsets(self.ledger.topics)

    def _seek_back(self, part: PartitionLedger) -> None:
        async def seek() -> None:
            if self.ledger.get(part.tp) is part:
                await self.seek(part.tp, part.next)
                self.ledger.armed(part)

        asyncio.ensure_future(seek())

    async def perform_seek(self) -> None:
        """Faust seeks every partition to its committed offset after a rebalance (and when it
        repositions a stalled fetch). Newly assigned gated partitions start their ledger there."""
        await super().perform_seek()
        fresh = [tp for tp in self.assignment() if self.ledger.gates(tp) and not self.ledger.assigned(tp)]
        if not fresh:
            return
        uncommitted = [tp for tp in fresh if not self._committed_offset.get(tp)]
        start = dict(await self.earliest_offsets(*uncommitted)) if uncommitted else {}
        for tp in fresh:
            offset = self._committed_offset.get(tp) or start.get(tp) or 0
            if tp in start:
                await self.seek(tp, offset)  # explicit: never trust a position from before the revoke
            self.ledger.assign(tp, offset)

    async def on_partitions_revoked(self, revoked) -> None:
        self.ledger.revoke(revoked)
        await super().on_partitions_revoked(revoked)

    def _filter_tps_with_pending_acks(self, topics=None):
        tps = set(super()._filter_tps_with_pending_acks(topics))
        tps.update(tp for tp in self.ledger.partitions()
                   if topics is None or tp in topics or tp.topic in topics)
        return iter(tps)

    def _new_offset(self, tp: TP) -> int | None:
        if not self.ledger.gates(tp):
            return super()._new_offset(tp)
        # Whatever Faust marked as acked for this partition is not evidence of delivery.
        self._acked.pop(tp, None)
        self._acked_index.pop(tp, None)
        return self.ledger.committable(tp)

    async def _commit(self, offsets) -> bool:
        done = await super()._commit(offsets)
        if done:
            for tp, offset in offsets.items():
                if self.ledger.gates(tp):
                    self.ledger.committed(tp, offset)
        return done
