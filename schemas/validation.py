"""Validation of raw click and order-item records against the contracts.

The JSON Schemas do the structural work (compiled once with fastjsonschema); what a schema
cannot say -- a date relative to now -- is checked here. Every rejection carries a stable
reason code (dead-letter header and metric label) and a human-readable detail.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from datetime import datetime, timedelta

import fastjsonschema
import orjson

from . import load
from .quickcheck import Unsupported, compile_quick

MALFORMED_JSON = "malformed_json"
SCHEMA_VIOLATION = "schema_violation"
UNKNOWN_CURRENCY = "unknown_currency"
ID_TOO_LONG = "id_too_long"
PERSONAL_DATA = "personal_data_in_customer_id"
EVENT_DATE_TOO_OLD = "event_date_too_old"
EVENT_DATE_IN_FUTURE = "event_date_in_future"
KEY_MISMATCH = "key_mismatch"
INVALID_CLICK_ID = "invalid_click_id"
CONTROL_CHARACTER = "control_character"
AMOUNT_PRECISION = "amount_precision"
AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
ORDER_TOO_LARGE = "order_too_large"

# impact's conversion field reference gives money fields as DECIMAL(p,s): Amount (8,2),
# OrderDiscount (12,2), OrderShipping and OrderTax (14,2) -- at most p-s digits before the point.
DECIMAL_SIZES = {"amount": (8, 2), "order_discount": (12, 2), "order_shipping": (14, 2), "order_tax": (14, 2)}

_ID_FIELDS = {"customer_id", "order_id", "change_id", "im_ref"}
FUTURE_TOLERANCE = timedelta(days=1)
# The schemas' one customer-id rule (every contract shares the definition), applied once more to
# what a reader sees: NFKC folds look-alikes (＠ to @, fullwidth digits to 0-9) and invisible
# format characters are dropped, so "jane＠example.com" is refused like "jane@example.com".
_CUSTOMER_ID = re.compile(load("click.schema.json")["definitions"]["customer_id"]["pattern"])


class InvalidEvent(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _reason(exc: fastjsonschema.JsonSchemaValueException) -> str:
    field = exc.path[-1] if len(exc.path) > 1 else ""
    if field == "currency" and exc.rule == "enum":
        return UNKNOWN_CURRENCY
    if field in _ID_FIELDS and exc.rule == "maxLength":
        return ID_TOO_LONG
    if exc.rule == "pattern" and isinstance(exc.value, str) and _CONTROL.search(exc.value):
        return CONTROL_CHARACTER
    if field == "im_ref" and exc.rule == "pattern":
        return INVALID_CLICK_ID
    if field == "customer_id" and exc.rule == "pattern":
        return PERSONAL_DATA
    return SCHEMA_VIOLATION


def _detail(exc: fastjsonschema.JsonSchemaValueException) -> str:
    if exc.rule == "required":  # names the missing fields; the object's values stay out of it
        return f"{exc.name} lacks {', '.join(f for f in exc.rule_definition if f not in exc.value)}"
    return f"{exc.name} {exc.rule}"


def _sibling(uri: str) -> dict:
    """A ``$ref`` to another contract of this package (order.schema.json refers to the item's
    rules), resolved from the package instead of the ``$id`` host."""
    return load(uri.rsplit("/", 1)[1])


def parse(raw: bytes):
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(MALFORMED_JSON, str(exc)) from None


class Validator:
    """Parses and validates one kind of event; ``__call__`` returns the event as a dict."""

    def __init__(self, schema_file: str):
        schema = load(schema_file)
        try:
            self._quick = compile_quick(schema)
        except Unsupported:
            self._quick = lambda event: False
        # after compile_quick: fastjsonschema rewrites the schema it is given
        self._check = fastjsonschema.compile(schema, handlers={"https": _sibling})

    def __call__(self, raw: bytes, key: bytes | None = None) -> dict:
        return self.check(parse(raw), key)

    def check(self, event, key: bytes | None = None) -> dict:
        """An event already parsed from JSON."""
        try:
            if not self._quick(event):
                self._check(event)
        except fastjsonschema.JsonSchemaValueException as exc:
            # The message names the field, never echoes its value (it may be personal data).
            raise InvalidEvent(_reason(exc), _detail(exc)) from None
        customer_id = event.get("customer_id") if isinstance(event, dict) else None
        if isinstance(customer_id, str) and not customer_id.isascii() and not _CUSTOMER_ID.match(_as_seen(customer_id)):
            raise InvalidEvent(PERSONAL_DATA, "customer_id is an e-mail address or phone number in look-alike characters")
        if key is not None and key != event["customer_id"].encode():
            raise InvalidEvent(KEY_MISMATCH, "record key differs from customer_id (breaks co-partitioning)")
        return event


def _as_seen(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", text) if unicodedata.category(ch) != "Cf")


def event_time(event: dict) -> datetime:
    # fastjsonschema's date-time format already demanded RFC 3339, so a zone is present.
    return datetime.fromisoformat(event["occurred_at"])


@lru_cache
def _days(days: int) -> timedelta:
    return timedelta(days=days)


def check_event_age(occurred: datetime, now: datetime, max_age_days: int) -> None:
    if now - occurred > _days(max_age_days):
        raise InvalidEvent(EVENT_DATE_TOO_OLD, f"occurred_at is more than {max_age_days} days old; impact ignores it")
    if occurred - now > FUTURE_TOLERANCE:
        raise InvalidEvent(EVENT_DATE_IN_FUTURE, "occurred_at is more than a day in the future")


validate_click = Validator("click.schema.json")
validate_order_item = Validator("order-item.schema.json")
validate_order = Validator("order.schema.json")
validate_order_change = Validator("order-change.schema.json")


def impact_decimal(text: str, field: str, size: tuple[int, int]) -> str:
    """``text`` (a contract decimal: digits, optionally a point and up to 4 decimals) as impact's
    DECIMAL(p,s) takes it: decimals beyond ``s`` that are zeros are dropped; anything else that
    does not fit is refused, never rounded (it is money)."""
    precision, scale = size
    point = text.find(".")
    whole = text if point < 0 else text[:point]
    if len(whole.lstrip("0")) > precision - scale:
        raise InvalidEvent(AMOUNT_OUT_OF_RANGE, f"{field} has more than {precision - scale} digits before the point "
                                                f"(impact: DECIMAL({precision},{scale}))")
    if point >= 0 and len(text) - point - 1 > scale:
        if text[point + 1 + scale:].strip("0"):
            raise InvalidEvent(AMOUNT_PRECISION, f"{field} has more than {scale} decimals; impact takes "
                                                 f"DECIMAL({precision},{scale}) and money is never rounded here")
        return text[:point + 1 + scale]
    return text


def _impact_decimals(item: dict) -> dict:
    for field, size in DECIMAL_SIZES.items():
        value = item.get(field)
        if value is not None:
            fitted = impact_decimal(value, field, size)
            if fitted is not value:
                item[field] = fitted
    return item


def validate_order_record(raw: bytes, key: bytes | None = None, max_lines: int = 9999) -> tuple[list[dict], bool]:
    """A record of the order-items topic: an item event, or an order event (a record with an
    ``items`` array). Returns the order's lines as item-shaped dicts (an order event's fields
    with each line's), money fields as impact takes them, and whether the record is a whole
    order; an order of more than ``max_lines`` lines (a file's rows) is refused."""
    event = parse(raw)
    if type(event) is dict and "items" in event:
        order = validate_order.check(event, key)
        if len(order["items"]) > max_lines:
            raise InvalidEvent(ORDER_TOO_LARGE, f"{len(order['items'])} lines, more than a file holds "
                                                f"(batch.max_rows {max_lines}); send it as item events")
        head = {k: v for k, v in order.items() if k != "items"}
        return [_impact_decimals({**head, **line}) for line in order["items"]], True
    return [_impact_decimals(validate_order_item.check(event, key))], False
