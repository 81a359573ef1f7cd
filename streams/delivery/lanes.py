"""Delivering sealed batches to every connection, and acking their source records only after.

Each partition has one lane per connection, so a connection that is down retries on its own
while the others go on; a batch is acked when every connection has confirmed it. Each
confirmation is recorded (``Job.on_confirmed``) before anything else happens to the batch, and a
connection that confirmed a batch's file before (``Job.confirmed``: a restart or a rebalance
read the batch again) is not sent it again: for a push to impact every upload is a submission. ``submit``
never waits: a partition with ``max_in_flight`` undelivered batches is ``full``, and its owner
stops fetching that partition until ``on_change`` says a batch left (backpressure per
partition, so the clicks and the other partitions go on: a held batch may be waiting for them).
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from hashlib import blake2b
from time import monotonic
from typing import Awaitable, Callable

from connectors import Connection, faults

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    attempt_timeout_s: float = 120.0

    def delay(self, attempt: int) -> float:
        # "Full jitter": spreads the retries of many workers after a shared outage.
        return random.uniform(0, min(self.max_delay_s, self.first_delay_s * 2 ** attempt))


async def put_until_confirmed(conn: Connection, name: str, data: bytes, policy: RetryPolicy,
                              on_failure: Callable[[Exception], None] | None = None) -> int:
    """Retry until the destination confirms; returns the number of failed attempts."""
    failures = 0
    while True:
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the inner result when a
            # cancel arrives as the attempt ends, so a revoke's cancel was lost and the lane of a
            # revoked partition went on retrying (tests/unit/test_delivery.py, 1 CI run).
            async with asyncio.timeout(policy.attempt_timeout_s):
                await asyncio.to_thread(conn.put, name, data)
            return failures
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is retried: the batch must not be lost
            delay = policy.delay(failures)
            failures += 1
            log.warning("upload failed: connection=%r file=%s attempt=%d error=%s: %s; retry in %.1fs",
                        conn.name, name, failures, type(exc).__name__, exc, delay)
            if on_failure is not None:
                on_failure(exc)
            await asyncio.sleep(delay)


def digest(data: bytes) -> str:
    return blake2b(data, digest_size=16).hexdigest()


async def _nothing_to_record(connection: str, file_digest: str) -> None:
    return None


@dataclass(eq=False)
class Job:
    """One sealed batch on its way: ``prepare`` makes the file once (its bytes, None for no file,
    and its row count), every lane puts it and records its confirmation (``on_confirmed``: the
    connection's name and the file's digest), ``on_delivered`` runs once every lane has.
    ``confirmed``: the connections that confirmed this batch's file before (name -> digest)."""

    name: str
    prepare: Callable[[], Awaitable[tuple[bytes | None, int]]]
    on_delivered: Callable[[], Awaitable[None]]
    on_confirmed: Callable[[str, str], Awaitable[None]] = _nothing_to_record
    confirmed: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    digest: str = ""
    cut: str = ""  # why the batch was cut (core.batching.Batch.cut)
    cut_at: float = field(default_factory=monotonic)  # CLOCK_MONOTONIC: one clock for the whole machine
    remaining: int = 0
    _prepared: asyncio.Task | None = field(default=None, repr=False)

    async def payload(self) -> bytes | None:
        if self._prepared is None:
            self._prepared = asyncio.ensure_future(self._prepare())
        return await asyncio.shield(self._prepared)

    async def _prepare(self) -> bytes | None:
        data, self.rows = await self.prepare()
        if data is not None:
            self.digest = digest(data)
        return data


class PartitionLanes:
    def __init__(self, partition: int, connections: list[Connection], policy: RetryPolicy,
                 max_in_flight: int = 4, metrics=None, on_change: Callable[[], None] = lambda: None):
        self.partition = partition
        self.policy = policy
        self.metrics = metrics  # streams.metrics.Metrics, or None
        self.max_in_flight = max_in_flight
        self.on_change = on_change  # a batch left the lanes
        self._queues = {c.name: asyncio.Queue() for c in connections}
        self._tasks = [asyncio.ensure_future(self._run(c, self._queues[c.name])) for c in connections]
        self._unfinished: list[Job] = []

    def submit(self, job: Job) -> None:
        self._unfinished.append(job)
        if self.metrics:  # visible while it waits for its turn in a lane
            for name in self._queues:
                self.metrics.file_held(name, job.name, job.cut, job.cut_at)
        job.remaining = len(self._queues)
        asyncio.ensure_future(job.payload())  # start recording the cut and rendering now
        for queue in self._queues.values():
            queue.put_nowait(job)

    @property
    def full(self) -> bool:
        return len(self._unfinished) >= self.max_in_flight

    @property
    def held(self) -> int:
        return len(self._unfinished)

    async def wait_idle(self) -> None:
        while self._unfinished:
            await asyncio.sleep(0.05)

    def cancel(self) -> None:
        """The partition was revoked: stop uploading; the next owner re-reads these batches."""
        for task in self._tasks:
            task.cancel()
        for job in self._unfinished:
            if job._prepared is not None:
                job._prepared.cancel()
            if self.metrics:
                for name in self._queues:
                    self.metrics.file_dropped(name, job.name)

    async def _run(self, conn: Connection, queue: asyncio.Queue) -> None:
        while True:
            job: Job = await queue.get()
            data = await job.payload()
            before = job.confirmed.get(conn.name)
            if data is None:
                if self.metrics:
                    self.metrics.file_dropped(conn.name, job.name)
            elif before is not None:
                self._not_again(conn, job, same=before == job.digest)
            else:
                await self._deliver(conn, job, data)
            job.remaining -= 1
            if job.remaining == 0:
                # Lanes deliver in order, so the last lane to finish a job finishes jobs in order.
                faults.point("after_upload")
                await job.on_delivered()
                faults.point("after_ack")
                self._unfinished.remove(job)
                self.on_change()

    async def _deliver(self, conn: Connection, job: Job, data: bytes) -> None:
        faults.point("before_upload")
        m = self.metrics
        if m:
            m.upload_started(conn.name, job.name, job.rows)
        failures = await put_until_confirmed(
            conn, job.name, data, self.policy,
            on_failure=m and (lambda exc: m.upload_failed(conn.name, job.name, f"{type(exc).__name__}: {exc}")))
        confirmed_at = monotonic()
        # The one window in which a confirmed file can be sent again: a crash before this record
        # is confirmed. Measured: imref_confirmation_record_seconds.
        faults.point("before_record")
        await job.on_confirmed(conn.name, job.digest)
        recorded_s = monotonic() - confirmed_at
        log.info("connection %r confirmed %s (%d bytes, %d failed attempts; recorded in %.3fs)", conn.name, job.name,
                 len(data), failures, recorded_s)
        if m:
            m.upload_confirmed(conn.name, job.name, job.rows, job.cut_at, recorded_s)

    def _not_again(self, conn: Connection, job: Job, same: bool) -> None:
        """The batch was read again, and this connection confirmed its file before."""
        if same:
            log.info("connection %r confirmed %s before (same content): not sent again", conn.name, job.name)
        else:
            log.error("connection %r confirmed %s before with other content; the file it has stands and is not "
                      "replaced (the batch was re-formed differently: state recovered differently, a click "
                      "expired, or the config changed); compare it with the records of this offset range",
                      conn.name, job.name)
        if self.metrics:
            self.metrics.not_sent_again(conn.name, job.name, job.rows, same)
