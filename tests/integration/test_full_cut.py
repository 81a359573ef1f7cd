"""A full batch leaves at once (issue 13): on a quiet partition a batch of ``max_rows`` rows whose
orders are complete is cut by the timer after ``batch.order_settle_s``, not after
``batch.max_age_s``. Before the full cut it waited for the next item or for the age, here 60 s."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from streams.tools.devbroker import free_port
from tests.support import events
from tests.support.harness import WorkerProcess, produce, read_csv_files, status, wait_for_rows, write_config

pytestmark = pytest.mark.integration
NOW = datetime.now(timezone.utc).replace(microsecond=0)
MAX_ROWS = 5
SETTLE_S, TICK_S = 2.0, 0.5  # batch.order_settle_s (default) and the worker's timer


def items(customer: str, orders: dict[str, int]) -> list[tuple[bytes, bytes]]:
    """The items of each order, produced together as checkout does; im_ref from the cookie."""
    return events.items(*(events.item(customer, order, NOW - timedelta(minutes=1), sku=f"{order}-{n}",
                                      im_ref=f"REF-{customer}") for order, count in orders.items() for n in range(count)))


def test_a_full_batch_of_complete_orders_leaves_within_seconds_on_a_quiet_partition(broker, tmp_path, app_id,
                                                                                   record_property):
    out, port = tmp_path / "out", free_port()
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp_path / "data", batch={"max_rows": MAX_ROWS, "max_age_s": 60},
                       web={"enabled": True, "host": "127.0.0.1", "port": port})
    worker = WorkerProcess(cfg, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        topic = f"{app_id}.order-items"
        full = produce(broker.bootstrap, topic, items("C1", {"O1": 2, "O2": 3}))  # exactly MAX_ROWS
        produced_at = time.monotonic()
        below = produce(broker.bootstrap, topic, items("C3", {"O3": 2}))  # another partition, not full
        below_at = time.monotonic()
        assert {m.partition for m in full}.isdisjoint({m.partition for m in below})

        files = wait_for_rows(out, MAX_ROWS, timeout=20, worker=worker)
        waited_s = time.monotonic() - produced_at
        record_property("produced_to_file_s", round(waited_s, 1))
        partition, first, last = full[0].partition, full[0].offset, full[-1].offset
        assert [name.endswith(f"_p{partition:03d}_{first:012d}-{last:012d}.csv") for name in files] == [True], \
            f"{list(files)} after {waited_s:.1f}s:\n{worker.log_text()[-2000:]}"
        assert [r[3] for r in next(iter(files.values()))[1:]] == ["O1", "O1", "O2", "O2", "O2"]
        name, = files
        assert {f["cut"] for f in status(port)["files"] if f["name"] == name} == {"full"}
        # The batch below max_rows waits for its age (60 s), however long its partition is quiet.
        time.sleep(max(0.0, below_at + SETTLE_S + 2 * TICK_S - time.monotonic()))
        assert len(read_csv_files(out)) == 1
        assert [p["delivered_to"] for p in status(port)["partitions"]
                if (p["topic"], p["partition"]) == (topic, below[0].partition)] == [0]
    finally:
        exit_code = worker.stop()
    assert exit_code == 0
