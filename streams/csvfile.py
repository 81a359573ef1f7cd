"""impact's item-level conversion file: the seed's 11 columns, RFC 4180, formula-safe cells."""
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


def conversion_row(campaign_id: int, action_tracker_id: int, item: dict, occurred: datetime, click_id: str) -> Row:
    return (
        str(campaign_id),
        str(action_tracker_id),
        occurred.isoformat(timespec="seconds"),
        neutralise(item["order_id"]),
        neutralise(click_id),
        neutralise(item["customer_id"]),
        item["currency"],
        item["amount"],
        neutralise(item["category"]),
        neutralise(item["sku"]),
        str(item["quantity"]),
    )


def render(rows: list[Row]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    return out.getvalue().encode()
