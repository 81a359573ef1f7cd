"""The producer keeps metadata for every topic the worker writes to (``track_topics``).

aiokafka's producer does not track a topic it first learnt from the full metadata fetch it makes
at start; once it tracks another topic, the untracked one drops out of its metadata and a batch
already waiting for it never leaves (a worker's stop then hung in "Flush producer buffer", with
the clicks changelog's batches stuck: tests/integration/test_web.py, 1 run in 4 here). The control
shows the sequence really strands a batch; the fix must let the same batch through."""
from __future__ import annotations

import asyncio
import itertools

import pytest
from aiokafka import AIOKafkaProducer

from streams.runtime.app import track_topics
from streams.tools.devbroker import create_topics

pytestmark = pytest.mark.integration
_n = itertools.count()


async def strand(bootstrap: str, tracked: bool) -> bool:
    """True when a batch for a topic known from the start is still waiting once another topic
    was first written to."""
    run = next(_n)
    early, late = f"meta-{run}-early", f"meta-{run}-late"
    create_topics(bootstrap, [early], 1)
    # The batch lingers 1 s: long enough for the next send to make the producer track ``late``.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1000)
    await producer.start()  # the full fetch: ``early`` is known, not tracked
    try:
        if tracked:
            await track_topics(producer, [early])
        create_topics(bootstrap, [late], 1)
        waiting = await producer.send(early, b"v")
        await producer.send_and_wait(late, b"v")  # tracking ``late`` refreshes metadata for it alone
        try:
            await asyncio.wait_for(asyncio.shield(waiting), 5)
        except asyncio.TimeoutError:
            return True
        return False
    finally:
        try:
            await asyncio.wait_for(producer.stop(), 5)
        except asyncio.TimeoutError:  # a stranded batch holds the stop too (the worker's hang)
            pass


def test_a_topic_known_from_the_start_is_stranded_unless_tracked(broker):
    async def run():
        assert await strand(broker.bootstrap, tracked=False), "control: the untracked topic's batch left"
        assert not await strand(broker.bootstrap, tracked=True)

    asyncio.run(run())
