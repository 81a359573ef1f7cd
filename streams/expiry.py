"""Bounded state: what no event can use any more leaves the tables, store and changelog alike.

Two rules, both on event or report time kept in the value, against the wall clock:

- ``clicks``: a click older than the attribution window (plus the grace, plus
  ``attribution.keep_late_days`` for items that arrive late) attributes nothing; it is dropped
  from its customer's history, and a history left empty is deleted.
- ``reported-orders``: once ``modifications.keep_days`` have passed since an order was reported
  or last changed, impact has locked its action and accepts no modification of it.

A ``Sweeper`` applies a rule to the partitions of a table this worker actively owns, every
``sweep_interval_s``, a chunk of keys at a time with the event loop free between chunks: deletes
go to the store and as tombstones to the changelog, trimmed values as ordinary table writes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any, Callable

from .attribution import History
from .tablewrites import TableWriter

log = logging.getLogger(__name__)

CHUNK = 1000  # keys decided between two yields to the event loop: ~10 ms of work (bench.state_size)
DAY = 86400.0

# rule(value, now) -> the value unchanged (same object), a new value to write, or None to delete
Rule = Callable[[Any, float], Any]


def click_rule(window_s: float, grace_s: float, late_s: float) -> Rule:
    def fresh(history: History, now: float):
        cutoff = now - window_s - grace_s - late_s
        kept = [c for c in history if c[0] >= cutoff]
        if not kept:
            return None
        return history if len(kept) == len(history) else kept
    return fresh


def order_rule(keep_s: float) -> Rule:
    def fresh(order: dict, now: float):
        last = max(datetime.fromisoformat(order[k]).timestamp() for k in ("reported_at", "changed_at") if order.get(k))
        return order if last >= now - keep_s else None
    return fresh


def rules(settings) -> dict[str, Rule]:
    """The rule of each table, from the settings: the worker's and the state benchmark's one source."""
    a = settings.attribution
    return {"clicks": click_rule(a.window_days * DAY, a.grace_s, a.keep_late_days * DAY),
            "reported-orders": order_rule(settings.modifications.keep_days * DAY)}


def split(chunk: list[tuple[Any, Any]], rule: Rule, now: float) -> tuple[list, dict]:
    """The keys of ``chunk`` to delete, and the keys to rewrite with their trimmed values."""
    gone, renewed = [], {}
    for key, value in chunk:
        kept = rule(value, now)
        if kept is None:
            gone.append(key)
        elif kept is not value:
            renewed[key] = kept
    return gone, renewed


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
