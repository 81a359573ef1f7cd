"""Test-only hooks for the worker subprocesses the tests start; never part of the product.

Loaded by ``sitecustomize`` when ``IMREF_TEST_HOOKS`` is set:

- ``SIGHUP`` (mode's worker owns USR1 and USR2): the worker's consumer asks its group to rebalance, the code path a member
  joining or leaving takes. Faust rebalances eagerly, so a lone worker revokes all its
  partitions and gets them back: "the same worker loses and regains its partitions".
- ``IMREF_TEST_HOLD=<dir>``: while ``<dir>/hold`` exists (each hold a new token in it), the first
  upload that reaches the fault point ``mid_upload`` (fsspec: the temporary file written, not yet renamed) marks itself as
  ``<dir>/held-<n>`` and waits in its upload thread; the event loop, heartbeats included, goes on.
  The consumer marks ``<dir>/revoking-<n>`` as it begins to revoke partitions (its revoke may wait
  for the producer), ``<dir>/revoked-<n>`` once it has revoked them and ``<dir>/regained-<n>``
  when the commit gate has positioned every gated partition of the next assignment: the
  rebalance is over (a seek alone is not: Faust also seeks while it revokes, and a delayed seek
  of the previous assignment can end after the revoke). A rebalance requested before that point
  is lost: aiokafka replaces its rejoin request when the join in flight completes.
- ``IMREF_TEST_FAIL_SEEK_BACK=<topic>``: the first fetch of ``topic`` with two records or more
  reaches the pipeline without its first record (as when Faust drops events), so the commit gate
  asks for a seek back, and that seek fails.
- ``IMREF_TEST_SMALL_FETCHES=<bytes>,<records>,<seconds>``: a fetch brings at most ``bytes`` of a
  partition (at least one record batch), the consumer hands over at most ``records`` a turn
  (Faust's ``consumer_max_fetch_size``, ``broker_max_poll_records``), and each turn's clicks wait
  ``seconds`` before the pipeline takes them (a slower clicks path): a small backlog of clicks
  takes as long as a large one, the event loop's timers running meanwhile.
- ``IMREF_TEST_FAUST_RECOVERY=1``: changelog records take Faust's own per-event recovery path
  instead of ``streams.runtime.changelog`` (the reference a table recovered a fetch at a time is
  compared with).
- ``IMREF_TEST_DUMP_TABLES=<file>``: once each recovery is complete (Faust's "Worker ready"), every
  table's contents (partition -> key -> value, read from its store), the persisted offsets and the
  number of changelog records applied a fetch at a time are written to ``<file>`` as JSON.
- ``IMREF_TEST_CHANGELOG_DELAY_S=<s>``: each fetch of changelog records waits that long before it
  is applied: a recovery slow enough to be killed half-way. ``IMREF_TEST_CHANGELOG_MARK=<dir>``
  gets a file ``applied-<n>`` after each fetch applied.
- ``IMREF_TEST_START_AFTER=<path>``: the worker fetches no record (of any topic) until ``<path>``
  exists; joining the group, assignment and the recovery of empty tables go on. For the
  benchmark of several workers on one backlog: started together, they still join one after the
  other, and the first would read the backlog alone until the others are in.
- ``/test/standby.json`` on the worker's web port: its standby changelog partitions and the last
  offset read of each.
- ``IMREF_TEST_EMPTY_ASSIGNMENT=1``: the member's first assignment arrives as no bytes, as Kafka
  sends it to a member the group leader left out (and noida-db 0.2.3 once to a worker joining
  beside another); aiokafka 0.14 cannot decode it, and its group coordination task ends.
- ``IMREF_TEST_SEEK_DELAY_S=<s>``: Faust resumes the flow of records before it seeks the stream
  partitions to their committed offsets; the delay makes records arrive in between every time
  instead of by chance.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import threading
import time
from pathlib import Path

from faust.transport.consumer import Consumer

import streams.runtime.app
from connectors import faults
from streams.runtime.changelog import ChangelogFetches
from streams.runtime.consumer import GatedConsumer

_apps: list = []
_create_app = streams.runtime.app.create_app


_small_fetches = os.environ.get("IMREF_TEST_SMALL_FETCHES")


def _capture(settings):
    app = _create_app(settings)
    if _small_fetches:
        size, records, wait_s = _small_fetches.split(",")
        app.conf.consumer_max_fetch_size, app.conf.broker_max_poll_records = int(size), int(records)
        clicks = app.imref.topics.clicks
        take = app.ledger.handlers[clicks]

        async def slower(tp, fetched, epoch):
            await asyncio.sleep(float(wait_s))
            return await take(tp, fetched, epoch)

        app.ledger.handlers[clicks] = slower
    _apps.append(app)
    if settings.web.enabled:
        _standby_page(app)
    return app


def _standby_page(app) -> None:
    """``/test/standby.json``: each standby changelog partition this worker holds and the last
    offset it has read of it (Faust's recovery keeps both; the worker's own pages do not show
    standbys)."""
    from faust.web import View

    @app.page("/test/standby.json", name="test-standby")
    class Standby(View):
        async def get(self, request):
            recovery = app.tables.recovery
            return self.json([{"topic": tp.topic, "partition": tp.partition, "read": recovery.standby_offsets.get(tp)}
                              for tp in sorted(recovery.standby_tps)])


def _rejoin(signum, frame) -> None:
    thread = _apps[-1].consumer._thread
    coordinator = thread._consumer._coordinator
    thread.thread_loop.call_soon_threadsafe(coordinator.request_rejoin)
    print("test hook: rebalance requested", file=sys.stderr, flush=True)


streams.runtime.app.create_app = _capture
signal.signal(signal.SIGHUP, _rejoin)

_hold = os.environ.get("IMREF_TEST_HOLD")
if _hold:
    _gate = Path(_hold)
    _counts = {name: itertools.count(1) for name in ("held", "revoking", "revoked", "regained")}
    _lock = threading.Lock()
    _point = faults.point
    _revoke, _seek = Consumer.on_partitions_revoked, GatedConsumer.perform_seek

    def _mark(name: str) -> None:
        (_gate / f"{name}-{next(_counts[name])}").touch()

    _holding = threading.Event()

    def _hold_token() -> str | None:
        try:
            return (_gate / "hold").read_text()
        except FileNotFoundError:
            return None

    def _held_point(name: str) -> None:
        if name == "mid_upload":
            with _lock:
                # One upload at a time: holding more would fill the event loop's thread pool,
                # which the producer's host lookups need too.
                token = _hold_token()
                take = token is not None and not _holding.is_set()
                if take:
                    _holding.set()
            if take:
                _mark("held")
                # Held until this hold ends: the file gone or a new hold (a new token). Watching
                # for the file alone missed a release followed at once by the next cycle's hold.
                while _hold_token() == token:
                    time.sleep(0.02)
                _holding.clear()
        _point(name)

    async def _marked_revoke(self, revoked) -> None:
        if revoked:
            _mark("revoking")
        await _revoke(self, revoked)
        if revoked:
            _mark("revoked")

    def _gated(self) -> list:
        return [tp for tp in self.assignment() if self.ledger.gates(tp)]

    async def _marked_seek(self) -> None:
        fresh = any(self.ledger.get(tp) is None for tp in _gated(self))
        await _seek(self)
        if fresh and all(self.ledger.get(tp) is not None for tp in _gated(self)):
            _mark("regained")

    faults.point = _held_point
    Consumer.on_partitions_revoked = _marked_revoke
    GatedConsumer.perform_seek = _marked_seek

_start_after = os.environ.get("IMREF_TEST_START_AFTER")
if _start_after:
    _go = Path(_start_after)
    _wait_next_records = GatedConsumer._wait_next_records

    async def _held_until_go(self, timeout):
        if not _go.exists():
            # None ends Faust's getmany at once: an empty fetch with the flow stopped (a recovery)
            # would make Faust seek every partition back, as after a dropped fetch.
            await asyncio.sleep(0.05)
            return None, None
        # Released for good: the worker's own fetch path from here on, with nothing in between.
        GatedConsumer._wait_next_records = _wait_next_records
        return await _wait_next_records(self, timeout)

    GatedConsumer._wait_next_records = _held_until_go

_seek_delay = float(os.environ.get("IMREF_TEST_SEEK_DELAY_S", 0))
if _seek_delay:
    _perform_seek = Consumer.perform_seek

    async def _late_seek(self) -> None:
        await asyncio.sleep(_seek_delay)
        await _perform_seek(self)

    Consumer.perform_seek = _late_seek

_fail_seek_back = os.environ.get("IMREF_TEST_FAIL_SEEK_BACK")
if _fail_seek_back:
    from streams.delivery.ledger import Ledger

    _route, _seek_back, _reposition = Ledger.route, GatedConsumer.seek_back, GatedConsumer._reposition
    _dropped = threading.Event()

    def _dropping_route(self, topic, handler):
        async def dropping(tp, records, epoch):
            if topic == _fail_seek_back and len(records) >= 2 and not _dropped.is_set():
                _dropped.set()
                records = records[1:]
            await handler(tp, records, epoch)

        _route(self, topic, dropping)

    def _failing_seek_back(self, part) -> None:
        self._imref_test_fail_seek = True
        _seek_back(self, part)

    async def _failing_reposition(self, offsets) -> None:
        if getattr(self, "_imref_test_fail_seek", False):
            self._imref_test_fail_seek = False
            raise RuntimeError("test hook: the seek back fails")
        await _reposition(self, offsets)

    Ledger.route = _dropping_route
    GatedConsumer.seek_back = _failing_seek_back
    GatedConsumer._reposition = _failing_reposition

if os.environ.get("IMREF_TEST_FAUST_RECOVERY"):
    ChangelogFetches.takes = lambda self, tp: False

_applied = itertools.count(1)
_applied_records = 0
_applied_batches: list[int] = []  # records per partition per fetch
_apply, _apply_table = ChangelogFetches.apply, ChangelogFetches._apply
_changelog_delay = float(os.environ.get("IMREF_TEST_CHANGELOG_DELAY_S", 0))
_changelog_mark = os.environ.get("IMREF_TEST_CHANGELOG_MARK")


async def _counted_apply_table(self, recovery, table, parts) -> None:
    global _applied_records
    await _apply_table(self, recovery, table, parts)
    _applied_records += sum(len(records) for _, records, _ in parts)
    _applied_batches.extend(len(records) for _, records, _ in parts)


async def _counted_apply(self, fetched, active) -> dict:
    if _changelog_delay:
        await asyncio.sleep(_changelog_delay)
    unapplied = await _apply(self, fetched, active)
    if _changelog_mark:
        (Path(_changelog_mark) / f"applied-{next(_applied)}").touch()
    return unapplied  # the consumer rewinds these: the hook must not change what the worker does


ChangelogFetches._apply = _counted_apply_table
ChangelogFetches.apply = _counted_apply

_dump = os.environ.get("IMREF_TEST_DUMP_TABLES")
if _dump:
    import json

    from faust.tables.recovery import Recovery

    _completed = Recovery.on_recovery_completed

    def _contents(table) -> dict:
        store = table.data
        parts: dict = {}
        raw = getattr(store, "data", None)
        if isinstance(raw, dict):  # memory store: decoded keys and values, their partition from recovery
            for key, value in raw.items():
                parts.setdefault(str(store._key_partition.get(key)), {})[key] = value
        else:  # RocksDB: every partition database, through the store's own codec
            for partition, db in sorted(store._dbs.items()):
                it = db.iteritems()
                it.seek_to_first()
                keys = {store._decode_key(k): store._decode_value(v) for k, v in it if k != store.offset_key}
                del it
                if keys:
                    parts[str(partition)] = keys
        return parts

    def _write_dump(recovery, path: str) -> None:
        tables = {}
        for name, table in recovery.tables.items():
            topic = table.changelog_topic.get_topic_name()
            offsets = {str(tp.partition): table.data.persisted_offset(tp)
                       for tp in recovery.active_tps | recovery.standby_tps if tp.topic == topic}
            tables[name] = {"contents": _contents(table), "persisted_offsets": offsets,
                            "active": sorted(tp.partition for tp in recovery.active_tps if tp.topic == topic),
                            "standby": sorted(tp.partition for tp in recovery.standby_tps if tp.topic == topic)}
        # Renamed into place: a test polls these files while the worker runs.
        part = Path(f"{path}.part")
        part.write_text(json.dumps({"tables": tables, "applied_a_fetch_at_a_time": _applied_records,
                                    "partition_fetches": _applied_batches}))
        part.rename(path)

    async def _dumping_completed(self, generation_id: int = 0) -> None:
        await _completed(self, generation_id)
        _write_dump(self, _dump)

    Recovery.on_recovery_completed = _dumping_completed

if os.environ.get("IMREF_TEST_EMPTY_ASSIGNMENT"):
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    _on_join_complete = GroupCoordinator._on_join_complete
    _emptied = threading.Event()

    async def _first_empty(self, generation, member_id, protocol, member_assignment_bytes):
        if not _emptied.is_set():
            _emptied.set()
            print("test hook: the first assignment arrives as no bytes", file=sys.stderr, flush=True)
            member_assignment_bytes = b""
        return await _on_join_complete(self, generation, member_id, protocol, member_assignment_bytes)

    GroupCoordinator._on_join_complete = _first_empty
