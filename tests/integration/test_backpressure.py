"""A partition whose delivery lanes are full stops being fetched; the clicks go on.

CI run of 2026-12-03 (kill test): the first fetch of an order-items partition sealed more batches
than its lanes hold, their items were waiting for clicks, and the hand-over of the fetch waited
for a free slot, so the clicks that would have freed it were never read (nor, with the timer
waiting for a slot too, did the grace ever expire). Here 10 batches of one partition wait for a
click produced only after they were cut: every row must be in a file long before the grace."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from tests.support.harness import (WorkerProcess, produce, read_csv_files, status, wait_for_rows, wait_until,
                                   write_config)

pytestmark = pytest.mark.integration
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def test_full_lanes_pause_their_partition_and_the_click_they_wait_for_still_arrives(broker, tmp_path):
    app_id, out = "backpressure", tmp_path / "out"
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp_path / "data", attribution={"grace_s": 120},
                       batch={"max_rows": 20, "max_age_s": 1})
    worker = WorkerProcess(cfg, tmp_path / "worker.log").start()
    worker.wait_ready()
    # One customer: one partition, 200 one-item orders = 10 batches, 4 lane slots.
    items = [(b"C1", orjson.dumps({"order_id": f"O{n:04d}", "customer_id": "C1", "occurred_at": NOW.isoformat(),
                                   "currency": "EUR", "amount": "10.00", "category": "Garden", "sku": f"S{n}",
                                   "quantity": 1})) for n in range(200)]
    produce(broker.bootstrap, f"{app_id}.order-items", items)
    # Fetched, cut and held (no click yet) until the partition's 4 lane slots are full: it is paused.
    wait_until(lambda: status(worker.port)["batches_held"] >= 4, 60, "4 batches held", worker)
    produce(broker.bootstrap, f"{app_id}.clicks", [(b"C1", orjson.dumps(
        {"customer_id": "C1", "im_ref": "REF-C1", "occurred_at": (NOW - timedelta(minutes=1)).isoformat()}))])
    wait_for_rows(out, 200, timeout=45, worker=worker)  # the grace is 120 s: only the click can do this
    rows = [r for rows in read_csv_files(out).values() for r in rows[1:]]
    assert len(rows) == 200 and {r[4] for r in rows} == {"REF-C1"}
    assert worker.stop() == 0
