"""impact's batch files: the seed's 11 conversion columns (plus configured extras), RFC 4180,
formula-safe cells; ``render`` also writes the action-modification file (streams.flow.changes)."""
from __future__ import annotations

import csv
import io
from datetime import datetime

from schemas import CSV_HEADER

Row = tuple[str, ...]
_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    # A leading apostrophe makes spreadsheet tools show the text instead of evaluating it.
    return "'" + cell if cell.startswith(_FORMULA_LEADS) else cell


def cell(value) -> str:
    """An optional event field as a cell: absent is empty, text is neutralised."""
    if value is None:
        return ""
    return neutralise(value) if isinstance(value, str) else str(value)


def event_date(text: str, occurred: datetime) -> str:
    """``occurred`` as ``YYYY-MM-DDTHH:MM:SS+HH:MM``: the event's own text when it is already in
    that form (formatting a datetime costs more than the rest of the row)."""
    if len(text) == 25 and text[10] == "T" and text[22] == ":":
        return text
    return occurred.isoformat(timespec="seconds")


def conversion_row(campaign_id: int, action_tracker_id: int, item: dict, occurred: datetime, click_id: str,
                   extra_fields: tuple[str, ...] = ()) -> Row:
    """``occurred``: the item's ``occurred_at``, parsed."""
    row = (
        str(campaign_id),
        str(action_tracker_id),
        event_date(item["occurred_at"], occurred),
        neutralise(item["order_id"]),
        neutralise(click_id),
        neutralise(item["customer_id"]),
        item["currency"],
        item["amount"],
        neutralise(item["category"]),
        neutralise(item["sku"]),
        str(item["quantity"]),
    )
    return row + tuple(cell(item.get(f)) for f in extra_fields) if extra_fields else row


def render(rows: list[Row], header: tuple[str, ...] = CSV_HEADER) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()
