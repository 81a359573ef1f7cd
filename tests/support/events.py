"""Events as checkout and the click collector produce them, and the rows the worker writes, for
the integration tests and the chaos suite."""
from __future__ import annotations

from datetime import datetime

import orjson


def click(customer: str, ref: str, at: datetime, **extra) -> tuple[bytes, bytes]:
    """A click record (key, value)."""
    return customer.encode(), orjson.dumps({"customer_id": customer, "im_ref": ref, "occurred_at": at.isoformat(),
                                            **extra})


def item(customer: str, order: str, at: datetime, **fields) -> dict:
    """An order item; ``fields`` override the defaults (EUR 10.00, Garden, sku S1, quantity 1)."""
    return {"order_id": order, "customer_id": customer, "occurred_at": at.isoformat(), "currency": "EUR",
            "amount": "10.00", "category": "Garden", "sku": "S1", "quantity": 1, **fields}


def encode(event: dict) -> tuple[bytes, bytes]:
    """An event as a record keyed by its customer (key, value)."""
    return event["customer_id"].encode(), orjson.dumps(event)


def items(*events: dict) -> list[tuple[bytes, bytes]]:
    return [encode(e) for e in events]


def rows_of(files: dict[str, list[list[str]]]) -> list[tuple]:
    """Every row of every file (``read_csv_files``), headers left out."""
    return [tuple(row) for rows in files.values() for row in rows[1:]]
