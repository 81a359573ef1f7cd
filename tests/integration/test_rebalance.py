"""A partition revoked and given back to the same worker while an upload of it is in flight:
every record that was not delivered is read again and reaches a file; none is in two files.

The sequence is forced, not waited for (tests/support/imref_test_hooks.py): the upload is held at
the fault point ``mid_upload``, the rebalance is requested with SIGHUP, the upload is released
once the worker has revoked its partitions and before they come back, and Faust's seek to the
committed offsets after the re-assignment comes late, so records flow before it."""
from __future__ import annotations

import signal
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streams.tools.devbroker import free_port
from tests.chaos.scenarios import committed_offsets
from tests.support.harness import WorkerProcess, produce, read_csv_files, write_config

pytestmark = pytest.mark.integration
NOW = datetime.now(timezone.utc).replace(microsecond=0)
CUSTOMER = "K0001"  # every item on one partition


def items(first: int, count: int) -> list[tuple[bytes, bytes]]:
    return [(CUSTOMER.encode(), orjson.dumps({
        "order_id": f"R{n:05d}", "customer_id": CUSTOMER, "occurred_at": (NOW - timedelta(minutes=1)).isoformat(),
        "currency": "USD", "amount": "5.00", "category": "Books", "sku": "B0", "quantity": 1, "im_ref": "IMX"}))
        for n in range(first, first + count)]


def consumed(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("imref_events_in_total{"))


def wait_until(check, what: str, worker: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert worker.proc.poll() is None, f"worker exited:\n{worker.log_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} not seen in {timeout}s:\n{worker.log_text()[-3000:]}"
        time.sleep(0.05)


def test_same_worker_regains_a_partition_mid_upload_and_loses_nothing(broker, tmp_path, app_id):
    out, gate, port = tmp_path / "out", tmp_path / "gate", free_port()
    gate.mkdir()
    topic = f"{app_id}.order-items"
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp_path / "data", batch={"max_rows": 10, "max_age_s": 60},
                       web={"enabled": True, "host": "127.0.0.1", "port": port})
    worker = WorkerProcess(cfg, tmp_path / "worker.log", env={
        "IMREF_TEST_HOOKS": "1", "IMREF_TEST_HOLD": str(gate), "IMREF_TEST_SEEK_DELAY_S": "2"}).start()
    worker.wait_ready()
    try:
        # R0-R9 delivered and committed.
        partition = produce(broker.bootstrap, topic, items(0, 11))[0].partition
        wait_until(lambda: committed_offsets(broker.bootstrap, app_id, topic).get(partition) == 10,
                   "offset 10 committed", worker)
        # R10-R19 cut, their upload held; R20-R24 in the open batch.
        (gate / "hold").touch()
        produce(broker.bootstrap, topic, items(11, 14))
        wait_until(lambda: (gate / "held-1").exists(), "the held upload", worker)
        wait_until(lambda: consumed(port) >= 25, "25 items consumed", worker)

        worker.proc.send_signal(signal.SIGHUP)
        # aiokafka's line as the revoke starts (the first one is the initial join, revoking nothing)
        wait_until(lambda: worker.log_text().count("Revoking previously assigned partitions") >= 2, "the revoke",
                   worker)
        produce(broker.bootstrap, topic, items(25, 10))  # waiting when the partition comes back
        (gate / "hold").unlink()  # the upload completes between the revoke and the re-assignment
        wait_until(lambda: worker.log_text().count("Seek stream partitions to committed offsets") >= 2,
                   "the re-assignment", worker)
        produce(broker.bootstrap, topic, items(35, 25))
        deadline = time.monotonic() + 30
        while sum(len(r) - 1 for r in read_csv_files(out).values()) < 50 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        (gate / "hold").unlink(missing_ok=True)
        assert worker.stop() == 0  # SIGTERM delivers the open batch
    orders = Counter(row[3] for rows in read_csv_files(out).values() for row in rows[1:])
    expected = {f"R{n:05d}" for n in range(60)}
    assert set(orders) == expected, f"missing {sorted(expected - set(orders))}, files {sorted(read_csv_files(out))}"
    assert max(orders.values()) == 1, f"rows in two files: {[o for o, n in orders.items() if n > 1]}"


def test_a_revoke_commits_what_was_delivered(broker, tmp_path, app_id):
    """Delivered before the revoke, committed by it: the periodic commit (60 s here) never ran."""
    out, gate = tmp_path / "out", tmp_path / "gate"
    gate.mkdir()
    topic = f"{app_id}.order-items"
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp_path / "data", batch={"max_rows": 5, "max_age_s": 60},
                       kafka={"commit_interval_s": 60})
    worker = WorkerProcess(cfg, tmp_path / "worker.log", env={"IMREF_TEST_HOOKS": "1",
                                                              "IMREF_TEST_HOLD": str(gate)}).start()
    worker.wait_ready()
    try:
        partition = produce(broker.bootstrap, topic, items(0, 11))[0].partition  # 0-4, 5-9 cut; 10 open
        wait_until(lambda: sum(len(r) - 1 for r in read_csv_files(out).values()) == 10, "10 rows in files", worker)
        assert committed_offsets(broker.bootstrap, app_id, topic).get(partition) is None
        worker.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: (gate / "regained-2").exists(), "the partitions back", worker)  # 1: the first assignment
        assert committed_offsets(broker.bootstrap, app_id, topic).get(partition) == 10
        assert f"partition {partition} assigned: resumes from offset 10" in worker.log_text()
    finally:
        assert worker.stop() == 0

