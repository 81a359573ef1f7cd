"""Side-output topics (dead letters, unattributed items, refused and unmatched records) written as
record batches.

Faust's ``send_soon`` takes each record through a ``FutureMessage``, its producer buffer's
coroutine and an aiokafka send with a future of its own: tens of µs per record, paid for every
re-sent order item the audit topic receives (6 % of the chaos suite's traffic) and for every item
of a backlog that outruns its clicks. Here the records of one event-loop turn (a fetch handler runs
in one turn) go to aiokafka as record batches (``create_batch``/``send_batch``, as the tables'
changelog writes do), each to the partition aiokafka's own partitioner picks for its key, so a
record lands where Faust's send would have put it. All records of a turn share one future: it is
done once the broker acknowledged every batch of the turn, and it fails (stopping the worker
through ``stop``) when any of them is refused.
"""
from __future__ import annotations

import asyncio

from ..delivery.failures import Stop, log_only, owned
from .tables import record_batches


class BatchedTopic:
    """A Faust topic's ``send_soon`` for raw key and value bytes, a turn's records at a time."""

    def __init__(self, topic, stop: Stop = log_only):
        self.topic, self.stop = topic, stop
        self.name = topic.get_topic_name()
        self._pending: list[tuple[bytes | None, bytes | None, list]] = []
        self._turn: asyncio.Future | None = None
        # One turn's batches enter the producer before the next turn's: the topic keeps their order.
        self._enqueue = asyncio.Lock()

    def get_topic_name(self) -> str:
        return self.name

    def send_soon(self, *, key: bytes | None, value: bytes | None, headers: list) -> asyncio.Future:
        """Queue one record; the future is done once the broker has it (with the turn's others)."""
        if self._turn is None:
            self._pending = []
            self._turn = owned(self._publish(self._pending), f"sending records to {self.name}", self.stop)
        self._pending.append((key, value, headers))
        return self._turn

    async def _publish(self, records: list) -> None:
        # A task starts on the loop's next turn: every send of the turn that created it is in
        # ``records`` now, and the next send opens the next turn's list.
        self._turn = None
        producer = self.topic.app.producer._ensure_producer()
        await producer.partitions_for(self.name)  # the partitioner needs the topic's metadata
        by_partition: dict[int, list] = {}
        for key, value, headers in records:
            partition = producer._partition(self.name, None, None, None, key, value)
            by_partition.setdefault(partition, []).append((key, value, headers))
        async with self._enqueue:
            sent = [await producer.send_batch(batch, self.name, partition=partition)
                    for partition, part in by_partition.items()
                    for batch in record_batches(part, producer.create_batch)]
        await asyncio.gather(*sent)
