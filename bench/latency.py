"""Cut-to-visible latency: from a batch reaching its row threshold to its file under its final name.

    python -m bench.latency [--batches 20] [--rows 9999]

All order items are produced before the worker starts (not timed); the worker then consumes the
backlog as fast as it can, so every upload competes with consumption for the worker's event loop
and CPU: a worst case for the delivery, not an idle one. Items carry their ``im_ref`` (checkout
had the cookie), so no batch waits for a click: in a backlog the order-items agent can run ahead
of the clicks agent, which a live stream, where the click comes minutes before the order, does not.

Counted, per full batch: from the CLOCK_MONOTONIC value of its cut, which the worker's status page
(``/status.json``, ``files[].cut_at``) shows (taken when it consumed the first item that no longer
fits, or by the timer for a full batch at the end of the backlog once its partition is quiet:
streams/core/batching.py), to the moment this
process, polling the local fsspec destination every 5 ms, first sees the file under its final
name (fsspec writes ``.name.part`` and renames). That span holds recording the cut in the
`batch-cuts` changelog (acks=all), rendering the CSV, the write and the rename. Batches cut by age
or at the final stop are not counted. CLOCK_MONOTONIC is one clock for every process on a Linux
machine, so the two processes' readings compare directly.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.throughput import order_items
from streams.tools.devbroker import DevBroker, create_topics, free_port
from tests.support.harness import WorkerProcess, write_config

PARTITIONS = 4


def produce_items(bootstrap: str, topic: str, items: int, customers: int = 50_000) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=50, batch_size=1 << 20)
    for key, value in order_items(items, customers, seed=2, with_im_ref=True):
        p.send(topic, key=key, value=value)
    p.flush()
    p.close()


class Watcher(threading.Thread):
    """First sighting (monotonic) of every final file name in a directory."""

    def __init__(self, directory: Path, interval: float = 0.005):
        super().__init__(daemon=True)
        self.directory, self.interval = directory, interval
        self.seen: dict[str, float] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                names = os.listdir(self.directory)
            except FileNotFoundError:
                names = []
            now = time.monotonic()
            for name in names:
                if not name.startswith(".") and name not in self.seen:
                    self.seen[name] = now
            time.sleep(self.interval)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: with 20 values p99 is the largest."""
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def run(bootstrap: str, tmp: Path, batches: int = 20, rows: int = 9_999, timeout: float = 600) -> dict:
    app_id = f"bench-latency-{int(time.time())}"
    create_topics(bootstrap, [f"{app_id}.clicks", f"{app_id}.order-items"], PARTITIONS)
    # Enough for `batches` size cuts however unevenly customers hash to partitions.
    items = (batches + 2 * PARTITIONS) * rows
    t = time.perf_counter()
    produce_items(bootstrap, f"{app_id}.order-items", items)
    produce_s = time.perf_counter() - t
    out, port = tmp / f"{app_id}-files", free_port()
    cfg = write_config(tmp / f"{app_id}.yaml", bootstrap=bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp / f"{app_id}-state", batch={"max_rows": rows, "max_age_s": 600},
                       attribution={"grace_s": 2}, web={"enabled": True, "host": "127.0.0.1", "port": port})
    cuts: dict[str, float] = {}  # file name -> its size or full cut (the status page lists the last 50)
    watcher = Watcher(out)
    watcher.start()
    worker = WorkerProcess(cfg, tmp / f"{app_id}.log").start()
    try:
        worker.wait_ready(120)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cuts.update(size_and_full_cuts(port))
            latencies = [(name, watcher.seen[name] - at) for name, at in cuts.items() if name in watcher.seen]
            if len(latencies) >= batches and len(latencies) == len(cuts):
                break
            time.sleep(0.5)
    finally:
        worker.stop()
        watcher.stopped.set()
    if len(latencies) < batches:
        raise SystemExit(f"only {len(latencies)} batches seen; see {worker.log_path}")
    values = [v for _, v in latencies]
    return {"batches": len(values), "rows": rows, "items": items, "produce_s": produce_s,
            "p50_s": percentile(values, 50), "p99_s": percentile(values, 99), "max_s": max(values),
            "min_s": min(values)}


def size_and_full_cuts(port: int) -> dict[str, float]:
    """The files on the worker's status page whose batch was cut at its row threshold: name -> cut."""
    status = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=60))
    return {f["name"]: f["cut_at"] for f in status["files"] if f["cut"] in ("size", "full")}


def print_report(r: dict) -> None:
    print(f"{r['items']:,} order items produced in {r['produce_s']:.1f}s (not timed); "
          f"{r['batches']} batches cut at {r['rows']:,} rows")
    print("\n| batches | p50 s | p99 s | min s | max s |\n|---|---|---|---|---|")
    print(f"| {r['batches']} | {r['p50_s']:.3f} | {r['p99_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--rows", type=int, default=9_999)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as d, DevBroker(Path(d) / "broker.log") as broker:
        print_report(run(broker.bootstrap, Path(d), args.batches, args.rows))


if __name__ == "__main__":
    main()
