"""A partition revoked and given back to the same worker while an upload of it is in flight:
every record that was not delivered is read again and reaches a file; none is in two files.

The sequence is forced, not waited for: the upload is held at the fault point ``mid_upload``
(tests/support/imref_test_hooks.py), the rebalance is requested with SIGHUP, and the upload
is released only once the worker has revoked its partitions and before they come back."""
from __future__ import annotations

import signal
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streams.devbroker import free_port
from tests.support.harness import WorkerProcess, produce, read_csv_files, write_config

pytestmark = pytest.mark.integration
NOW = datetime.now(timezone.utc).replace(microsecond=0)
CUSTOMER = "K0001"


def items(first: int, count: int) -> list[tuple[bytes, bytes]]:
    return [(CUSTOMER.encode(), orjson.dumps({
        "order_id": f"R{n:05d}", "customer_id": CUSTOMER, "occurred_at": (NOW - timedelta(minutes=1)).isoformat(),
        "currency": "USD", "amount": "5.00", "category": "Books", "sku": "B0", "quantity": 1, "im_ref": "IMX"}))
        for n in range(first, first + count)]


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def wait_until(check, what: str, worker: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert worker.proc.poll() is None, f"worker exited:\n{worker.log_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} not seen in {timeout}s:\n{worker.log_text()[-3000:]}"
        time.sleep(0.05)


def test_same_worker_regains_a_partition_mid_upload_and_loses_nothing(broker, tmp_path, app_id):
    out, gate, port = tmp_path / "out", tmp_path / "gate", free_port()
    gate.mkdir()
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp_path / "data", batch={"max_rows": 10, "max_age_s": 60},
                       web={"enabled": True, "host": "127.0.0.1", "port": port})
    worker = WorkerProcess(cfg, tmp_path / "worker.log",
                           env={"IMREF_TEST_HOOKS": "1", "IMREF_TEST_HOLD": str(gate)}).start()
    worker.wait_ready()
    try:
        # 10 rows cut into a batch whose upload is held, 5 more in the open batch behind it.
        produce(broker.bootstrap, f"{app_id}.order-items", items(0, 15))
        wait_until(lambda: (gate / "held-1").exists(), "the held upload", worker)
        wait_until(lambda: metric(port, "imref_events_in_total") >= 15, "15 items consumed", worker)

        worker.proc.send_signal(signal.SIGHUP)
        # aiokafka's line as the revoke starts (the first one is the initial join, revoking nothing)
        wait_until(lambda: worker.log_text().count("Revoking previously assigned partitions") >= 2, "the revoke",
                   worker)
        (gate / "release").touch()  # the upload completes between the revoke and the re-assignment
        wait_until(lambda: worker.log_text().count("Seek stream partitions to committed offsets") >= 2,
                   "the re-assignment", worker)

        produce(broker.bootstrap, f"{app_id}.order-items", items(15, 25))  # 40 rows: 4 full files
        deadline = time.monotonic() + 60
        while sum(len(r) - 1 for r in read_csv_files(out).values()) < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        (gate / "release").touch()
        worker.stop()
    files = read_csv_files(out)
    orders = Counter(row[3] for rows in files.values() for row in rows[1:])
    assert sorted(orders) == [f"R{n:05d}" for n in range(40)], (
        f"missing {sorted({f'R{n:05d}' for n in range(40)} - set(orders))} in {sorted(files)}")
    assert max(orders.values()) == 1, f"rows in two files: {[o for o, n in orders.items() if n > 1]}"
