"""Table changelog fetches (recovery of active partitions, and standby replicas) applied into the
table's store a fetch at a time.

Faust's ``Recovery`` reads changelogs through its per-event path: each record becomes a message
and an event, goes through the conductor and ``wait_first`` with four tasks, then through a queue
that ``_slurp_changelogs`` reads with ``wait_for(queue.get())`` and an eager debug f-string per
record -- about 120 µs a key, against a store that already writes in batches of 1 000. Cold
recovery of the clicks table ran at ~5 500 keys/s, and with a standby replica each worker replays
the other's changelogs the same way during normal processing.

The commit gate's consumer already sees every fetch as one list per partition, so
``ChangelogFetches.apply`` takes the fetched records of the changelog partitions and applies them
with one ``Table.apply_changelog_batch`` per table per fetch (for a RocksDB store: one WriteBatch
per partition database and one persisted offset per partition), keeping what ``_slurp_changelogs``
keeps exactly as it keeps it, because Faust's ``Recovery`` decides from it when recovery is over
and where the next one starts:

- the active/standby offset of each partition, advanced past a record only once it is applied,
  and records at or below it skipped (Recovery seeks to the last applied offset, so the first
  record of each recovery is one already applied);
- the end of active recovery (``need_recovery``: every active offset at its highwater), with
  Faust's own steps for it: buffers flushed, recovery marked ended, ``signal_recovery_end`` set;
- standbys marked ready once none has anything left;
- the timestamps and processing times its stats and stall warnings read.

What the records become is still Faust's: ``Table.apply_changelog_batch`` with events as its
consumer path would build them -- decoded by the changelog topic's own schema, unless the store is
Faust's RocksDB store, whose batch apply reads only the message's partition, offset and raw bytes
(decoding every value there would cost more than the write), or the table's codecs are Faust's
plain json on orjson with no key or value type to convert to, which the memory store gets decoded
by orjson directly (Faust's message, event and schema cost ~25 µs a record). Faust's buffer of the table, if it
holds anything, is applied first, so that no older record lands after a newer one.

Records are applied only while Faust would deliver them: with the flow active, and for
partitions still active (not paused since the fetch was issued). Where Faust drops the others,
the consumer rewinds them (as it rewinds a fetch that returns while the flow is stopped): the
partition's position then never runs ahead of what its table holds, so a fetch that starts
there cannot skip records, whether or not a seek comes first. A table with its own
``on_changelog_event`` callback stays on Faust's per-event path.
"""
from __future__ import annotations

import logging
from itertools import repeat
from time import monotonic
from typing import Any, Callable

from faust.stores import rocksdb as faust_rocksdb
from faust.utils import json as faust_json
from faust.types import TP
from faust.utils.tracing import finish_span

from .tables import plain_json

log = logging.getLogger(__name__)

Stop = Callable[[str, BaseException], None]


class _Change:
    """A changelog record as Faust's RocksDB batch apply reads it (``event.message.<field>``)."""

    __slots__ = ("tp", "offset", "partition", "key", "value")

    def __init__(self, tp: TP, record: Any):
        self.tp = tp
        self.offset = record.offset
        self.partition = record.partition
        self.key = record.key
        self.value = record.value

    @property
    def message(self) -> "_Change":
        return self


class _Decoded:
    """A changelog record as Faust's memory store's batch apply reads it: ``key`` and ``value``
    decoded, ``message.value`` (None: a tombstone) and ``message.partition``."""

    __slots__ = ("key", "value", "message")

    def __init__(self, key: Any, value: Any, message: Any):
        self.key, self.value, self.message = key, value, message


def _decoders(table) -> tuple[Callable[[bytes], Any], Callable[[bytes], Any]] | None:
    """The changelog topic's key and value decoding as plain functions, where the table's codecs
    are Faust's plain json codec on orjson and its key and value types need no conversion (the
    memory store then gets each record without Faust's message, event and schema per record:
    ~25 µs a record, which a standby replica paid for every write of the other worker); else None."""
    if not (plain_json(table.key_serializer) and plain_json(table.value_serializer)):
        return None
    if table.key_type not in (None, str) or table.value_type is not None:
        return None
    return faust_json.orjson.loads, faust_json.orjson.loads  # what Faust's json codec ends in


def _reads_raw_messages(table) -> bool:
    """Faust's RocksDB store applies ``message.key``/``message.value`` as they are (bytes); any
    other store (the memory store reads the decoded ``event.key``/``event.value``) gets events."""
    apply = getattr(type(table.data), "apply_changelog_batch", None)
    return apply is faust_rocksdb.Store.apply_changelog_batch


class ChangelogFetches:
    """Applies the changelog partitions' records of each fetch, on behalf of Faust's ``Recovery``."""

    def __init__(self, consumer, stop: Stop):
        self.consumer = consumer
        self.app = consumer.app
        self.stop = stop
        self._topics: frozenset[str] | None = None  # Faust registers tables before the first fetch
        self._raw: dict = {}
        self._decoders: dict = {}  # table -> (key, value) decoding, or None: Faust's schema decodes

    def topics(self) -> frozenset[str]:
        if self._topics is None:
            tables = self.app.tables
            if not tables._tables_finalized.is_set():
                return frozenset()  # not yet: a table added later would be missed for good
            self._topics = frozenset(name for name, table in tables._changelogs.items()
                                     if table._on_changelog_event is None)
        return self._topics

    def takes(self, tp: TP) -> bool:
        return tp.topic in self.topics()

    async def apply(self, fetched: dict[TP, list], active: set[TP] | None) -> dict[TP, list]:
        """Apply ``fetched`` (changelog partition -> its records of one fetch, in offset order);
        ``active``: the partitions Faust would still deliver records of (None: all). Returns the
        records left unapplied (their partition paused since the fetch, or no longer recovered),
        for the consumer to fetch again."""
        recovery = self.app.tables.recovery
        now = monotonic()
        parts, actives_applied, unapplied, delivered = {}, 0, {}, False
        for tp, records in fetched.items():
            if active is not None and tp not in active:
                unapplied[tp] = records  # paused since this fetch was issued (Faust drops these)
                continue
            if tp in recovery.active_tps:
                offsets, received = recovery.active_offsets, recovery._active_events_received_at
            elif tp in recovery.standby_tps:
                offsets, received = recovery.standby_offsets, recovery._standby_events_received_at
            else:
                log.warning("changelog records of %s[%d] fetched while it is neither active nor standby: not applied",
                            tp.topic, tp.partition)
                unapplied[tp] = records
                continue
            delivered = True
            seen = offsets.get(tp)
            if seen is not None and records[0].offset <= seen:
                records = [r for r in records if r.offset > seen]
            if not records:
                continue
            received[tp] = now
            if offsets is recovery.active_offsets:
                actives_applied += len(records)
            parts.setdefault(recovery.tp_to_table[tp], []).append((tp, records, offsets))
        for table, table_parts in parts.items():
            try:
                await self._apply(recovery, table, table_parts)
            except Exception as exc:
                # Not applied, offsets not advanced: nothing counts as recovered that is not in the store.
                self.stop(f"applying changelog records to table {table.name}", exc)
                return {}
            for tp, records, offsets in table_parts:
                offsets[tp] = records[-1].offset
        if parts:
            recovery._last_flush_at = done = monotonic()
            if actives_applied:
                self._processing_time(recovery, now, done, actives_applied)
        if delivered:  # Faust checks after each record it is handed, applied or already seen
            self._maybe_end(recovery)
        return unapplied

    async def _apply(self, recovery, table, parts) -> None:
        buffered = recovery.buffers.get(table)
        if buffered:
            table.apply_changelog_batch(buffered)
            buffered.clear()
        raw = self._raw.get(table)
        if raw is None:
            raw = self._raw[table] = _reads_raw_messages(table)
        if raw:
            events = [_Change(tp, r) for tp, records, _ in parts for r in records]
        elif (decoders := self._decoders_of(table)) is not None:
            key, value = decoders
            events = [_Decoded(None if r.key is None else key(r.key), None if r.value is None else value(r.value),
                               _Change(tp, r)) for tp, records, _ in parts for r in records]
        else:
            to_message, decode = self.consumer._to_message, table.changelog_topic.decode
            events = [await decode(to_message(tp, r), propagate=True) for tp, records, _ in parts for r in records]
        table.apply_changelog_batch(events)

    def _decoders_of(self, table):
        if table not in self._decoders:
            self._decoders[table] = _decoders(table)
        return self._decoders[table]

    @staticmethod
    def _processing_time(recovery, began: float, done: float, n: int) -> None:
        """Recovery's estimate of the time left averages the time per record over its last
        samples; a fetch's records share its time."""
        times, keep = recovery._processing_times, recovery.num_samples_required_for_estimate
        times.extend(repeat((done - began) / n, min(n, keep + 1)))
        while len(times) > keep:
            times.popleft()

    @staticmethod
    def _maybe_end(recovery) -> None:
        """What ``_slurp_changelogs`` does after each record it applies."""
        if recovery.in_recovery and not recovery.need_recovery():
            recovery.flush_buffers()
            recovery._set_recovery_ended()
            if recovery._actives_span is not None:
                recovery._actives_span.set_tag("Actives-Ready", True)
            log.debug("Setting recovery end")
            recovery.signal_recovery_end.set()
        try:
            standby_ready = recovery._standbys_span is None and recovery.tables.standbys_ready
            if not standby_ready and not recovery.standby_remaining_total():
                if recovery._standbys_span:
                    finish_span(recovery._standbys_span)
                    recovery._standbys_span = None
                recovery.tables.on_standbys_ready()
        except TypeError:
            # A standby offset still None (not read yet): Faust's loop fails the same comparison
            # and goes on; the next fetch asks again.
            pass
