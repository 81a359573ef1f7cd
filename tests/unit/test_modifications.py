import json
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from schemas.validation import InvalidEvent, validate_order_change
from streams.config import ConfigError, parse_settings
from streams.core.csvfile import conversion_row, render
from streams.core.changes import (MODIFICATION_HEADER, duplicate_of, modification_row, order_amount,
                                   remaining_items, reported_order)

SCHEMAS = Path(__file__).parents[2] / "schemas"
BASE = {"impact": {"campaign_id": 1000, "action_tracker_id": 4321},
        "connections": [{"name": "outbox", "method": "fsspec", "url": "/tmp/imref-outbox"}]}
CHANGE = {"change_id": "R1", "order_id": "O1", "customer_id": "C1", "occurred_at": "2026-11-20T10:00:00+01:00",
          "kind": "partial_return", "reason": "RETURNED", "items": [{"sku": "A", "quantity": 1, "amount": "10.00"}]}
AT = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)


def item(sku, qty, amount, **extra):
    return {"order_id": "O1", "customer_id": "C1", "occurred_at": AT.isoformat(), "currency": "EUR",
            "amount": amount, "category": "Garden", "sku": sku, "quantity": qty, **extra}


# -- the order-change contract ------------------------------------------------------------------
def test_valid_changes_pass():
    for kind in ("cancellation", "full_return"):
        event = {k: v for k, v in CHANGE.items() if k != "items"}
        assert validate_order_change(orjson.dumps({**event, "kind": kind}), b"C1")["kind"] == kind
    assert validate_order_change(orjson.dumps(CHANGE), b"C1")["items"][0]["sku"] == "A"


@pytest.mark.parametrize("patch, key, reason", [
    ({"kind": "exchange"}, b"C1", "schema_violation"),
    ({"items": None}, b"C1", "schema_violation"),  # partial_return needs its items
    ({"items": []}, b"C1", "schema_violation"),
    ({"items": [{"sku": "A", "quantity": 0, "amount": "1"}]}, b"C1", "schema_violation"),
    ({"items": [{"sku": "A", "quantity": 1, "amount": "-1"}]}, b"C1", "schema_violation"),
    ({"reason": ""}, b"C1", "schema_violation"),
    ({"occurred_at": "2026-11-20T10:00:00"}, b"C1", "schema_violation"),
    ({"order_id": "O" * 65}, b"C1", "id_too_long"),
    ({"change_id": None}, b"C1", "schema_violation"),  # without it a producer retry cannot be told apart
    ({"change_id": ""}, b"C1", "schema_violation"),
    ({"change_id": "R" * 65}, b"C1", "id_too_long"),
    ({"customer_id": "jane@example.com"}, b"jane@example.com", "personal_data_in_customer_id"),
    ({"customer_id": "+44 20 7946 0958"}, b"+44 20 7946 0958", "personal_data_in_customer_id"),
    ({}, b"C2", "key_mismatch"),
])
def test_invalid_changes_carry_the_dead_letter_reason(patch, key, reason):
    event = {k: v for k, v in {**CHANGE, **patch}.items() if v is not None}
    with pytest.raises(InvalidEvent) as exc:
        validate_order_change(orjson.dumps(event), key)
    assert exc.value.reason == reason


def test_malformed_change_is_malformed_json():
    with pytest.raises(InvalidEvent) as exc:
        validate_order_change(b'{"order_id": ', b"C1")
    assert exc.value.reason == "malformed_json"


def test_change_schema_shares_the_order_item_definitions():
    change = json.loads((SCHEMAS / "order-change.schema.json").read_text())
    order_item = json.loads((SCHEMAS / "order-item.schema.json").read_text())
    assert change["$schema"] == order_item["$schema"] == "http://json-schema.org/draft-07/schema#"
    for name in ("customer_id", "occurred_at", "decimal"):
        assert change["definitions"][name] == order_item["definitions"][name]
    assert change["properties"]["order_id"] == order_item["properties"]["order_id"]


# -- rows ---------------------------------------------------------------------------------------
def reported(*items):
    rows = [conversion_row(1000, 4321, i, AT, "CLICK") for i in items]
    return reported_order(rows, "conversions_x.csv", 7, "2026-11-20T09:05:00+00:00")


def test_reported_order_keeps_tracker_currency_and_items_merged_by_sku():
    order = reported(item("A", 2, "20.00"), item("B", 1, "10.00"), item("A", 1, "5.5"))
    assert order["action_tracker_id"] == 4321 and order["currency"] == "EUR"
    assert order["items"] == {"A": [3, "25.50"], "B": [1, "10.00"]}
    assert order["first_offset"] == 7 and order["applied"] == {} and order["changes"] == {}


def test_a_change_id_seen_at_another_offset_is_a_duplicate_but_a_re_read_is_not():
    order = {**reported(item("A", 1, "20.00")), "changes": {"R1": 12}}
    assert duplicate_of(order, CHANGE, 12) is None  # the same record read again after a restart
    assert duplicate_of(order, CHANGE, 15) == 12  # the producer sent it twice
    assert duplicate_of(order, {**CHANGE, "change_id": "R2"}, 15) is None


def test_partial_return_takes_the_returned_items_off():
    items = remaining_items(reported(item("A", 2, "20.00"), item("B", 1, "10.00"))["items"], CHANGE)
    assert items == {"A": [1, "10.00"], "B": [1, "10.00"]}
    assert order_amount(items) == "20.00"


def test_a_fully_returned_item_is_gone_whatever_was_refunded():
    change = {**CHANGE, "items": [{"sku": "A", "quantity": 2, "amount": "15.00"}]}
    items = remaining_items(reported(item("A", 2, "20.00"), item("B", 1, "10.00"))["items"], change)
    assert order_amount(items) == "10.00"


def test_returned_skus_never_reported_take_nothing_off():
    order = reported(item("A", 1, "20.00"))
    change = {**CHANGE, "items": [{"sku": "Z", "quantity": 1, "amount": "5.00"}]}
    assert remaining_items(order["items"], change) == order["items"]


def test_returns_never_make_an_amount_negative():
    change = {**CHANGE, "items": [{"sku": "A", "quantity": 1, "amount": "99.00"}]}
    assert order_amount(remaining_items(reported(item("A", 2, "20.00"))["items"], change)) == "0"


@pytest.mark.parametrize("kind", ["cancellation", "full_return"])
def test_cancellation_and_full_return_reverse_with_amount_zero_and_no_currency(kind):
    order = reported(item("A", 2, "20.00"))
    amount = order_amount(remaining_items(order["items"], {**CHANGE, "kind": kind}))
    assert amount == "0"
    assert modification_row("O1", order, amount, "CANCELLED") == ("O1", "4321", "0", "", "CANCELLED")


def test_modification_row_names_the_order_verbatim_and_rounds_to_cents():
    order = reported(item("A", 1, "10.0049"), item("B", 1, "0.0001"))
    amount = order_amount(order["items"])
    assert amount == "10.01"
    row = modification_row("=O1", order, amount, "ITEM_RETURNED")
    assert row == ("=O1", "4321", "10.01", "EUR", "ITEM_RETURNED")
    assert render([row], MODIFICATION_HEADER) == (b"OrderId,ActionTrackerId,Amount,CurrencyCode,Reason\r\n"
                                                  b"=O1,4321,10.01,EUR,ITEM_RETURNED\r\n")


def test_a_returned_sku_matches_the_cell_it_was_reported_in():
    order = reported(item("-A", 1, "10.00"), item("B", 1, "5.00"))
    change = {**CHANGE, "items": [{"sku": "-A", "quantity": 1, "amount": "10.00"}]}
    assert order_amount(remaining_items(order["items"], change)) == "5.00"


# -- extra conversion columns -------------------------------------------------------------------
EXTRAS = [{"column": "OrderPromoCode", "field": "promo_code"}, {"column": "OrderDiscount", "field": "order_discount"},
          {"column": "CustomerStatus", "field": "customer_status"}]


def test_extra_columns_follow_the_base_columns_in_config_order():
    s = parse_settings({**BASE, "impact": {**BASE["impact"], "extra_columns": EXTRAS}})
    assert s.impact.csv_header[11:] == ("OrderPromoCode", "OrderDiscount", "CustomerStatus")
    assert len(s.impact.csv_header) == 14
    row = conversion_row(1000, 4321, item("A", 1, "1.00", promo_code="+X", order_discount="2.50"), AT, "c",
                         s.impact.extra_fields)
    assert row[11:] == ("+X", "2.50", "")
    header = render([row], s.impact.csv_header).split(b"\r\n")[0]
    assert header.endswith(b",Quantity,OrderPromoCode,OrderDiscount,CustomerStatus")


def test_no_extra_columns_keeps_the_seed_header():
    assert parse_settings(BASE).impact.csv_header == tuple(
        "CampaignId,ActionTrackerId,EventDate,OrderId,ClickId,CustomerId,CurrencyCode,Amount,Category,Sku,Quantity"
        .split(","))


@pytest.mark.parametrize("extras, message", [
    ([{"column": "Amount", "field": "amount"}], "base columns"),
    ([{"column": "FavouriteColour", "field": "promo_code"}], "not in impact's field reference"),
    ([{"column": "OrderPromoCode", "field": "promo_code"}, {"column": "OrderPromoCode", "field": "promo_code"}],
     "must be unique"),
    ([{"column": "OrderPromoCode", "field": "coupon"}], "not a field of schemas/order-item.schema.json"),
    ([{"column": "OrderPromoCode"}], "impact.extra_columns.0.field"),
])
def test_extra_column_errors_name_the_key(extras, message):
    with pytest.raises(ConfigError) as exc:
        parse_settings({**BASE, "impact": {**BASE["impact"], "extra_columns": extras}})
    assert "impact.extra_columns" in str(exc.value) and message in str(exc.value)


@pytest.mark.parametrize("patch, message", [
    ({"modifications": {"file_title": "result_mods"}}, "modifications.file_title"),
    ({"modifications": {"file_title": "conversions"}}, "must differ from batch.file_title"),
])
def test_modification_file_title_is_checked(patch, message):
    with pytest.raises(ConfigError) as exc:
        parse_settings({**BASE, **patch})
    assert message in str(exc.value)
