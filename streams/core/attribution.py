"""Which click attributes an order item: a pure function of the customer's recent clicks.

The table keeps a short, time-ordered history per customer rather than only the newest click,
so a click that lands after an order cannot take over an order it did not lead to, and the
answer for an item does not change when the item is re-processed after a crash.
"""
from __future__ import annotations

from bisect import insort

# (epoch seconds, im_ref), oldest first
History = list[tuple[float, str]]


def remember(history: History | None, at: float, im_ref: str, keep: int, window_s: float) -> History:
    """Add a click; drop duplicates, clicks beyond ``keep`` and clicks a window older than the newest."""
    clicks = [tuple(c) for c in history or ()]
    if (at, im_ref) not in clicks:
        insort(clicks, (at, im_ref))
    newest = clicks[-1][0]
    return [c for c in clicks[-keep:] if newest - c[0] <= window_s]


def attribute(history: History | None, item_at: float, window_s: float, skew_s: float) -> str | None:
    """The last click at or before the item, inside the window; failing that, the first click
    up to ``skew_s`` after it (the click collector's and checkout's clocks disagree a little)."""
    before = None
    for at, im_ref in history or ():
        if item_at - window_s <= at <= item_at:
            before = im_ref
        elif item_at < at <= item_at + skew_s and before is None:
            return im_ref
    return before
