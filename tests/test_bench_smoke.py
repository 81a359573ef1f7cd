"""`python -m bench --smoke` runs every benchmark end to end and prints a number in every row.
No timing is asserted: the figures depend on the machine and its load."""
import math
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bench.__main__ import ROWS
from streams.tools.devbroker import free_port
from tests.support import events
from tests.support.harness import WorkerProcess, consumed, produce, status, wait_for_rows, wait_until, write_config

ROOT = Path(__file__).parents[1]


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_bench_smoke_prints_every_row_with_a_number():
    out = subprocess.run([sys.executable, "-m", "bench", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                         timeout=220)
    assert out.returncode == 0, out.stderr[-3000:]
    cells = {}
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) == 5 and line.startswith("| ") and parts[0] != "figure":
            cells[parts[0]] = parts[1]
    for label in ROWS:
        matches = [value for name, value in cells.items() if name.startswith(label)]
        assert matches, f"no row {label!r} in:\n{out.stdout}"
        assert math.isfinite(float(matches[0].replace(",", ""))), f"{label}: {matches[0]!r}"
    assert "CPU:" in out.stdout and "Python" in out.stdout


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_collector_load_runs_and_finds_every_accepted_beacon_in_the_topic():
    out = subprocess.run([sys.executable, "-m", "bench.collector_load", "--requests", "500", "--concurrency", "8"],
                         cwd=ROOT, capture_output=True, text=True, timeout=160)
    assert out.returncode == 0, out.stderr[-3000:]  # it exits non-zero when the topic disagrees
    assert "| accepted/s | p50 ms | p99 ms |" in out.stdout and "CPU:" in out.stdout
    assert "clicks topic holds 2,500 records for 2,500 accepted beacons" in out.stdout


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_worker_held_for_the_two_worker_bench_takes_in_nothing_until_let_go(broker, tmp_path, app_id):
    """bench/throughput.py times two workers from the moment both may fetch, and counts every item
    of the backlog: a worker started with IMREF_TEST_START_AFTER joins, gets its partitions and is
    ready, but takes in no record until the file exists; then the whole backlog."""
    out, go, port = tmp_path / "out", tmp_path / "go", free_port()
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp_path / "data", batch={"max_age_s": 1},
                       web={"enabled": True, "host": "127.0.0.1", "port": port})
    at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    backlog = events.items(*(events.item(f"C{n % 7}", f"O{n}", at, im_ref=f"IR{n}") for n in range(40)))
    produce(broker.bootstrap, f"{app_id}.order-items", backlog)
    worker = WorkerProcess(cfg, tmp_path / "worker.log",
                           env={"IMREF_TEST_HOOKS": "1", "IMREF_TEST_START_AFTER": str(go)}).start()
    try:
        worker.wait_ready(90)
        wait_until(lambda: len(status(port)["partitions"]) == 8, 30, "clicks and items partitions positioned", worker)
        # A worker that may fetch takes the backlog in with its first fetch, within a second of
        # being positioned; three seconds without a record is the hold.
        until = time.monotonic() + 3
        while time.monotonic() < until:
            assert consumed(port) == 0
            time.sleep(0.2)
        go.touch()
        wait_until(lambda: consumed(port) == len(backlog), 60, "the backlog taken in", worker)
        files = wait_for_rows(out, len(backlog), worker=worker)
        assert sorted(row[3] for row in events.rows_of(files)) == sorted(f"O{n}" for n in range(40))
    finally:
        worker.stop()
