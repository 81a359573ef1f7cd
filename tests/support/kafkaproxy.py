"""A Kafka-protocol TCP proxy for the tests: forwards every frame unchanged between clients and
the broker, and holds back the responses a test chooses until it releases them.

Start the broker with its advertised listener set to the proxy's address (``advertised``), so
that every connection a client opens after the bootstrap, to the group coordinator and to the
partition leaders included, comes back through the proxy.

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

PRODUCE, FETCH = 0, 1


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
            up_writer.write(frame)
            await up_writer.drain()
        up_writer.close()

    async def _responses(self, up_reader, conn: _Connection) -> None:
        while (frame := await self._frame(up_reader)) is not None:
            request = conn.pending.pop(struct.unpack(">i", frame[4:8])[0], None)
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
