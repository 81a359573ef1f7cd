"""End to end on a real broker: clicks + order items -> impact CSV files, unattributed and
dead-letter topics. The worker runs as a subprocess; expected rows are computed here from
the produced events, independently of the product's own formatting code."""
from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streams.tools.devbroker import free_port
from tests.support import events
from tests.support.events import encode, rows_of
from tests.support.harness import (WorkerProcess, ends, metrics, produce, read_csv_files, read_topic,
                                   wait_committed, wait_for_rows, wait_until, write_config)

pytestmark = pytest.mark.integration

HEADER = ["CampaignId", "ActionTrackerId", "EventDate", "OrderId", "ClickId", "CustomerId",
          "CurrencyCode", "Amount", "Category", "Sku", "Quantity"]
MAX_ROWS = 7
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def click(cid: str, ref: str, at: datetime) -> tuple[bytes, bytes]:
    return events.click(cid, ref, at, landing_url=f"https://shop.example/p?im_ref={ref}")


def item(cid: str, order: str, n: int, **extra) -> dict:
    return events.item(cid, order, NOW - timedelta(minutes=5),
                       **{"sku": f"SKU-{order}-{n}", "amount": f"{10 + n}.50", "quantity": 1 + n % 2, **extra})


def expected_row(it: dict, click_id: str) -> list[str]:
    return ["1000", "4321", it["occurred_at"], it["order_id"], click_id, it["customer_id"], it["currency"],
            it["amount"], it["category"], it["sku"], str(it["quantity"])]


@pytest.fixture(scope="module")
def scenario(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    app_id, port = "e2e", free_port()
    out = tmp / "out"
    cfg = write_config(tmp / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp / "data", attribution={"grace_s": 6, "window_days": 30},
                       web={"enabled": True, "host": "127.0.0.1", "port": port},
                       batch={"max_rows": MAX_ROWS, "max_age_s": 1.5, "file_title": "acme-conversions"})
    topics = {k: f"{app_id}.{k}" for k in ("clicks", "order-items", "unattributed", "dead-letter")}
    worker = WorkerProcess(cfg, tmp / "worker.log").start()
    join_s = worker.wait_ready()

    expected, unattributed, dead = [], {}, {}
    clicks = [click(f"C{i:03d}", f"REF{i:03d}x", NOW - timedelta(hours=1)) for i in range(20)]
    clicks.append(click("C025", "OLDREF", NOW - timedelta(days=40)))  # outside the 30-day window
    clicked = produce(broker.bootstrap, topics["clicks"], clicks)
    bad_click_value = b'{"customer_id": "C099", "im_ref": '
    bad_click = produce(broker.bootstrap, topics["clicks"], [(b"C099", bad_click_value)])[0]
    dead[(bad_click.topic, bad_click.partition, bad_click.offset)] = "malformed_json"
    # In the table before their orders (a click committed is in the table and its changelog).
    wait_committed(broker.bootstrap, app_id, topics["clicks"], ends(clicked + [bad_click]), worker)

    items = []
    for i in range(20):  # joined through the click table; 1-3 items per order
        items += [(item(f"C{i:03d}", f"O{i:03d}", n), f"REF{i:03d}x") for n in range(1 + i % 3)]
    for i in (20, 21, 22):  # checkout already knew im_ref from the cookie
        items += [(item(f"C{i:03d}", f"O{i:03d}", n, im_ref=f"CK{i}"), f"CK{i}") for n in range(2)]
    # every cell as the event carried it; quotes and commas survive RFC 4180 quoting
    items.append((item("C001", "O901", 0, category="=HYPERLINK(\"x\")", sku='A,"B"'), "REF001x"))
    for it, ref in items:
        expected.append(expected_row(it, ref))

    late = [item(f"C{i:03d}", f"O{i:03d}", n) for i in (23, 24) for n in range(2)]
    no_click = [item("C026", "O026", 0)]
    expired = [item("C025", "O025", 0)]
    invalid = {
        "malformed_json": (b"C030", b"{not json"),
        "unknown_currency": encode(item("C031", "O031", 0, currency="XYZ")),
        "id_too_long": encode(item("C032", "O" * 65, 0)),
        "personal_data_in_customer_id": encode(item("jane.doe@example.com", "O033", 0)),
        "event_date_too_old": encode(item("C034", "O034", 0, occurred_at=(NOW - timedelta(days=89)).isoformat())),
        "schema_violation": encode(item("C035", "O035", 0, quantity=0)),
        "key_mismatch": (b"C036", orjson.dumps(item("C037", "O036", 0))),
    }
    phone = encode(item("+44 20 7946 0958", "O038", 0))
    records = [encode(it) for it, _ in items] + [encode(it) for it in late + no_click + expired]
    records += list(invalid.values()) + [phone]
    metas = produce(broker.bootstrap, topics["order-items"], records)
    by_value = {r[1]: m for r, m in zip(records, metas)}
    for reason, rec in invalid.items():
        m = by_value[rec[1]]
        dead[(m.topic, m.partition, m.offset)] = reason
    m = by_value[phone[1]]
    dead[(m.topic, m.partition, m.offset)] = "personal_data_in_customer_id"
    for it, reason in [(no_click[0], "no_click"), (expired[0], "click_outside_window")]:
        m = by_value[orjson.dumps(it)]
        unattributed[(m.topic, m.partition, m.offset)] = reason

    # The late clicks arrive after the worker has taken in their orders, inside the 6 s grace.
    wait_until(lambda: metrics(port).get(("imref_events_in_total", (("kind", "items"),)), 0) >= len(records), 30,
               "every item taken in", worker)
    late_clicks = produce(broker.bootstrap, topics["clicks"], [click(f"C{i:03d}", f"LATE{i}", NOW - timedelta(minutes=30))
                                                               for i in (23, 24)])
    expected += [expected_row(it, f"LATE{it['customer_id'][1:].lstrip('0')}") for it in late]

    wait_for_rows(out, len(expected), timeout=60, worker=worker)
    # Everything committed: no file, dead letter or unattributed item is still to come.
    wait_committed(broker.bootstrap, app_id, topics["order-items"], ends(metas), worker)
    wait_committed(broker.bootstrap, app_id, topics["clicks"], ends(clicked + [bad_click] + late_clicks), worker)
    dlq = read_topic(broker.bootstrap, topics["dead-letter"], expect=len(dead), settle_s=0)
    unattr = read_topic(broker.bootstrap, topics["unattributed"], expect=len(unattributed), settle_s=0)
    files = read_csv_files(out)
    exit_code = worker.stop()
    return dict(files=files, expected=expected, dlq=dlq, dead=dead, unattr=unattr,
                unattributed=unattributed, exit_code=exit_code, join_s=join_s,
                produced={**by_value, bad_click_value: bad_click}, worker=worker)


def test_files_hold_exactly_the_expected_rows(scenario):
    assert Counter(map(tuple, rows_of(scenario["files"]))) == Counter(map(tuple, scenario["expected"]))


def test_file_format_follows_impact(scenario):
    assert len(scenario["files"]) >= len(scenario["expected"]) // MAX_ROWS
    for name, rows in scenario["files"].items():
        assert rows[0] == HEADER
        assert 1 <= len(rows) - 1 <= MAX_ROWS
        assert re.fullmatch(r"acme-conversions_\d{8}_p\d{3}_\d{12}-\d{12}\.csv", name)
        orders = [r[3] for r in rows[1:]]
        # items of one order are consecutive: each order id forms one run
        runs = [o for i, o in enumerate(orders) if i == 0 or orders[i - 1] != o]
        assert len(runs) == len(set(runs)), (name, orders)


def test_no_order_is_split_across_files(scenario):
    owner = {}
    for name, rows in scenario["files"].items():
        for r in rows[1:]:
            assert owner.setdefault(r[3], name) == name, f"order {r[3]} in {owner[r[3]]} and {name}"


def test_late_click_inside_grace_attributes(scenario):
    rows = rows_of(scenario["files"])
    assert sorted(r[4] for r in rows if r[3] in ("O023", "O024")) == ["LATE23", "LATE23", "LATE24", "LATE24"]


def test_unattributed_topic_holds_exactly_the_unattributed_items(scenario):
    got = {(r.topic, r.partition, r.offset): r for r in scenario["unattr"]}
    seen = {}
    for r in scenario["unattr"]:
        h = dict(r.headers)
        seen[(h["imref.source.topic"].decode(), int(h["imref.source.partition"]), int(h["imref.source.offset"]))] = \
            h["imref.reason"].decode()
    assert seen == scenario["unattributed"]
    assert len(got) == len(scenario["unattributed"])
    assert not any(r[3] in ("O025", "O026") for r in rows_of(scenario["files"]))


def test_dead_letter_topic_holds_every_invalid_event_with_reason_and_origin(scenario):
    seen = Counter()
    for r in scenario["dlq"]:
        h = dict(r.headers)
        seen[(h["imref.source.topic"].decode(), int(h["imref.source.partition"]), int(h["imref.source.offset"])),
             h["imref.reason"].decode()] += 1
    assert seen == Counter(scenario["dead"].items())


def test_dead_letters_keep_the_original_bytes(scenario):
    originals = {(m.topic, m.partition, m.offset): v for v, m in scenario["produced"].items()}
    kept = {}
    for r in scenario["dlq"]:
        h = dict(r.headers)
        kept[(h["imref.source.topic"].decode(), int(h["imref.source.partition"]), int(h["imref.source.offset"]))] = r.value
    assert kept == {origin: originals[origin] for origin in scenario["dead"]}


def test_sigterm_stops_cleanly(scenario):
    assert scenario["exit_code"] == 0, scenario["worker"].log_text()[-2000:]
