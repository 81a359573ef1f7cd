"""The quick check says "valid" only where fastjsonschema, the authority, says valid too: compared
on thousands of generated events, each a valid one with one to three fields broken at random."""
import random

import fastjsonschema
import pytest

from schemas import load
from schemas.quickcheck import Unsupported, compile_quick

BAD_VALUES = ["", " ", "x" * 65, "x" * 256, "X" * 300, 0, -1, 1.0, 2.5, True, None, [], {}, "0", "1000001",
              1_000_001, 1_000_000, "USD", "usd", "EUR\n", "12.345", "12.34567", "1e3", "12.50\n", "+1 555 123 4567",
              "jane@example.com", "555-123-4567", "2026-11-20T10:00:00", "2026-11-20T10:00:00Z",
              "2026-02-30T10:00:00+00:00", "2026-11-20T10:00:00+01:00\n", "2026-11-20t10:00:00z", "ab\x7f",
              "has space", "ok-id", "\u00e9t\u00e9"]

VALID = {
    "order-item.schema.json": {"order_id": "O1", "customer_id": "BCZ2WVSH674563", "occurred_at": "2026-11-20T10:00:00+01:00",
                               "currency": "USD", "amount": "42.50", "category": "Blacksmithing", "sku": "A-198237465",
                               "quantity": 1, "im_ref": "QiiWXOVnrQ3", "promo_code": "P", "order_discount": "1.00"},
    "click.schema.json": {"customer_id": "BCZ2WVSH674563", "im_ref": "QiiWXOVnrQ3",
                          "occurred_at": "2026-11-20T10:00:00.123Z"},
}


@pytest.mark.parametrize("schema_file", sorted(VALID))
def test_quick_yes_implies_fastjsonschema_yes(schema_file):
    quick, full = compile_quick(load(schema_file)), fastjsonschema.compile(load(schema_file))
    rng = random.Random(7)
    good = VALID[schema_file]
    assert quick(good)
    fields = sorted(set(good) | set(load(schema_file)["properties"]))
    said_yes = said_no = 0
    for _ in range(5000):
        event = dict(good)
        for name in rng.sample(fields, rng.randint(1, 3)):
            if rng.random() < 0.15:
                event.pop(name, None)
            else:
                event[name] = rng.choice(BAD_VALUES)
        if quick(event):
            said_yes += 1
            full(event)  # raises if the quick check let through what the schema refuses
        else:
            said_no += 1
    assert said_yes > 100 and said_no > 1000  # both answers were exercised


def test_a_keyword_it_does_not_know_makes_it_step_aside():
    with pytest.raises(Unsupported):
        compile_quick({"type": "object", "properties": {"a": {"type": "string", "multipleOf": 2}}})
    with pytest.raises(Unsupported):
        compile_quick(load("order-change.schema.json"))  # if/then and arrays: fastjsonschema alone
