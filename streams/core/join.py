"""The join of an order item to a click, as the worker and ``replay`` both do it."""
from __future__ import annotations

from datetime import datetime, timezone

from schemas.validation import check_event_age, event_time, validate_order_record

from .attribution import History, attribute

NO_CLICK = "no_click"
CLICK_OUTSIDE_WINDOW = "click_outside_window"


def parse_record(raw: bytes, key: bytes | None, max_age_days: float, now: datetime | None = None,
                 max_lines: int = 9999) -> tuple[list[dict], bool, datetime]:
    """A valid record of the order-items topic (an item event, or an order event of at most
    ``max_lines`` lines): its lines as items, whether it is a whole order, and its event time;
    or ``InvalidEvent`` with the dead-letter reason."""
    items, whole = validate_order_record(raw, key, max_lines)
    occurred = event_time(items[0])
    check_event_age(occurred, now or datetime.now(timezone.utc), max_age_days)
    return items, whole, occurred


def click_for(item: dict, occurred: datetime, history: History | None, window_s: float, grace_s: float) -> str | None:
    """The click id the item is attributed to: an ``im_ref`` put on the item at checkout wins over
    the customer's click history; None when neither gives one (yet)."""
    return item.get("im_ref") or attribute(history, occurred.timestamp(), window_s, grace_s)


def unattributed_reason(history: History | None) -> str:
    return CLICK_OUTSIDE_WINDOW if history else NO_CLICK


def origin_headers(record, reason: str, detail: str = "", files: tuple[str, ...] = ()) -> list[tuple[str, bytes]]:
    """Where a side-output record (dead letter, unattributed, unmatched, refused) came from, and
    for a refused record the file(s) its order is in; ``record`` has the fields of a fetched
    Kafka record."""
    headers = [
        ("imref.reason", reason.encode()),
        ("imref.detail", detail.encode()),
        ("imref.source.topic", record.topic.encode()),
        ("imref.source.partition", str(record.partition).encode()),
        ("imref.source.offset", str(record.offset).encode()),
    ]
    if files:
        headers.append(("imref.file", ",".join(files).encode()))
    return headers
