"""Pull from impact: fetch each new file impact leaves on its SFTP server once, and publish its
rows to a Kafka topic or store the file at an fsspec URL.

- Only the Faust leader polls (``on_leader`` timers), so replicas do not fetch the same file;
  the blocking SFTP work runs in threads.
- What was fetched is remembered in the compacted topic ``<app_id>-fetched-reports`` (key:
  connection, file name, size, mtime). It is read to its end before every poll, so a new leader
  knows what the last one fetched, and written only after the broker confirmed every row
  (acks=all) or the file was stored. A crash between the two fetches the file again: its rows
  come again with the same key (file name) and row number, so a consumer can drop repeats
  (the fault point ``pulled_not_recorded`` sits in that window).
- A file is fetched only once two listings in a row show it with the same size and mtime:
  impact may still be writing it.
- Files are streamed, never held whole: a report of any size needs a few MB (the SFTP read-ahead
  window, a slice of parsed rows, at most MAX_IN_FLIGHT unconfirmed records). A file for a
  topic is read twice, once to check every row and once to publish, so a malformed file sends
  nothing rather than the same first rows again at every retry.
"""
from __future__ import annotations

import asyncio
import collections
import csv
import io
import itertools
import logging
import time
from typing import BinaryIO, Iterator

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connectors import faults
from connectors.base import TransportError, step
from connectors.fsspec_dir import FsspecConnection, FsspecSettings
from connectors.pull import RemoteFile, SftpSource
from connectors.sftp import SftpSettings

from ..config import Settings
from ..delivery.lanes import RetryPolicy
from ..kafka import client_options

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
ROWS_PER_READ = 1000  # rows parsed in the SFTP thread per hand-over to the event loop
MAX_IN_FLIGHT = 10_000  # records sent and not yet confirmed: bounds the producer's memory


class PullError(Exception):
    """One poll of a connection failed; the message names the connection, the file and the step."""


def state_key(connection: str, file: RemoteFile) -> bytes:
    # A file impact rewrites (new size or mtime) is a new file; the same one never is.
    return orjson.dumps({"connection": connection, "file": file.name, "size": file.size, "mtime": file.mtime})


def report_rows(stream: BinaryIO) -> Iterator[tuple[int, dict[str, str]]]:
    """``(row number, {header name: cell})`` per CSV row, parsed as the bytes arrive."""
    reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""))
    header = next(reader, [])
    for number, cells in enumerate((r for r in reader if r), start=1):
        if len(cells) != len(header):
            raise ValueError(f"row {number} has {len(cells)} cells, the header {len(header)}")
        yield number, dict(zip(header, cells))


def row_record(connection: str, file_name: str, number: int, fields: dict[str, str]) -> tuple[bytes, bytes, list]:
    """``(key, value, headers)`` of one row's record."""
    value = orjson.dumps({"file": file_name, "row": number, "fields": fields})
    return file_name.encode(), value, [("imref.source.connection", connection.encode()),
                                       ("imref.source.file", file_name.encode()),
                                       ("imref.source.row", str(number).encode())]


class FetchedLog:
    """The state topic as a set of keys, caught up to the topic's end on request."""

    def __init__(self, topic: str, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer):
        self.topic = topic
        self._consumer, self._producer = consumer, producer
        self._keys: set[bytes] = set()

    def __contains__(self, key: bytes) -> bool:
        return key in self._keys

    async def assign(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._consumer.partitions_for_topic(self.topic):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {self.topic} has no partitions after {timeout_s:g}s")
            await self._consumer.topics()  # refreshes the metadata of a topic just created
            await asyncio.sleep(0.2)
        parts = [TopicPartition(self.topic, p) for p in self._consumer.partitions_for_topic(self.topic)]
        self._consumer.assign(parts)
        await self._consumer.seek_to_beginning(*parts)

    async def catch_up(self, timeout_s: float) -> None:
        asked_ms = int(time.time() * 1000)
        deadline = time.monotonic() + timeout_s
        while True:
            for records in (await self._consumer.getmany(timeout_ms=100)).values():
                for r in records:
                    (self._keys.add if r.value is not None else self._keys.discard)(r.key)
            if await self._at_end(asked_ms):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {self.topic} not read to its end in {timeout_s:g}s")

    async def _at_end(self, asked_ms: int) -> bool:
        # The end is the high watermark of a Fetch answered after we asked. ListOffsets is not
        # used: some brokers (Tansu) answer it short, and a short read forgets fetched files.
        for tp in self._consumer.assignment():
            high, answered_ms = self._consumer.highwater(tp), self._consumer.last_poll_timestamp(tp)
            if high is None or answered_ms is None or answered_ms < asked_ms:
                return False
            if await self._consumer.position(tp) < high:
                return False
        return True

    async def add(self, key: bytes, value: bytes) -> None:
        await self._producer.send_and_wait(self.topic, value, key=key)
        self._keys.add(key)


class ReportPoller:
    """Polls pull_from_impact connections; ``tick`` is what the leader's timers call."""

    def __init__(self, connections: list[SftpSettings], *, app_id: str, kafka: dict, partitions: int = 1,
                 replicas: int = 1, policy: RetryPolicy | None = None, state_timeout_s: float = 60.0):
        self.connections = connections
        self.state_topic = f"{app_id}-fetched-reports"
        self._kafka = kafka
        self._partitions, self._replicas = partitions, replicas
        self._policy = policy or RetryPolicy(first_delay_s=1.0)
        self._state_timeout_s = state_timeout_s
        self._lock = asyncio.Lock()  # one poll at a time; close waits for it
        self._closed = False
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._fetched: FetchedLog | None = None
        self._stores: dict[str, FsspecConnection] = {}
        self._listed: dict[str, dict[str, RemoteFile]] = {}  # each connection's previous listing
        self._due: dict[str, float] = {}
        self._failures: dict[str, int] = {}

    async def tick(self, conn: SftpSettings) -> None:
        """Poll ``conn`` when it is due; after a failure, sooner, with backoff and jitter."""
        now = time.monotonic()
        if self._closed or now < self._due.get(conn.name, 0.0):
            return
        try:
            await self.poll(conn)
        except Exception as exc:  # never let one connection's failure stop the worker's timers
            failures = self._failures[conn.name] = self._failures.get(conn.name, 0) + 1
            delay = min(conn.poll_interval_s, self._policy.delay(failures - 1))
            text = str(exc) if isinstance(exc, PullError) else \
                f"pull from impact: connection={conn.name!r}: {type(exc).__name__}: {exc}"
            log.warning("%s; attempt %d, retry in %.1fs", text, failures, delay)
            self._due[conn.name] = time.monotonic() + delay
        else:
            self._failures[conn.name] = 0
            self._due[conn.name] = now + conn.poll_interval_s

    async def poll(self, conn: SftpSettings) -> list[str]:
        """List the directory once and fetch every new, stable matching file; the names fetched."""
        async with self._lock:
            if self._closed:
                return []
            try:
                with step("start"):
                    await self._start()
                with step("read state"):
                    await self._fetched.catch_up(self._state_timeout_s)
                source = SftpSource(conn)
                await asyncio.to_thread(source.__enter__)
            except TransportError as exc:
                raise PullError(f"pull from impact: connection={conn.name!r}: {exc}") from exc
            fetched, failed = [], []
            try:
                try:
                    listing = await asyncio.to_thread(source.list)
                except TransportError as exc:
                    raise PullError(f"pull from impact: connection={conn.name!r}: {exc}") from exc
                previous = self._listed.get(conn.name, {})
                self._listed[conn.name] = {f.name: f for f in listing}
                for file in listing:
                    if previous.get(file.name) != file or state_key(conn.name, file) in self._fetched:
                        continue  # new or still changing, or already fetched
                    try:
                        await self._fetch(conn, source, file)
                        fetched.append(file.name)
                    except TransportError as exc:
                        failed.append(f"file={file.name}: {exc}")
            finally:
                await asyncio.to_thread(source.__exit__)
            if failed:
                raise PullError(f"pull from impact: connection={conn.name!r}: {'; '.join(failed)}")
            return fetched

    async def _fetch(self, conn: SftpSettings, source: SftpSource, file: RemoteFile) -> None:
        if conn.target_topic:
            with step("parse"):
                await asyncio.to_thread(self._check_rows, source, file)
            rows = await self._publish(conn, source, file)
        else:
            rows = None
            with step("store"):
                await asyncio.to_thread(self._store, conn, source, file)
        faults.point("pulled_not_recorded")
        with step("record"):
            await self._fetched.add(state_key(conn.name, file), orjson.dumps({
                "connection": conn.name, "file": file.name, "size": file.size, "mtime": file.mtime,
                "rows": rows, "target": conn.target_topic or conn.target_url, "fetched_at": time.time()}))
        log.info("pulled from impact: connection=%r file=%s bytes=%d rows=%s to %s",
                 conn.name, file.name, file.size, rows, conn.target_topic or conn.target_url)

    @staticmethod
    def _check_rows(source: SftpSource, file: RemoteFile) -> None:
        with source.open(file) as stream:
            collections.deque(report_rows(stream), maxlen=0)

    def _store(self, conn: SftpSettings, source: SftpSource, file: RemoteFile) -> None:
        with source.open(file) as stream:
            self._stores[conn.name].put_stream(file.name, stream)

    async def _publish(self, conn: SftpSettings, source: SftpSource, file: RemoteFile) -> int:
        """Send every row; the count once all are confirmed. SFTP reads and parsing stay in a
        thread (``next`` on ``_slices``), sends in the loop, at most MAX_IN_FLIGHT unconfirmed."""
        in_flight: collections.deque[asyncio.Future] = collections.deque()
        count = 0
        slices = self._slices(source, file)
        try:
            while True:
                with step("parse"):
                    rows = await asyncio.to_thread(next, slices, None)
                if rows is None:
                    break
                with step("publish"):
                    for number, fields in rows:
                        key, value, headers = row_record(conn.name, file.name, number, fields)
                        in_flight.append(await self._producer.send(conn.target_topic, value, key=key, headers=headers))
                        while len(in_flight) > MAX_IN_FLIGHT:
                            await in_flight.popleft()  # raises if the broker refused a row
                count += len(rows)
            with step("publish"):
                while in_flight:
                    await in_flight.popleft()
        finally:
            await asyncio.to_thread(slices.close)  # closes the remote file if we stopped early
        return count

    @staticmethod
    def _slices(source: SftpSource, file: RemoteFile) -> Iterator[list[tuple[int, dict[str, str]]]]:
        with source.open(file) as stream:
            rows = report_rows(stream)
            while rows_read := list(itertools.islice(rows, ROWS_PER_READ)):
                yield rows_read

    async def _start(self) -> None:
        if self._fetched is not None:
            return
        await self._declare_topics()
        producer = AIOKafkaProducer(**self._kafka, acks="all", linger_ms=5)
        consumer = AIOKafkaConsumer(**self._kafka, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=100)
        try:
            await producer.start()
            await consumer.start()
            fetched = FetchedLog(self.state_topic, consumer, producer)
            await fetched.assign(self._state_timeout_s)
            for c in self.connections:
                if c.target_url is not None:
                    self._stores[c.name] = await asyncio.to_thread(
                        FsspecConnection, FsspecSettings(name=c.name, method="fsspec", url=c.target_url,
                                                         storage_options=c.storage_options))
        except BaseException:
            await consumer.stop()
            await producer.stop()
            raise
        self._producer, self._consumer, self._fetched = producer, consumer, fetched

    async def _declare_topics(self) -> None:
        """The state topic (compacted, one partition: it is small and read whole) and every
        target topic, when missing; existing topics are left as the operator made them."""
        wanted = {self.state_topic: NewTopic(self.state_topic, 1, self._replicas,
                                             topic_configs={"cleanup.policy": "compact"})}
        for c in self.connections:
            if c.target_topic:
                wanted[c.target_topic] = NewTopic(c.target_topic, self._partitions, self._replicas)
        admin = AIOKafkaAdminClient(**self._kafka)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for name, t in wanted.items() if name not in existing]
            if missing:
                response = await admin.create_topics(missing)
                for topic, code, *_ in response.topic_errors:
                    if code not in (0, TOPIC_ALREADY_EXISTS):  # another replica may just have made it
                        raise RuntimeError(f"cannot create topic {topic}: error {code}")
        finally:
            await admin.close()

    async def close(self, timeout_s: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout_s)  # let a poll record what it sent
        except asyncio.TimeoutError:
            log.warning("pull from impact: a poll was still running at stop; its file is fetched again later")
        self._closed = True
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()


def install(app, settings: Settings) -> ReportPoller | None:
    """Poll every pull_from_impact connection from timers that run on the leader only."""
    pulls = [c for c in settings.connections if c.methodology == "pull_from_impact"]
    if not pulls:
        return None
    poller = ReportPoller(pulls, app_id=settings.app_id, kafka=client_options(settings.kafka),
                          partitions=settings.topics.partitions, replicas=settings.topics.replicas)
    for conn in pulls:
        _leader_timer(app, poller, conn)

    @app.on_before_shutdown.connect
    async def close_poller(sender, **kwargs) -> None:
        await poller.close()

    return poller


def _leader_timer(app, poller: ReportPoller, conn: SftpSettings) -> None:
    async def poll_when_due() -> None:
        await poller.tick(conn)

    # A short tick so a retry after a failure need not wait for the full poll interval.
    app.timer(interval=min(1.0, conn.poll_interval_s), on_leader=True,
              name=f"pull-from-impact {conn.name}")(poll_when_due)
