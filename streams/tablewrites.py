"""Writing Faust tables from batch handlers and delivery lanes, outside any Faust stream.

A RocksDB store picks the partition database of a write from the stream's current event, and
``Table.__setitem__`` asks it for the changelog partition; our writers know the partition
themselves. ``in_partition`` gives the store that answer; ``TableWriter`` writes the store and
sends the changelog record explicitly (the one thing a Faust table write does beyond that is
a TTL and sensor, which these tables do not use).
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager

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
        self.get = raw.get if isinstance(raw, dict) else table.data.get

    def put(self, partition: int, items: dict) -> list:
        """Write ``items`` (key -> value) of one partition; returns the changelog sends to await
        when the caller needs them confirmed (Faust's commit flushes them before offsets)."""
        store, send = self.table.data, self.table.send_changelog
        with in_partition(partition):
            for key, value in items.items():
                store[key] = value
        return [send(partition, key, value) for key, value in items.items()]
