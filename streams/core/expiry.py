"""Bounded state: what no event can use any more leaves the tables, store and changelog alike.

Two rules, both on event or report time kept in the value, against the wall clock:

- ``clicks``: a click older than the attribution window (plus the grace, plus
  ``attribution.keep_late_days`` for items that arrive late) attributes nothing; it is dropped
  from its customer's history, and a history left empty is deleted.
- ``reported-orders``: once ``modifications.keep_days`` have passed since an order was reported
  or last changed, impact has locked its action and accepts no modification of it.
- ``orders``: the record that an order is in a file stops a re-sent order for
  ``modifications.keep_days`` after its batch was cut (``at``): impact's action is locked by
  then, and what is refused beyond it is what impact itself would keep apart by time.

The worker's sweep (``streams.runtime.sweep``) applies them to the partitions it owns.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from .attribution import History

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


def taken_rule(keep_s: float) -> Rule:
    def fresh(record: dict, now: float):
        return record if record["at"] >= now - keep_s else None
    return fresh


def rules(settings) -> dict[str, Rule]:
    """The rule of each table, from the settings: the worker's and the state benchmark's one source."""
    a, keep_s = settings.attribution, settings.modifications.keep_days * DAY
    return {"clicks": click_rule(a.window_days * DAY, a.grace_s, a.keep_late_days * DAY),
            "reported-orders": order_rule(keep_s), "orders": taken_rule(keep_s)}


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
