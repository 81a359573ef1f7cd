"""Writing Faust tables from batch handlers and delivery lanes, outside any Faust stream.

A RocksDB store picks the partition database of a write from the stream's current event, and
``Table.__setitem__`` asks it for the changelog partition; our writers know the partition
themselves. ``in_partition`` gives the store that answer; ``TableWriter`` writes (and deletes) in
the store and sends the changelog records (or tombstones) explicitly (the one thing a Faust table
write does beyond that is a TTL and sensor, which these tables do not use).

The changelog records of one write go to the producer as record batches (aiokafka's
``create_batch``/``send_batch``), not one Faust ``send_soon`` each: that path (a ``FutureMessage``,
Faust's producer buffer, an aiokafka send and its future per record) cost more than the rest of
the worker's work for the orders table's records. The bytes are Faust's own (the table's key and
value codecs, the ones its changelog topic serializes with: tests/unit/test_tables.py compares
them), so recovery and compaction read them as Faust wrote them, and a RocksDB store's persisted
offset is set once per write from the last batch's base offset. Faust's json codec (orjson with
Faust's default and options) is written by msgspec's JSON encoder (``encoder``), which gives the
same bytes (checked when the writer is made) at a tenth of the cost in the worker: orjson allocates
a kilobyte per call and shrinks it after, and in the worker's heap that made each call take 5.8 µs
(0.5 µs alone), a tenth of the worker's CPU. One difference, which no reader sees: a float of
1e16 or more is written ``1e16`` where orjson writes ``1e+16`` (the same JSON number).
"""
from __future__ import annotations

import asyncio
import weakref
from contextlib import contextmanager
from itertools import islice
from typing import Any, Callable, Iterator

import msgspec
from faust.serializers import codecs
from faust.utils import json as faust_json
from faust.streams import _current_event
from faust.types import TP

from ..delivery.failures import Stop, log_only, owned


class _Message:
    __slots__ = ("partition",)

    def __init__(self, partition: int):
        self.partition = partition


class _Event:
    __slots__ = ("message", "__weakref__")

    def __init__(self, message: _Message):
        self.message = message


@contextmanager
def in_partition(partition: int):
    event = _Event(_Message(partition))
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


_PROBE = {"text": "C\u00e9-_~.", "float": 1796553962.716, "list": [[0, 41, None, True]], 7: {"k": "v"}}


def plain_json(serializer) -> bool:
    """Is ``serializer`` (a name or a codec) Faust's json codec alone, on orjson?"""
    codec = codecs.get_codec(serializer)
    return type(codec) is codecs.json and list(codec.nodes) == [codec] and faust_json.orjson is not None


def encoder(serializer: str) -> Callable[[Any], bytes]:
    """The codec's ``dumps``; for Faust's plain json codec on orjson, msgspec's encoder with
    Faust's default as its hook, if it gives the same bytes."""
    codec = codecs.get_codec(serializer)
    if plain_json(codec):
        direct = msgspec.json.Encoder(enc_hook=faust_json.on_default).encode
        if direct(_PROBE) == codec.dumps(_PROBE):
            return direct
    return codec.dumps


NO_HEADERS: list = []  # aiokafka's C batch builder takes a list only; never written to


def record_batches(records: list[tuple[bytes | None, bytes | None, Any]],
                   create_batch: Callable[[], Any]) -> Iterator[Any]:
    """Record batches filled in order from (key, value, headers), each yielded once full (a new
    one taken when ``append`` refuses the next record), the last one as it is."""
    batch = create_batch()
    for key, value, headers in records:
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            yield batch
            batch = create_batch()
            batch.append(key=key, value=value, timestamp=None, headers=headers)
    yield batch


class TableWriter:
    """Reads and writes of one Faust table by callers that are not Faust agents."""

    def __init__(self, table, stop: Stop = log_only):
        """``stop``: a changelog write the broker does not confirm stops the worker (whether or not
        its caller awaits it: a revoked partition's writes are not awaited)."""
        self.table = table
        self.stop = stop
        # The store itself (no per-read sensor and event lookup); the memory store's dict directly.
        raw = getattr(table.data, "data", None)
        self._memory = raw if isinstance(raw, dict) else None
        self.get = raw.get if self._memory is not None else table.data.get
        # One write's batches enter the producer before the next write's: the changelog keeps
        # the order of the writes, so the last record of a key is its latest value.
        self._enqueue = asyncio.Lock()
        self._key_bytes = encoder(table.key_serializer)
        self._value_bytes = encoder(table.value_serializer)

    @staticmethod
    def reading(partition: int):
        """Reads inside go to the partition's database directly (RocksDB looks in all of them
        otherwise); a context manager."""
        return in_partition(partition)

    def put(self, partition: int, items: dict) -> list:
        """Write ``items`` (key -> value) of one partition; returns the changelog send to await
        when the caller needs it confirmed (a list of one, empty when there is nothing)."""
        store = self.table.data
        with in_partition(partition):
            for key, value in items.items():
                store[key] = value
        if self._memory is not None:
            # The memory store knows a key's partition only from recovery; the sweep needs it for
            # every key, and Faust uses it to drop the keys of partitions this worker lost.
            store._key_partition.update(dict.fromkeys(items, partition))
        return self._send(partition, items.items())

    def delete(self, partition: int, keys: list) -> list:
        """Delete ``keys`` of one partition from the store and send their tombstones, so that
        neither RocksDB nor the compacted changelog (nor a recovery from it) keeps them."""
        store = self.table.data
        if self._memory is not None:
            for key in keys:
                self._memory.pop(key, None)
                store._key_partition.pop(key, None)
        else:
            db = store._dbs.get(partition)
            for key in keys:
                raw = store._encode_key(key)
                store._key_index.pop(raw, None)
                if db is not None:
                    db.delete(raw)
        return self._send(partition, ((key, None) for key in keys))

    def _send(self, partition: int, pairs) -> list:
        """The changelog records of one write, serialized now (the values as they are now), sent
        in order; a list of one awaitable, confirmed once every record is acknowledged."""
        key_bytes, value_bytes = self._key_bytes, self._value_bytes
        records = [(key_bytes(key), None if value is None else value_bytes(value), NO_HEADERS) for key, value in pairs]
        if not records:
            return []
        what = f"writing {len(records)} record(s) to {self.table.changelog_topic.get_topic_name()} partition {partition}"
        return [owned(self._publish(partition, records), what, self.stop)]

    async def _publish(self, partition: int, records: list[tuple[bytes, bytes | None, Any]]) -> None:
        table = self.table
        producer = table.app.producer._ensure_producer()
        name = table.changelog_topic.get_topic_name()
        async with self._enqueue:
            sent = []
            for batch in record_batches(records, producer.create_batch):
                sent.append(await producer.send_batch(batch, name, partition=partition))
            last = batch.record_count()
        done = await asyncio.gather(*sent)
        # What a RocksDB store has written up to (Faust sets it per record; a memory store ignores it).
        table.data.set_persisted_offset(TP(name, partition), done[-1].offset + last - 1)

    def chunks(self, partition: int, size: int) -> Iterator[list[tuple[Any, Any]]]:
        """The (key, value) pairs of one partition, ``size`` at a time, each chunk read when it is
        asked for: a caller may write between chunks, and no RocksDB iterator is held across them
        (a held iterator keeps a revoked partition's database open, and its reopening locked)."""
        store = self.table.data
        if self._memory is not None:
            keys = [k for k, p in store._key_partition.items() if p == partition]
            for start in range(0, len(keys), size):
                chunk = [(k, self._memory[k]) for k in keys[start:start + size] if k in self._memory]
                if chunk:
                    yield chunk
            return
        after = None
        while True:
            db = store._dbs.get(partition)
            if db is None:
                return
            it = db.iteritems()
            if after is None:
                it.seek_to_first()
            else:
                it.seek(after + b"\0")  # the smallest key after the last one read
            raw = list(islice(it, size))
            del it
            if not raw:
                return
            after = raw[-1][0]
            yield [(store._decode_key(k), store._decode_value(v)) for k, v in raw if k != store.offset_key]
