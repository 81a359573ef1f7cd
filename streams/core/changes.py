"""Returns and cancellations: the rules that turn an order change into an impact action
modification, without I/O.

impact applies a modification to an action it already has, found by OrderId + ActionTrackerId
(the newest action when an OrderId was reported more than once); the file carries the order's
new total and a reason code, and Amount 0 reverses the action. This is impact's order-level
Batch Modifications & Reversals format (the seeds define only the conversion file).

So a change can only be turned into a row for an order this worker reported: the
``reported-orders`` value (``reported_order``) is what a delivered conversion file said about
the order, and ``apply_change`` decides what a change does to it.
"""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple

from schemas import CSV_HEADER

from .csvfile import Row

MODIFICATION_HEADER = ("OrderId", "ActionTrackerId", "Amount", "CurrencyCode", "Reason")
ORDER_NOT_REPORTED = "order_not_reported"
NOTHING_TO_CHANGE = "nothing_to_change"
DUPLICATE_CHANGE = "duplicate_change"

_TRACKER, _CURRENCY, _AMOUNT, _SKU, _QUANTITY = (
    CSV_HEADER.index(c) for c in ("ActionTrackerId", "CurrencyCode", "Amount", "Sku", "Quantity"))
_CENT = Decimal("0.01")


def reported_order(rows: list[Row], file: str, first_offset: int, reported_at: str, known: dict | None = None) -> dict:
    """The ``reported-orders`` value for the rows of one order in one delivered file; ``known``:
    the order's earlier part, when it is an order larger than a file (the only order in two)."""
    items: dict[str, list] = dict(known["items"]) if known else {}
    for row in rows:
        quantity, amount = items.get(row[_SKU], (0, "0"))
        items[row[_SKU]] = [quantity + int(row[_QUANTITY]), str(Decimal(amount) + Decimal(row[_AMOUNT]))]
    if known:
        return {**known, "items": items, "files": [*reported_files(known), file]}
    return {"action_tracker_id": int(rows[0][_TRACKER]), "currency": rows[0][_CURRENCY], "items": items,
            "files": [file], "first_offset": first_offset, "reported_at": reported_at, "applied": {},
            "changes": {}}


def reported_files(order: dict) -> list[str]:
    return order.get("files") or [order["file"]]  # "file": written before orders were kept whole


def duplicate_of(order: dict, change: dict, offset: int) -> int | None:
    """Offset of an earlier record with this change's change_id. A producer that retries a send
    writes the change again at a new offset; applying it twice would take a return off twice."""
    seen = order.get("changes", {}).get(change["change_id"])
    return None if seen is None or seen == offset else seen


def remaining_items(items: dict, change: dict) -> dict:
    """What is left of the reported items after the change. Keys are the SKU cells as written
    to the conversion file; a returned SKU that was never reported takes nothing off."""
    if change["kind"] != "partial_return":
        return {sku: [0, "0"] for sku in items}
    left = {sku: [quantity, Decimal(amount)] for sku, (quantity, amount) in items.items()}
    for returned in change["items"]:
        held = left.get(returned["sku"])
        if held is None:
            continue
        held[0] = max(held[0] - returned["quantity"], 0)
        # Once every unit is back nothing of the item remains, whatever refund the event states.
        held[1] = Decimal(0) if held[0] == 0 else max(held[1] - Decimal(returned["amount"]), Decimal(0))
    return {sku: [quantity, str(amount)] for sku, (quantity, amount) in left.items()}


def order_amount(items: dict) -> str:
    """impact's Amount for the order: the sum of what remains, 2 decimals; exactly ``0`` reverses."""
    total = sum((Decimal(amount) for _, amount in items.values()), Decimal(0))
    return "0" if total == 0 else str(total.quantize(_CENT, ROUND_HALF_UP))


def modification_row(order_id: str, order: dict, amount: str, reason: str) -> Row:
    # A reversal carries no currency: impact lists none for reversals, and 0 needs none.
    currency = "" if amount == "0" else order["currency"]
    return (order_id, str(order["action_tracker_id"]), amount, currency, reason)



class Outcome(NamedTuple):
    """What one order change does: a row for the modification file and the order's new value to
    write (None when unchanged), or the reason it goes to the unmatched topic instead."""
    row: Row | None = None
    order: dict | None = None
    unmatched: str | None = None
    detail: str = ""


def apply_change(order: dict | None, change: dict, offset: int) -> Outcome:
    """The change at ``offset`` applied to the reported ``order``. A re-read of an applied change
    finds its amount in ``applied`` and gives the same row, writing nothing."""
    if order is None:
        return Outcome(unmatched=ORDER_NOT_REPORTED, detail="no conversion with this order id was delivered")
    done, updated = order["applied"].get(str(offset)), None
    if done is None:
        if duplicate_of(order, change, offset) is not None:
            return Outcome(unmatched=DUPLICATE_CHANGE, detail="this change_id was already applied to the order")
        items = remaining_items(order["items"], change)
        done = order_amount(items)
        if done == order_amount(order["items"]):
            return Outcome(unmatched=NOTHING_TO_CHANGE, detail="the reported amount would not change")
        # The next change of the order starts from this state, and ``changed_at`` keeps the order
        # in the table for ``modifications.keep_days`` more (core.expiry).
        order = updated = {**order, "items": items, "applied": {**order["applied"], str(offset): done},
                           "changes": {**order.get("changes", {}), change["change_id"]: offset},
                           "changed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return Outcome(modification_row(change["order_id"], order, done, change["reason"]), updated)
