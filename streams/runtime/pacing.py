"""Empty fetches paced, for brokers that answer them at once.

Kafka holds a fetch that has nothing to return for up to ``fetch.max.wait.ms`` (Faust asks for
1.5 s), so an idle consumer sends about one request a second. noida-db 0.2.3 (the embedded
default broker) answers at once, and aiokafka's fetcher asks again straight away: an idle worker
spent 50-90 % of a core sending tens of thousands of fetches a minute, and a busy one did the same
wherever it waited (a drained partition, the last batch's ``max_age_s``).

So a fetch that brings no record and came back sooner than ``PACE_S`` after it was sent waits out
the rest before the fetcher may send that broker its next one. Against Kafka, which held the
fetch, nothing changes; elsewhere a record produced meanwhile waits at most ``PACE_S`` longer.
"""
from __future__ import annotations

import asyncio
from time import monotonic

from faust.transport.drivers import aiokafka as faust_aiokafka

PACE_S = 0.05


def pace_empty_fetches(fetcher, pace_s: float = PACE_S) -> None:
    """Wrap aiokafka's per-broker fetch step (``Fetcher._proc_fetch_request``, which returns
    whether it buffered anything; the fetcher sends that broker nothing while it runs)."""
    fetch = fetcher._proc_fetch_request

    async def paced(assignment, node_id, request):
        sent = monotonic()
        buffered = await fetch(assignment, node_id, request)
        if not buffered:
            rest = pace_s - (monotonic() - sent)
            if rest > 0:
                try:
                    await asyncio.sleep(rest)
                except asyncio.CancelledError:
                    # As aiokafka's own step ends when cancelled: its close awaits it, and a
                    # step that raised would fail the consumer's stop.
                    return buffered
        return buffered

    fetcher._proc_fetch_request = paced


class PacedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, its aiokafka consumer's empty fetches paced."""

    async def on_start(self) -> None:
        await super().on_start()  # creates and starts the aiokafka consumer, and with it its fetcher
        pace_empty_fetches(self._consumer._fetcher)
