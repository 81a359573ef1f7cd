"""The commit gate's adapter to Faust: ``GatedConsumer``, the only code that turns the ledger
(``streams.delivery.ledger``) into Faust's positions and commits.

Faust's own bookkeeping cannot carry the at-least-once guarantee for the gated topics: it marks
offsets it never handed out as acked (gaps, events in flight when an agent stops), it drops
records below a read offset that a stale fetch can move past a seek, it resumes the flow of
records before it seeks a re-assigned partition to its committed offset (so records from the
position of the previous assignment arrive first), it skips events while its flow control is
suspended, and an ack arriving after a revoke lands in bookkeeping the revoke had just cleared.

So ``GatedConsumer`` hands each fetch of a gated partition to the topic's batch handler as one
list (Faust's per-event path -- two asyncio tasks per record in its drain loop, conductor,
channel, stream -- costs more than all of our own work), seeks each newly assigned partition to
its committed offset explicitly, and commits only what the ledger says is delivered. The tables'
changelog partitions are handed over a fetch at a time as well, to ``streams.runtime.changelog``,
which applies them for Faust's recovery. Faust keeps group membership, assignment, tables, the
recovery's decisions, timers and the web server. The private Faust
names it overrides or reads are in the start-up check (``streams.runtime.internals``).
"""
from __future__ import annotations

import asyncio
import logging
from itertools import islice

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from ..delivery.failures import owned
from ..delivery.ledger import Ledger, PartitionLedger
from ..delivery.positions import Positions
from .changelog import ChangelogFetches
from .pacing import PacedConsumerThread
from .supervision import stop_if_coordination_fails

log = logging.getLogger(__name__)

# A fetch of a gated partition goes to its handler this many records at a time, with a turn of
# the event loop between: a backlog's fetch (tens of thousands of records, a second or more of
# work) would otherwise hold every upload, timer and health check until it is handled. A file
# needs a score of turns from its cut to its upload (changelog round trips, the write, the
# rename): cut-to-visible p99 0.25 s at 500, 0.9 s at 1 000, 2.8 s at 2 000, 4.4 s whole.
HANDOVER_RECORDS = 500


class _UngatedReadOffsets(dict):
    """Faust's read offsets, blind for gated topics: Faust's drain loop drops every record below
    a partition's read offset, and a stale fetch can move that past a seek. The ledger filters
    those partitions instead."""

    def __init__(self, topics: set[str]):
        super().__init__()
        self.topics = topics

    def __getitem__(self, tp):
        return None if tp.topic in self.topics else self.get(tp)


class _ConsumerThread(PacedConsumerThread):
    async def on_start(self) -> None:
        await super().on_start()  # the aiokafka consumer, and with it its group coordinator, exist now
        # Looked up at failure time, as below.
        stop_if_coordination_fails(self._consumer._coordinator,
                                   lambda what, exc: self.app.supervisor.stop(what, exc))


class GatedConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with ``app.ledger`` in charge of the gated topics' offsets."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ledger: Ledger = self.app.ledger
        self._read_offset = _UngatedReadOffsets(self.ledger.topics)
        self.ledger.attach(self)
        self.positions = Positions()
        # Looked up at failure time: the app's supervisor may be set after its consumer exists.
        self.changelogs = ChangelogFetches(self, lambda what, exc: self.app.supervisor.stop(what, exc))

    def _new_consumer_thread(self) -> PacedConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # -- positions ---------------------------------------------------------------------------
    async def _reposition(self, offsets: dict[TP, int]) -> None:
        """Seek gated partitions, in the consumer thread (aiokafka is not thread-safe, and its
        fetches run there); a fetch that overlaps the seek is dropped (see _wait_next_records),
        one that follows it carries the new epoch."""
        with self.positions.seeking(offsets):
            await self.seek_wait(offsets)
        for tp, epoch in self.positions.positioned(offsets).items():
            self.ledger.positioned(tp, offsets[tp], epoch)

    # -- the ledger's Fetcher ------------------------------------------------------------------
    def pause_fetch(self, tp: TP) -> None:
        self.pause_partitions([tp])

    def resume_fetch(self, tp: TP) -> None:
        if tp in self.assignment():
            self.resume_partitions([tp])

    def seek_back(self, part: PartitionLedger) -> None:
        async def seek() -> None:
            if self.ledger.get(part.tp) is part:
                await self._reposition({part.tp: part.next})

        # A seek that fails would leave the partition refusing every record: it stops the worker.
        owned(seek(), f"seeking {part.tp.topic} partition {part.tp.partition} back to offset {part.next}",
              self.app.supervisor.stop)

    async def _seek(self, tp: TP, offset: int) -> None:
        if self.ledger.gates(tp):
            await self._reposition({tp: offset})
        else:
            await super()._seek(tp, offset)

    async def seek_to_committed(self):
        """Faust repositions every partition at its committed offset. A gated partition already
        in the ledger goes on from what it admitted instead: everything below is held or
        delivered, and the fetch must start exactly there."""
        gated = [tp for tp in self.assignment() if self.ledger.gates(tp)]
        with self.positions.seeking(gated):  # where Faust's seek puts the fetch is not known here
            committed = await super().seek_to_committed()
        known = {tp: self.ledger.get(tp).next for tp in gated if self.ledger.get(tp) is not None}
        if known:
            await self._reposition(known)
        return committed

    async def _wait_next_records(self, timeout):
        """Faust's fetch step: records of gated topics go to their batch handlers here, the rest
        on to Faust's per-event path."""
        ticket = self.positions.before_fetch()
        records, active = await super()._wait_next_records(timeout)
        if not records:
            return records, active
        kept, overlapped, batches, changelogs = {}, {}, [], {}
        flowing = self.flow_active
        for tp, batch in records.items():
            if not self.ledger.gates(tp):
                if flowing and self.changelogs.takes(tp):
                    changelogs[tp] = batch
                else:
                    kept[tp] = batch
            elif self.positions.overlapped(ticket, tp):
                part = self.ledger.get(tp)
                self.positions.dropped(tp, owned=part is not None)
                if part is not None:
                    overlapped[tp] = part.next
            else:
                batches.append(self.positions.fetched(tp, batch, self.ledger.fetched_gap))
        if changelogs:
            unapplied = await self.changelogs.apply(changelogs, active)
            if unapplied:
                # Their position moved past records no table has: whoever resumes them without a
                # seek (or a fetch in flight across the next seek) would start after a hole.
                await self._thread.call_thread(self._rewind, self._thread._consumer,
                                               {tp: (b[0].offset, b[-1].offset + 1) for tp, b in unapplied.items()})
        if overlapped:
            await self._reposition(overlapped)
        for fetched in batches:
            # Read at hand-over, not at fetch: an earlier handler may have awaited across a seek
            # (``Fetched`` ends at a seek of its partition).
            records, handler = iter(fetched), self.ledger.handlers[fetched.tp.topic]
            while chunk := list(islice(records, HANDOVER_RECORDS)):
                await handler(fetched.tp, chunk, fetched.epoch)
                if len(chunk) == HANDOVER_RECORDS:
                    await asyncio.sleep(0)  # uploads, timers and the web server get a turn
        if kept and not self.flow_active:
            # Faust drops a fetch that returns while its flow is stopped and seeks back to the
            # committed offsets, which changelog partitions have none of: a recovery that sought
            # them just before it resumed the flow would wait for the dropped records for ever.
            rewound = await self._thread.call_thread(self._rewind, self._thread._consumer,
                                                     {tp: (b[0].offset, b[-1].offset + 1) for tp, b in kept.items()})
            if rewound:
                log.info("a fetch came back while the flow was stopped: %s read again from %s",
                         ", ".join(f"{tp.topic}[{tp.partition}]" for tp in rewound),
                         ", ".join(str(offset) for offset in rewound.values()))
            return {}, active
        return kept, active

    @staticmethod
    async def _rewind(consumer, fetched: dict) -> dict:
        """In the consumer thread (so that no seek comes in between): each partition whose
        position is still where ``fetched`` left it goes back to the fetch's first offset; one
        sought since keeps the newer position."""
        subscription, rewound = consumer._subscription.subscription, {}
        for tp, (first, after) in fetched.items():
            state = subscription.assignment.state_value(tp) if subscription is not None else None
            if state is not None and state.has_valid_position and state.position == after:
                consumer.seek(tp, first)
                rewound[tp] = first
        return rewound

    async def perform_seek(self) -> None:
        """Faust seeks every partition to its committed offset after a rebalance (and when it
        repositions a stalled fetch). A newly assigned gated partition gets a ledger, positioned
        explicitly at its committed offset (the log start if it has none)."""
        assignment = self.positions.assignment()
        await super().perform_seek()
        if not self.positions.current(assignment):
            return  # Faust's recovery seeks again for the current assignment, and that seek positions them
        fresh = [tp for tp in self.assignment() if self.ledger.gates(tp) and self.ledger.get(tp) is None]
        if not fresh:
            return
        uncommitted = [tp for tp in fresh if not self._committed_offset.get(tp)]
        start = dict(await self.earliest_offsets(*uncommitted)) if uncommitted else {}
        offsets = {tp: self._committed_offset.get(tp) or start.get(tp) or 0 for tp in fresh}
        self.positions.take_stale(fresh)
        await self._reposition(offsets)
        # A fetch that was in flight across the seek may have been handed out (moving the
        # position past the committed offset) and dropped meanwhile, with no ledger to seek back.
        while stale := self.positions.take_stale(offsets):
            await self._reposition({tp: offsets[tp] for tp in stale})
        for tp, offset in offsets.items():
            self.ledger.assign(tp, offset, self.positions.epoch(tp))

    async def on_partitions_revoked(self, revoked) -> None:
        # What is delivered is committed before the partitions go, or the next owner (maybe this
        # worker, seconds later) reads it all again: under repeated rebalances nothing would ever
        # be committed. A group already past this generation refuses it (Faust returns False).
        await self.commit()
        self.positions.revoked()
        self.ledger.revoke(revoked)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned, generation_id: int = 0) -> None:
        self.positions.assigned()
        await super().on_partitions_assigned(assigned, generation_id)

    def open_broker_connections(self) -> int:
        """Connections of this consumer's Kafka client that are up, for the readiness check: 0
        before the client exists (the client is aiokafka's, inside Faust's consumer thread)."""
        consumer = self._thread._consumer  # None until the consumer thread has started
        if consumer is None:
            return 0
        return sum(conn.connected() for conn in consumer._client._conns.values())

    # -- commits -----------------------------------------------------------------------------
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
