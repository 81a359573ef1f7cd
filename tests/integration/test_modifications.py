"""Returns and cancellations end to end on a real broker: orders are reported as conversions
(with extra columns), then cancelled and returned; the worker, a subprocess, writes impact
action-modification files. The expected rows are worked out by hand here from the produced
events, not by the product's code."""
from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streams.tools.devbroker import free_port
from tests.support import events
from tests.support.events import rows_of
from tests.support.harness import (WorkerProcess, ends, metrics, produce, read_csv_files, read_topic, status,
                                   wait_committed, wait_for_rows, wait_until, write_config)

pytestmark = pytest.mark.integration

CHANGE_IDS = itertools.count(1)
NOW = datetime.now(timezone.utc).replace(microsecond=0)
BASE = ["CampaignId", "ActionTrackerId", "EventDate", "OrderId", "ClickId", "CustomerId",
        "CurrencyCode", "Amount", "Category", "Sku", "Quantity"]
EXTRAS = [{"column": "OrderPromoCode", "field": "promo_code"}, {"column": "CustomerStatus", "field": "customer_status"},
          {"column": "ItemSubCategory", "field": "item_subcategory"}]
MOD_HEADER = ["OrderId", "ActionTrackerId", "Amount", "CurrencyCode", "Reason"]
try:  # production's store when installed: its writes need the partition of a current event
    import rocksdb  # noqa: F401
    STORE = "rocksdb://"
except ImportError:
    STORE = "memory://"


def item(cid, order, sku, qty, amount, currency="EUR", **extra):
    return events.item(cid, order, NOW - timedelta(minutes=5), sku=sku, quantity=qty, amount=amount,
                       currency=currency, **extra)


def change(cid, order, kind, reason, items=None, change_id=None):
    event = {"change_id": change_id or f"R-{next(CHANGE_IDS)}", "order_id": order, "customer_id": cid, "occurred_at": NOW.isoformat(), "kind": kind, "reason": reason}
    if items is not None:
        event["items"] = [{"sku": s, "quantity": q, "amount": a} for s, q, a in items]
    return cid.encode(), orjson.dumps(event)


def acked_items(port: int, topic: str) -> int:
    """Order items acked (their files confirmed, their orders recorded), from the commit gate's
    ledger on the status page: the topic is fresh, so each partition counts from offset 0."""
    return sum(p["delivered_to"] for p in status(port)["partitions"] if p["topic"] == topic)


@pytest.fixture(scope="module")
def scenario(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("modifications")
    app_id, port = "mods", free_port()
    conv, mods = tmp / "conversions", tmp / "modifications"
    topics = {k: f"{app_id}.{k}" for k in ("clicks", "order-items", "order-changes", "unmatched-changes",
                                          "dead-letter")}
    settings = dict(
        bootstrap=broker.bootstrap, app_id=app_id, out_dir=conv, store=STORE,
        topics={"order_changes": topics["order-changes"], "unmatched_changes": topics["unmatched-changes"]},
        impact={"extra_columns": EXTRAS}, attribution={"grace_s": 2},
        batch={"max_rows": 50, "max_age_s": 1.0, "file_title": "acme-conv"},
        # DAMAGED: a custom disposition code set up in the account; any other reason is refused
        modifications={"file_title": "acme-mods", "custom_reasons": ["DAMAGED"]},
        web={"enabled": True, "host": "127.0.0.1", "port": port},
        connections=[{"name": "conversions outbox", "method": "fsspec", "url": str(conv)},
                     {"name": "returns outbox", "method": "fsspec", "url": str(mods),
                      "data_type": "action_modifications"}])
    cfg = write_config(tmp / "config.yaml", data_dir=tmp / "data", **settings)
    worker = WorkerProcess(cfg, tmp / "worker.log").start()
    worker.wait_ready()

    produce(broker.bootstrap, topics["clicks"], [events.click(c, f"REF-{c}", NOW - timedelta(hours=1))
                                                 for c in ("C1", "C2", "C3", "C4")])
    items = [
        item("C1", "O1", "A", 2, "20.00", promo_code="=SAVE10", customer_status="NEW", item_subcategory="Tools"),
        item("C1", "O1", "B", 1, "10.00", promo_code="=SAVE10", customer_status="NEW"),
        item("C1", "O1", "C", 1, "5.50", promo_code="=SAVE10", customer_status="NEW", item_subcategory="Seeds"),
        item("C2", "O2", "D", 1, "99.99"),
        item("C3", "O3", "E", 3, "30.00", currency="USD"),
        item("C4", "O4", "F", 2, "40.00"),
        item("C4", "O4", "G", 1, "7.25"),
    ]
    produce(broker.bootstrap, topics["order-items"], events.items(*items))
    conv_files = wait_for_rows(conv, len(items), timeout=60, worker=worker)
    # A change is matched only once its order's file is confirmed and the order recorded.
    wait_until(lambda: acked_items(port, topics["order-items"]) >= len(items), 30, "conversion batches acked", worker)

    changes = [
        change("C1", "O1", "partial_return", "ITEM_RETURNED", [("A", 1, "10.00")], change_id="RET-O1-A"),
        change("C1", "O1", "partial_return", "ITEM_RETURNED", [("B", 1, "10.00"), ("NOT-SOLD", 1, "3.00")]),
        change("C2", "O2", "cancellation", "ORDER_UPDATE"),
        change("C3", "O3", "full_return", "ITEM_RETURNED"),
        # every unit of F is back: nothing of F remains, even if less was refunded
        change("C4", "O4", "partial_return", "ITEM_RETURNED", [("F", 2, "35.00")]),
        change("C1", "O9", "cancellation", "ORDER_UPDATE"),  # never reported
        change("C4", "O4", "partial_return", "ITEM_RETURNED", [("NOT-SOLD", 1, "1.00")]),  # changes nothing
        (b"C2", orjson.dumps({"change_id": "R-bad", "order_id": "O2", "customer_id": "C2", "occurred_at": NOW.isoformat(),
                              "kind": "partial_return", "reason": "ITEM_RETURNED"})),  # items missing
        (b"C3", orjson.dumps({"change_id": "R-bad", "order_id": "O3", "customer_id": "C4", "occurred_at": NOW.isoformat(),
                              "kind": "cancellation", "reason": "X"})),  # key is not the customer
        # the producer retried the first send: the return of A must not come off twice
        change("C1", "O1", "partial_return", "ITEM_RETURNED", [("A", 1, "10.00")], change_id="RET-O1-A"),
        change("C2", "O2", "cancellation", "ORDER_CANCELLED"),  # not a reason code impact takes
    ]
    metas = produce(broker.bootstrap, topics["order-changes"], changes)
    origin = [(m.topic, m.partition, m.offset) for m in metas]
    expected = [
        ["O1", "4321", "25.50", "EUR", "ITEM_RETURNED"],
        ["O1", "4321", "15.50", "EUR", "ITEM_RETURNED"],
        ["O2", "4321", "0", "", "ORDER_UPDATE"],
        ["O3", "4321", "0", "", "ITEM_RETURNED"],
        ["O4", "4321", "7.25", "EUR", "ITEM_RETURNED"],
    ]
    mod_files = wait_for_rows(mods, len(expected), timeout=60, worker=worker)
    # Every change committed: no row, file, unmatched change or dead letter is still to come.
    wait_committed(broker.bootstrap, app_id, topics["order-changes"], ends(metas), worker)
    unmatched = read_topic(broker.bootstrap, topics["unmatched-changes"], expect=3, settle_s=0)
    dead = read_topic(broker.bootstrap, topics["dead-letter"], expect=3, settle_s=0)
    mod_files = read_csv_files(mods)
    counted = metrics(port)

    # Restart on an empty data_dir: the next return of O1 starts from the state the table's
    # changelog kept, not from local files.
    first_stop = worker.stop()
    write_config(tmp / "config.yaml", data_dir=tmp / "data-after-restart", **settings)
    worker.start()
    worker.wait_ready()
    metas += produce(broker.bootstrap, topics["order-changes"], [change("C1", "O1", "partial_return", "DAMAGED",
                                                                        [("C", 1, "5.50")])])
    after_restart = ["O1", "4321", "10.00", "EUR", "DAMAGED"]
    wait_for_rows(mods, len(expected) + 1, timeout=60, worker=worker)
    wait_committed(broker.bootstrap, app_id, topics["order-changes"], ends(metas), worker)
    files_after = read_csv_files(mods)
    exit_code = worker.stop()
    return dict(items=items, conv_files=read_csv_files(conv), mod_files=mod_files, expected=expected,
                unmatched=unmatched, dead=dead, origin=origin, counted=counted, files_after=files_after,
                after_restart=after_restart, exit_codes=(first_stop, exit_code), worker=worker, topics=topics)


def test_modification_file_holds_exactly_the_expected_rows(scenario):
    assert Counter(rows_of(scenario["mod_files"])) == Counter(map(tuple, scenario["expected"]))


def test_modification_files_follow_impact_format_and_naming(scenario):
    assert scenario["mod_files"]
    for name, rows in scenario["mod_files"].items():
        assert re.fullmatch(r"acme-mods_\d{8}_p\d{3}_\d{12}-\d{12}\.csv", name)
        assert rows[0] == MOD_HEADER


def test_changes_of_one_order_keep_their_order(scenario):
    o1 = [r[2] for r in rows_of(scenario["mod_files"]) if r[0] == "O1"]
    assert o1 == ["25.50", "15.50"]


def test_unreported_no_op_and_duplicate_changes_go_to_the_unmatched_topic_and_are_counted(scenario):
    got = {}
    for r in scenario["unmatched"]:
        h = dict(r.headers)
        got[(h["imref.source.topic"].decode(), int(h["imref.source.partition"]),
             int(h["imref.source.offset"]))] = h["imref.reason"].decode()
    origin = scenario["origin"]
    assert got == {origin[5]: "order_not_reported", origin[6]: "nothing_to_change", origin[9]: "duplicate_change"}
    assert "O9" not in {r[0] for files in (scenario["mod_files"], scenario["files_after"]) for r in rows_of(files)}
    counted = scenario["counted"]
    assert counted[("imref_unmatched_changes_total", (("reason", "order_not_reported"),))] == 1
    assert counted[("imref_unmatched_changes_total", (("reason", "nothing_to_change"),))] == 1
    assert counted[("imref_unmatched_changes_total", (("reason", "duplicate_change"),))] == 1
    assert counted[("imref_order_changes_in_total", ())] == 11


def test_invalid_changes_go_to_the_dead_letter_topic_with_reason_and_origin(scenario):
    got = Counter()
    for r in scenario["dead"]:
        h = dict(r.headers)
        got[(h["imref.source.topic"].decode(), int(h["imref.source.partition"]), int(h["imref.source.offset"])),
            h["imref.reason"].decode()] += 1
    origin = scenario["origin"]
    assert got == Counter({(origin[7], "schema_violation"): 1, (origin[8], "key_mismatch"): 1,
                           (origin[10], "unknown_reason_code"): 1})


def test_a_restarted_worker_continues_from_the_recorded_order_state(scenario):
    before = Counter(rows_of(scenario["mod_files"]))
    after = Counter(rows_of(scenario["files_after"]))
    assert after - before == Counter([tuple(scenario["after_restart"])])
    assert set(scenario["mod_files"]) <= set(scenario["files_after"])  # nothing re-sent under a new name


def test_extra_columns_follow_the_base_columns_in_config_order(scenario):
    rows = []
    for name, file_rows in scenario["conv_files"].items():
        assert file_rows[0] == BASE + [e["column"] for e in EXTRAS], name
        rows += file_rows[1:]
    by_sku = {r[9]: r[11:] for r in rows}
    assert by_sku == {
        "A": ["=SAVE10", "NEW", "Tools"], "B": ["=SAVE10", "NEW", ""], "C": ["=SAVE10", "NEW", "Seeds"],
        "D": ["", "", ""], "E": ["", "", ""], "F": ["", "", ""], "G": ["", "", ""],
    }
    assert {tuple(r[:11]) for r in rows} == {
        ("1000", "4321", i["occurred_at"], i["order_id"], f"REF-{i['customer_id']}", i["customer_id"], i["currency"],
         i["amount"], "Garden", i["sku"], str(i["quantity"])) for i in scenario["items"]}


def test_worker_stops_cleanly(scenario):
    assert scenario["exit_codes"] == (0, 0), scenario["worker"].log_text()[-2000:]
