"""Bounded state on a real broker: the worker's sweep deletes clicks the attribution window can no
longer use and orders past ``modifications.keep_days`` from its store, and sends their tombstones
to the changelog topics; what is still usable stays."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from tests.support.harness import WorkerProcess, produce, read_topic, wait_for_rows, write_config

pytestmark = pytest.mark.integration

try:
    import rocksdb
except ImportError:
    rocksdb = None
STORES = ["memory://"] + (["rocksdb://"] if rocksdb else [])
KEEP_S = 3.0


def click(cid: str, at: datetime) -> tuple[bytes, bytes]:
    return cid.encode(), orjson.dumps({"customer_id": cid, "im_ref": f"REF-{cid}", "occurred_at": at.isoformat()})


def item(cid: str, order: str, at: datetime, **extra) -> tuple[bytes, bytes]:
    return cid.encode(), orjson.dumps({"order_id": order, "customer_id": cid, "occurred_at": at.isoformat(),
                                       "currency": "EUR", "amount": "10.00", "category": "Garden", "sku": "S1",
                                       "quantity": 1, **extra})


def latest(records) -> dict:
    """key -> (partition, value) of the last record per key, as compaction would keep it."""
    return {r.key: (r.partition, r.value) for r in sorted(records, key=lambda r: (r.partition, r.offset))}


def wait_for_tombstones(bootstrap: str, topic: str, keys: set[bytes], worker, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        last = latest(read_topic(bootstrap, topic, expect=1, timeout=5, settle_s=0))
        if all(k in last and last[k][1] is None for k in keys):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"no tombstone for {keys} in {topic}: {last}\n{worker.log_text()[-3000:]}")
        time.sleep(0.5)


def reasons(bootstrap: str, topic: str) -> list[bytes]:
    try:
        records = read_topic(bootstrap, topic, expect=1, timeout=30)
    except ValueError:  # no partitions: nothing was ever published to the topic
        records = []
    return [dict(r.headers)["imref.reason"] for r in records]


def stored_keys(data_dir: Path, table: str) -> set[bytes]:
    keys = set()
    for path in data_dir.rglob(f"{table}-*.db"):
        db = rocksdb.DB(str(path), rocksdb.Options(), read_only=True)
        it = db.iterkeys()
        it.seek_to_first()
        keys |= {k for k in it if not k.startswith(b"__faust")}
        del it, db
    return keys


@pytest.mark.parametrize("store", STORES)
def test_expired_clicks_and_orders_leave_store_and_changelog(broker, tmp_path, app_id, store):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    topics = {k: f"{app_id}.{k}" for k in ("clicks", "order-items", "order-changes", "unmatched-changes")}
    conv, mods, data = tmp_path / "conversions", tmp_path / "modifications", tmp_path / "data"
    cfg = write_config(
        tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=conv, data_dir=data,
        store=store, sweep_interval_s=1,
        topics={"order_changes": topics["order-changes"], "unmatched_changes": topics["unmatched-changes"]},
        attribution={"grace_s": 2}, batch={"max_rows": 50, "max_age_s": 1.0},
        modifications={"keep_days": KEEP_S / 86400},
        connections=[{"name": "conversions", "method": "fsspec", "url": str(conv)},
                     {"name": "returns", "method": "fsspec", "url": str(mods), "data_type": "action_modifications"}])
    worker = WorkerProcess(cfg, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        # C-OLD's only click is 40 days old: past the 30-day window, the grace and a day for late items.
        old_click, _ = produce(broker.bootstrap, topics["clicks"], [click("C-OLD", now - timedelta(days=40)),
                                                                    click("C-NEW", now - timedelta(hours=1))])
        o1, = produce(broker.bootstrap, topics["order-items"], [item("C-NEW", "O1", now - timedelta(minutes=5))])
        wait_for_rows(conv, 1, timeout=60, worker=worker)

        clicks = wait_for_tombstones(broker.bootstrap, f"{app_id}-clicks-changelog", {b'"C-OLD"'}, worker)
        assert clicks[b'"C-NEW"'][1] is not None  # inside the window: kept
        orders = wait_for_tombstones(broker.bootstrap, f"{app_id}-reported-orders-changelog", {b'"O1"'}, worker)
        # A tombstone goes to the key's own changelog partition (the source partition's).
        assert (clicks[b'"C-OLD"'][0], orders[b'"O1"'][0]) == (old_click.partition, o1.partition)
        assert "expired keys deleted" in worker.log_text()

        # What the store answers now: the 40-day-old click no longer attributes an item that
        # occurred 39 days ago (it would have, inside the window), and a return of O1 finds no order.
        produce(broker.bootstrap, topics["order-items"], [item("C-OLD", "O2", now - timedelta(days=39))])
        produce(broker.bootstrap, topics["order-changes"], [(b"C-NEW", orjson.dumps({
            "change_id": "R-1", "order_id": "O1", "customer_id": "C-NEW", "occurred_at": now.isoformat(),
            "kind": "cancellation", "reason": "ORDER_UPDATE"}))])
        assert reasons(broker.bootstrap, f"{app_id}.unattributed") == [b"no_click"]
        assert reasons(broker.bootstrap, topics["unmatched-changes"]) == [b"order_not_reported"]
        assert worker.stop() == 0
    finally:
        if worker.proc.poll() is None:
            worker.kill()

    if store == "rocksdb://":
        assert stored_keys(data, "clicks") == {b'"C-NEW"'}
        assert stored_keys(data, "reported-orders") == set()
