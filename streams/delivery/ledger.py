"""The commit gate's ledger: per gated partition, what is admitted, delivered and committable.

Records of a gated topic (order items, clicks, order changes) are acked only once the file holding
them is confirmed by every connection (clicks: once their table writes are done). The ledger owns
that guarantee, independent of the consumer library:

- Every seek of a gated partition starts a new *position epoch*, and every record carries the
  epoch of the position it was fetched from. Only records of the partition's current epoch are
  admitted, strictly in offset order from where the partition was positioned; a record of an
  older epoch is dropped (the seek reads it again). A jump past the next expected offset is
  taken only where the fetch itself jumped (offsets not in the log: transaction markers,
  retention) -- between two records of one fetch, or at the start of a fetch only when a second
  read positioned at the same offset agrees -- counted and logged. Any other jump means records
  were fetched but lost on the way to the pipeline: the partition is read again from the next
  expected offset.
- Commits go only up to the end of what was delivered contiguously. Delivery reported against
  an earlier assignment (the partition was revoked meanwhile) is ignored: the next owner, maybe
  this worker again, re-reads those records from the committed offset.

The one adapter that turns it into a consumer's positions and commits is
``streams.runtime.consumer.GatedConsumer``; a partition ``tp`` is anything with ``topic`` and
``partition`` that can be a dict key.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, Awaitable, Callable, Protocol

log = logging.getLogger(__name__)

TP = Any  # a (topic, partition) named tuple of the consumer library


@dataclass(eq=False)
class PartitionLedger:
    """One gated partition from its assignment to this worker until its revocation."""

    tp: TP
    resumed_from: int  # the committed offset (or the log start) at assignment
    epoch: int  # position epoch of the records to admit
    next: int = -1  # the next offset to admit
    delivered_to: int = -1  # every offset below it is delivered, or was before the assignment
    committed: int = -1  # the last offset the broker confirmed as committed
    revoked: bool = False
    skipped: dict[int, int] = field(default_factory=dict)  # offsets found missing: from -> to
    fetch_gaps: dict[int, int] = field(default_factory=dict)  # jumps the fetch of this epoch showed
    reseeking: bool = False  # a seek back to ``next`` was asked for and has not happened yet
    reseeking_since: float = 0.0  # monotonic, when it was asked for
    # A fetch that started past ``next`` (from, to): trusted only when a read positioned again
    # at ``next`` starts at the same offset (the fetch position can move without us: see
    # GatedConsumer._wait_next_records).
    unconfirmed_jump: tuple[int, int] | None = None

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


class Fetcher(Protocol):
    """What the ledger asks of the consumer that fetches its partitions."""

    def seek_back(self, part: "PartitionLedger") -> None:
        """Position the partition at ``part.next`` again."""

    def pause_fetch(self, tp: TP) -> None:
        """Stop fetching the partition (backpressure from its delivery lanes)."""

    def resume_fetch(self, tp: TP) -> None:
        """Fetch the partition again, if it is still assigned."""


class _NoFetcher:
    def seek_back(self, part) -> None:
        pass

    def pause_fetch(self, tp) -> None:
        pass

    def resume_fetch(self, tp) -> None:
        pass


# A batch handler takes one fetch of a gated partition: (tp, records, position epoch).
Handler = Callable[[TP, list, int], Awaitable[None]]


class Ledger:
    """Per gated partition: what is admitted, what is delivered, what may be committed."""

    def __init__(self, count: Callable[[str, str], None] = lambda what, topic: None):
        self.topics: set[str] = set()
        self.handlers: dict[str, Handler] = {}
        self._count = count
        self._fetcher: Fetcher = _NoFetcher()  # the consumer, once it exists (``attach``)
        self._parts: dict[TP, PartitionLedger] = {}
        self._last_delivered: dict[TP, int] = {}  # across assignments, for the resume log line

    def attach(self, fetcher: Fetcher) -> None:
        """The consumer, created by the runtime after the ledger, takes over fetching."""
        self._fetcher = fetcher

    def pause(self, tp: TP) -> None:
        self._fetcher.pause_fetch(tp)

    def resume(self, tp: TP) -> None:
        self._fetcher.resume_fetch(tp)

    def route(self, topic: str, handler: Handler) -> None:
        """Gate ``topic``: its records go to ``handler`` a fetch at a time, never to Faust's
        agents, and its offsets are committed from this ledger only."""
        self.topics.add(topic)
        self.handlers[topic] = handler

    def gates(self, tp: TP) -> bool:
        return tp.topic in self.topics

    def assign(self, tp: TP, resume_from: int, epoch: int) -> PartitionLedger:
        part = self._parts[tp] = PartitionLedger(tp, resume_from, epoch)
        last = self._last_delivered.get(tp)
        log.info("%s partition %d assigned: resumes from offset %d; last offset this worker delivered: %s",
                 tp.topic, tp.partition, resume_from, "none" if last is None else last)
        return part

    def revoke(self, tps) -> None:
        for tp in tps:
            part = self._parts.pop(tp, None)
            if part is not None:
                part.revoked = True

    def positioned(self, tp: TP, offset: int, epoch: int) -> None:
        """The consumer moved the partition's fetch position to ``offset``: only records fetched
        from there on are admitted."""
        part = self._parts.get(tp)
        if part is None:
            return
        if offset > part.next:
            # Records between would be read by nobody: never move the ledger past them.
            raise RuntimeError(f"{tp} sought to {offset}, past the next record to process ({part.next})")
        part.epoch, part.reseeking = epoch, False
        part.fetch_gaps.clear()

    def fetched_gap(self, tp: TP, epoch: int, first: int, last: int, within_fetch: bool = True) -> None:
        """The fetch of position epoch ``epoch`` went from offset ``first - 1`` straight to ``last``
        (``within_fetch``: between two records of one fetch; else a fetch positioned at ``first``
        started at ``last``): the offsets between are not in the log."""
        part = self._parts.get(tp)
        if part is None or part.epoch != epoch:
            return
        if within_fetch or part.unconfirmed_jump == (first, last):
            part.fetch_gaps[first] = last

    def admit(self, tp: TP, offset: int, epoch: int) -> PartitionLedger | None:
        """The partition's ledger if the record at ``offset``, fetched in position epoch ``epoch``,
        is the next one to process; else None and the record is dropped (fetched before the
        partition's last seek or assignment, held or delivered already, or past records that were
        fetched but never reached us: then the partition is read again from ``next``)."""
        part = self._parts.get(tp)
        if part is None or epoch != part.epoch:
            return None
        if offset < part.next:
            self._count("redelivered", tp.topic)
            return None
        if offset > part.next:
            if part.fetch_gaps.get(part.next) != offset:
                # Fetched, but skipped on the way here (Faust drops events while its flow control
                # is suspended): read them again.
                if not part.reseeking:
                    part.reseeking, part.reseeking_since = True, monotonic()
                    part.unconfirmed_jump = (part.next, offset)
                    log.info("%s partition %d: offset %d arrived while %d was expected; reading again from %d",
                             tp.topic, tp.partition, offset, part.next, part.next)
                    self._fetcher.seek_back(part)
                return None
            log.warning("%s partition %d: offsets %d-%d are not in the log (the read from %d starts at %d)",
                        tp.topic, tp.partition, part.next, offset - 1, part.next, offset)
            self._count("resume_beyond_committed" if part.next == part.resumed_from else "offset_gap", tp.topic)
            part.skipped[part.next] = offset
        part.next = offset + 1
        return part

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

    def stalls(self, now: float, after_s: float) -> list[str]:
        """Partitions whose seek back has not happened for longer than ``after_s``: every record of
        theirs is refused until it does."""
        return [f"{tp.topic} partition {tp.partition}: seek back to offset {p.next} asked for {now - p.reseeking_since:.0f}s ago"
                for tp, p in self._parts.items() if p.reseeking and now - p.reseeking_since > after_s]

    def partitions(self) -> list[TP]:
        return list(self._parts)

    def snapshot(self) -> list[dict]:
        """Where each gated partition of this worker stands, for the status page and benchmarks."""
        return [{"topic": tp.topic, "partition": tp.partition, "resumed_from": p.resumed_from,
                 "delivered_to": p.delivered_to, "committed": p.committed}
                for tp, p in sorted(self._parts.items())]

    def get(self, tp: TP) -> PartitionLedger | None:
        return self._parts.get(tp)
