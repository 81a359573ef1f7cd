"""ChangelogFetches against Faust's own Recovery and memory store (no broker): what it applies,
what it skips, and the recovery state it leaves as ``_slurp_changelogs`` would."""
import asyncio
from types import SimpleNamespace

import faust
from aiokafka.structs import ConsumerRecord
from faust.serializers import codecs
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.runtime.changelog import ChangelogFetches

DUMPS = codecs.get_codec("json").dumps


def record(tp: TP, offset: int, key: str, value) -> ConsumerRecord:
    v = None if value is None else DUMPS(value)
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, DUMPS(key), v, None, 0, 0, ())


def scenario():
    app = faust.App("unit-changelog", store="memory://", autodiscover=False)
    table = app.Table("t", key_type=str, partitions=2)
    app.tables._tables_finalized.set()
    active, standby = (TP(table.changelog_topic.get_topic_name(), p) for p in (0, 1))
    recovery = app.tables.recovery
    recovery.add_active(table, active)
    recovery.add_standby(table, standby)
    recovery.active_offsets[active] = recovery.standby_offsets[standby] = -1
    recovery.active_highwaters[active], recovery.standby_highwaters[standby] = 2, 0
    recovery.in_recovery = True
    consumer = SimpleNamespace(app=app)
    consumer._to_message = faust_aiokafka.Consumer._to_message.__get__(consumer)
    stops = []
    return app, table, active, standby, recovery, ChangelogFetches(consumer, lambda what, exc: stops.append(what)), stops


def test_records_are_applied_and_recovery_ends_at_the_highwater_as_faust_decides():
    async def run():
        app, table, active, standby, recovery, fetches, stops = scenario()
        both = {active, standby}
        left = await fetches.apply({active: [record(active, 0, "k1", [1]), record(active, 1, "k2", [2])],
                                    standby: [record(standby, 0, "k3", [3])]}, both)
        assert left == {} and stops == []
        assert dict(table.data.data) == {"k1": [1], "k2": [2], "k3": [3]}
        assert table.data._key_partition == {"k1": 0, "k2": 0, "k3": 1}
        assert (recovery.active_offsets[active], recovery.standby_offsets[standby]) == (1, 0)
        assert recovery.in_recovery and not recovery.signal_recovery_end.is_set()  # offset 2 still to come
        assert app.tables.standbys_ready  # the standby is at its highwater

        # The next recovery reads again from the last offset applied: that record is skipped
        # (here with another value, to see it), the rest applied, a tombstone deletes.
        left = await fetches.apply({active: [record(active, 1, "k2", ["re-read"]), record(active, 2, "k1", None)]},
                                   both)
        assert left == {}
        assert dict(table.data.data) == {"k2": [2], "k3": [3]}
        assert recovery.active_offsets[active] == 2
        assert not recovery.in_recovery and recovery.signal_recovery_end.is_set()
    asyncio.run(run())


def test_a_partition_paused_since_its_fetch_is_handed_back_unapplied():
    async def run():
        app, table, active, standby, recovery, fetches, stops = scenario()
        fetched = {active: [record(active, 0, "k1", [1])], standby: [record(standby, 0, "k3", [3])]}
        left = await fetches.apply(fetched, {standby})
        assert left == {active: fetched[active]}
        assert dict(table.data.data) == {"k3": [3]}
        assert recovery.active_offsets[active] == -1
    asyncio.run(run())


def test_a_failed_apply_stops_the_worker_and_advances_no_offset():
    async def run():
        app, table, active, standby, recovery, fetches, stops = scenario()
        bad = ConsumerRecord(active.topic, 0, 0, 0, 0, b"\xff not json", DUMPS([1]), None, 0, 0, ())
        assert await fetches.apply({active: [bad]}, {active}) == {}
        assert stops == [f"applying changelog records to table {table.name}"]
        assert recovery.active_offsets[active] == -1 and dict(table.data.data) == {}
    asyncio.run(run())
