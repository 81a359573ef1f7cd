"""A Kafka-protocol TCP proxy for the tests: forwards every frame unchanged between clients and
the broker, and holds back the responses a test chooses until it releases them.

Start the broker with its advertised listener set to the proxy's address (``advertised``), so
that every connection a client opens after the bootstrap, to the group coordinator and to the
partition leaders included, comes back through the proxy.

``fail_produce`` makes the proxy answer for the broker that one topic refuses every record
(``TOPIC_AUTHORIZATION_FAILED`` by default): the topic's data is cut out of each Produce request
(v0-v8, aiokafka's) before it goes on, so the broker never writes it, and the error is added to
the broker's answer.

Frames are a 4-byte size and the message. A request starts with api_key (int16), api_version
(int16), correlation_id (int32) and client_id (nullable string, int16 length); a response starts
with the correlation_id. Responses on one connection are answered in request order, so once one
response is held, every later response on that connection waits behind it. Runs its own event
loop in a daemon thread; the methods are called from the test's thread. Loopback only.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable

from aiokafka.protocol import produce as produce_protocol
from aiokafka.protocol.produce import ProduceRequest_v8

PRODUCE, FETCH = 0, 1
TOPIC_AUTHORIZATION_FAILED = 29
_LAST_PRODUCE = ProduceRequest_v8.API_VERSION  # the last version without flexible (tagged) fields


@dataclass
class Request:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


@dataclass(eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    pending: dict[int, Request] = field(default_factory=dict)
    queued: list[bytes] = field(default_factory=list)  # responses held, or behind a held one
    # correlation id -> (what was cut out of the request, the error to answer for it)
    refused: dict[int, tuple[list[tuple[str, list[int]]], int]] = field(default_factory=dict)


def _produce_classes(version: int):
    return (getattr(produce_protocol, f"ProduceRequest_v{version}"),
            getattr(produce_protocol, f"ProduceResponse_v{version}"))


def cut_topic(frame: bytes, request: Request, topic: str) -> tuple[bytes, list[tuple[str, list[int]]]]:
    """A Produce request frame without ``topic``'s data, and what was cut out (topic, partitions)."""
    start = 4 + 10 + len((request.client_id or "").encode())
    request_class, _ = _produce_classes(request.api_version)
    body = request_class.decode(frame[start:])
    kept = [t for t in body.topics if t[0] != topic]
    cut = [(t[0], [p[0] for p in t[1]]) for t in body.topics if t[0] == topic]
    if not cut:
        return frame, []
    body.topics = kept
    message = frame[4:start] + body.encode()
    return struct.pack(">i", len(message)) + message, cut


def add_errors(frame: bytes, version: int, cut: list[tuple[str, list[int]]], error_code: int) -> bytes:
    """The broker's Produce response frame with ``error_code`` for every partition cut out."""
    _, response_class = _produce_classes(version)
    body = response_class.decode(frame[8:])
    for topic, partitions in cut:
        fields = [[p, error_code, -1] + ([-1] if version >= 2 else []) + ([-1] if version >= 5 else [])
                  + ([[], "refused by the test proxy"] if version >= 8 else []) for p in partitions]
        body.topics = list(body.topics) + [(topic, fields)]
    message = frame[4:8] + body.encode()
    return struct.pack(">i", len(message)) + message


def parse_request(frame: bytes) -> Request:
    api_key, api_version, correlation_id, n = struct.unpack(">hhih", frame[:10])
    client_id = None if n < 0 else frame[10:10 + n].decode(errors="replace")
    return Request(api_key, api_version, correlation_id, client_id)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KafkaProxy:
    def __init__(self, upstream_port: int, port: int | None = None):
        self.upstream_port = upstream_port
        self.port = port or _free_port()
        self._hold: Callable[[Request], bool] | None = None
        self._refuse: tuple[str, int] | None = None  # (topic, error code) of fail_produce
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self.held = 0  # responses held back since the last release (behind-held ones not counted)
        self.seen: dict[int, int] = {}  # api_key -> responses forwarded or held
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kafkaproxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    @property
    def advertised(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- control, from the test's thread ----------------------------------------------------
    def start(self) -> "KafkaProxy":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for conn in list(self._connections):
                conn.writer.close()
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def hold(self, which: Callable[[Request], bool]) -> None:
        """From now on, hold the response to every request ``which`` accepts."""
        self._call(lambda: setattr(self, "_hold", which))

    def fail_produce(self, topic: str | None, error_code: int = TOPIC_AUTHORIZATION_FAILED) -> None:
        """From now on, ``topic`` refuses every record produced to it with ``error_code``; None: no more."""
        self._call(lambda: setattr(self, "_refuse", None if topic is None else (topic, error_code)))

    def release(self) -> None:
        """Stop holding and send every held response, in order."""
        def flush() -> None:
            self._hold, self.held = None, 0
            for conn in self._connections:
                for frame in conn.queued:
                    conn.writer.write(frame)
                conn.queued.clear()
        self._call(flush)

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()
        self._loop.call_soon_threadsafe(lambda: (fn(), done.set()))
        done.wait(10)

    # -- the proxy --------------------------------------------------------------------------
    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        conn = _Connection(writer)
        self._connections.add(conn)
        try:
            await asyncio.gather(self._requests(reader, up_writer, conn), self._responses(up_reader, conn),
                                 return_exceptions=True)
        finally:
            self._connections.discard(conn)
            up_writer.close()
            writer.close()

    @staticmethod
    async def _frame(reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await reader.readexactly(4)
            return head + await reader.readexactly(struct.unpack(">i", head)[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def _requests(self, reader, up_writer, conn: _Connection) -> None:
        while (frame := await self._frame(reader)) is not None:
            request = parse_request(frame[4:])
            conn.pending[request.correlation_id] = request
            if self._refuse is not None and request.api_key == PRODUCE and request.api_version <= _LAST_PRODUCE:
                frame, cut = cut_topic(frame, request, self._refuse[0])
                if cut:
                    conn.refused[request.correlation_id] = (cut, self._refuse[1])
            up_writer.write(frame)
            await up_writer.drain()
        up_writer.close()

    async def _responses(self, up_reader, conn: _Connection) -> None:
        while (frame := await self._frame(up_reader)) is not None:
            correlation_id = struct.unpack(">i", frame[4:8])[0]
            request = conn.pending.pop(correlation_id, None)
            refused = conn.refused.pop(correlation_id, None)
            if refused is not None:
                frame = add_errors(frame, request.api_version, *refused)
            if request is not None:
                self.seen[request.api_key] = self.seen.get(request.api_key, 0) + 1
            if request is not None and self._hold is not None and self._hold(request):
                self.held += 1
                conn.queued.append(frame)
            elif conn.queued:
                conn.queued.append(frame)
            else:
                conn.writer.write(frame)
                await conn.writer.drain()
        conn.writer.close()
