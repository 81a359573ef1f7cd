"""An idle worker does not poll its broker in a loop (streams/runtime/pacing.py): noida-db answers
an empty fetch at once, and without the pacing an idle worker sent thousands of fetches a second
and used 0.9 CPU-seconds per second doing nothing. A record produced after the idle spell is still
delivered. (Tansu holds an empty fetch as Kafka does: there the test cannot tell.)

The worker's garbage collector runs on a timer, not on allocations (runtime/worker.py): the test
also sees full collections happen while the worker idles."""
from __future__ import annotations

import time

import pytest

from streams.runtime.worker import GC_INTERVAL_S
from streams.tools.devbroker import free_port
from tests.support.harness import WorkerProcess, produce, read_csv_files, wait_until, write_config
from tests.integration.test_failures import items, metric

pytestmark = pytest.mark.integration
IDLE_S = 5


def test_an_idle_worker_uses_little_cpu_and_still_delivers(broker, tmp_path, app_id):
    out, port = tmp_path / "out", free_port()
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp_path / "data", batch={"max_rows": 5, "max_age_s": 1},
                       web={"enabled": True, "host": "127.0.0.1", "port": port})
    worker = WorkerProcess(cfg, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        collections = metric(port, "python_gc_collections_total", generation="2")
        time.sleep(2)  # start-up's own work done
        before = metric(port, "process_cpu_seconds_total")
        time.sleep(IDLE_S)
        idle_cpu = metric(port, "process_cpu_seconds_total") - before
        produce(broker.bootstrap, f"{app_id}.order-items", items(0, 5))
        wait_until(lambda: sum(len(rows) - 1 for rows in read_csv_files(out).values()) == 5, 60, "5 rows delivered",
                   worker)
        wait_until(lambda: metric(port, "python_gc_collections_total", generation="2") > collections,
                   GC_INTERVAL_S + 10, "a full collection by the timer", worker)
    finally:
        assert worker.stop() == 0
    # Paced: 0.1-0.2 CPU-s; looping on empty fetches: 4.4 (alone on the machine).
    assert idle_cpu < 0.2 * IDLE_S, f"an idle worker used {idle_cpu:.2f} CPU-s in {IDLE_S}s"
