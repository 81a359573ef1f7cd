"""The sweep of bounded state: a table's expiry rule (``streams.core.expiry``) applied to the
partitions of the table this worker actively owns, every ``sweep_interval_s``, a chunk of keys at
a time with the event loop free between chunks: deletes go to the store and as tombstones to the
changelog, trimmed values as ordinary table writes.
"""
from __future__ import annotations

import asyncio
import logging
import time

from ..core.expiry import Rule, rules, split
from .tables import TableWriter

log = logging.getLogger(__name__)

CHUNK = 1000  # keys decided between two yields to the event loop: ~10 ms of work (bench.state_size)


class Sweeper:
    def __init__(self, app, writer: TableWriter, rule: Rule):
        self.app, self.writer, self.rule = app, writer, rule
        self.name = writer.table.name
        self.changelog = writer.table.changelog_topic.get_topic_name()

    def owned(self) -> list[int]:
        """Partitions this worker may write now: actively assigned, recovered, not rebalancing.
        A tombstone for a partition another worker owns could land after that worker's write."""
        recovery = self.app.tables.recovery
        if self.app.rebalancing or recovery.in_recovery or not recovery.completed.is_set():
            return []
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.changelog)

    async def sweep(self) -> None:
        """One pass over the partitions this worker owns."""
        now = time.time()
        deleted = trimmed = 0
        for partition in self.owned():
            for chunk in self.writer.chunks(partition, CHUNK):
                if partition not in self.owned():  # revoked while the loop was free
                    break
                gone, renewed = split(chunk, self.rule, now)
                self.writer.delete(partition, gone)
                self.writer.put(partition, renewed)
                deleted, trimmed = deleted + len(gone), trimmed + len(renewed)
                await asyncio.sleep(0)
        if deleted or trimmed:
            log.info("table %s: %d expired keys deleted, %d values trimmed", self.name, deleted, trimmed)


def install(app, settings, writer: TableWriter) -> None:
    sweeper = Sweeper(app, writer, rules(settings)[writer.table.name])

    async def sweep() -> None:  # Faust hands the app to a timer function that takes an argument
        try:
            await sweeper.sweep()
        except Exception:  # the next interval tries again; the worker's real work goes on meanwhile
            log.exception("sweep of table %s failed", sweeper.name)

    app.timer(interval=settings.sweep_interval_s, name=f"sweep {sweeper.name}")(sweep)
