"""Writing Faust tables from batch handlers and delivery lanes, outside any Faust stream.

A RocksDB store picks the partition database of a write from the stream's current event, and
``Table.__setitem__`` asks it for the changelog partition; our writers know the partition
themselves. ``in_partition`` gives the store that answer; ``TableWriter`` writes (and deletes) in
the store and sends the changelog record (or tombstone) explicitly (the one thing a Faust table
write does beyond that is a TTL and sensor, which these tables do not use).
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from itertools import islice
from typing import Any, Iterator

from faust.streams import _current_event


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


class TableWriter:
    """Reads and writes of one Faust table by callers that are not Faust agents."""

    def __init__(self, table):
        self.table = table
        # The store itself (no per-read sensor and event lookup); the memory store's dict directly.
        raw = getattr(table.data, "data", None)
        self._memory = raw if isinstance(raw, dict) else None
        self.get = raw.get if self._memory is not None else table.data.get

    @staticmethod
    def reading(partition: int):
        """Reads inside go to the partition's database directly (RocksDB looks in all of them
        otherwise); a context manager."""
        return in_partition(partition)

    def put(self, partition: int, items: dict) -> list:
        """Write ``items`` (key -> value) of one partition; returns the changelog sends to await
        when the caller needs them confirmed (Faust's commit flushes them before offsets)."""
        store, send = self.table.data, self.table.send_changelog
        with in_partition(partition):
            for key, value in items.items():
                store[key] = value
        if self._memory is not None:
            # The memory store knows a key's partition only from recovery; the sweep needs it for
            # every key, and Faust uses it to drop the keys of partitions this worker lost.
            store._key_partition.update(dict.fromkeys(items, partition))
        return [send(partition, key, value) for key, value in items.items()]

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
        send = self.table.send_changelog
        return [send(partition, key, None, value_serializer="raw") for key in keys]

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
