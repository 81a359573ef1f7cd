"""Order items per second: the pipeline against a naive Faust agent and a raw consumer ceiling.

    python -m bench.throughput [--items 200000] [--customers 40000]

One local broker, one data set, produced before anything is timed (the broker's cost of
taking the data is not counted). Each contender runs as its own process (group) on the same topics:
- ceiling:  aiokafka getmany + orjson.loads per record, nothing else (bench/ceiling.py);
- baseline: the per-event Faust agent a user would write, validators compiled once (bench/naive.py);
- quix:     quix-streams doing the same join into CSV files with its own state (bench/quix.py);
- pipeline: `imref-stream worker`, end to end into 10 000-row files in a local folder, at-least-once;
  then two worker processes of one group on the 4 partitions (the scale-out figure).
Wall time runs from the first record processed (pipeline: from "Worker ready") to the last row
written; CPU is the process's user+system time over the same span, all threads.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
from kafka import KafkaProducer

from streams.tools.devbroker import DevBroker, create_topics, free_port
from tests.support.harness import WorkerProcess, write_config

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def order_items(items: int, customers: int, seed: int = 1, with_im_ref: bool = False):
    """(key, value) of ``items`` order items in orders of 1-4 items, 5 minutes old; with
    ``with_im_ref`` each carries its click id, so none waits for a click."""
    rng = random.Random(seed)
    at = (datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)).isoformat()
    n, order = 0, 0
    while n < items:
        c = rng.randrange(customers)
        cid = f"CUST{c:07d}"
        for _ in range(min(rng.randint(1, 4), items - n)):
            item = {"order_id": f"O{order:09d}", "customer_id": cid, "occurred_at": at,
                    "currency": "USD", "amount": f"{rng.randint(1, 500)}.{rng.randrange(100):02d}",
                    "category": "Garden", "sku": f"SKU-{rng.randrange(100000)}", "quantity": rng.randint(1, 3)}
            if with_im_ref:
                item["im_ref"] = f"IR{c:012d}"
            yield cid.encode(), orjson.dumps(item)
            n += 1
        order += 1


def produce(bootstrap: str, prefix: str, items: int, customers: int) -> int:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    p = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=50, batch_size=1 << 20)
    for c in range(customers):
        cid = f"CUST{c:07d}"
        p.send(f"{prefix}.clicks", key=cid.encode(), value=orjson.dumps(
            {"customer_id": cid, "im_ref": f"IR{c:012d}", "occurred_at": (now - timedelta(hours=2)).isoformat()}))
    n = 0
    for key, value in order_items(items, customers):
        p.send(f"{prefix}.order-items", key=key, value=value)
        n += 1
    p.flush()
    p.close()
    return n


def run_json(cmd: list[str], timeout: float) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).parents[1])
    found = re.findall(r'\{"items".*?\}', out.stdout + out.stderr)  # Faust logs what a worker prints
    if not found:
        raise SystemExit(f"{cmd[2]} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return json.loads(found[-1])


def start_workers(broker: DevBroker, tmp: Path, prefix: str, group: str, workers: int) -> list[WorkerProcess]:
    procs = []
    for w in range(workers):
        port = free_port()
        cfg = write_config(tmp / f"{group}-{w}.yaml", bootstrap=broker.bootstrap, app_id=group,
                           out_dir=tmp / group, data_dir=tmp / f"{group}-state-{w}",
                           topics={"clicks": f"{prefix}.clicks", "order_items": f"{prefix}.order-items"},
                           batch={"max_rows": 9_999, "max_age_s": 2}, attribution={"grace_s": 2},
                           web={"enabled": True, "host": "127.0.0.1", "port": port})
        worker = WorkerProcess(cfg, tmp / f"{group}-{w}.log", env={"IMREF_TEST_TANSU_COMPAT": ""}).start()
        worker.status_url = f"http://127.0.0.1:{port}/status.json"
        procs.append(worker)
    for worker in procs:
        worker.wait_ready(120)
    return procs


def partitions(worker: WorkerProcess) -> list[dict]:
    """Where each gated partition of the worker stands, from its status page (served by the
    worker's event loop, which a large fetch of a backlog holds for seconds: 5 s was too short)."""
    return json.load(urllib.request.urlopen(worker.status_url, timeout=60))["partitions"]


def run_pipeline(broker: DevBroker, tmp: Path, prefix: str, items: int, timeout: float, workers: int = 1,
                 produce_after_settle=None) -> dict:
    """``workers`` worker processes of one group on the topics' 4 partitions; CPU summed over them.

    With several workers the data is produced only once the group has settled
    (``produce_after_settle``, timed from its start): workers that start together still join
    in two generations when one creates its internal topics after the other joined, and that
    rebalance (Tansu holds a JoinGroup for seconds) is start-up, not throughput."""
    procs = start_workers(broker, tmp, prefix, f"{prefix}-pipeline-{workers}", workers)
    if produce_after_settle is not None:
        seen, quiet_since, deadline = None, time.monotonic(), time.monotonic() + 90
        while time.monotonic() - quiet_since < 8 and time.monotonic() < deadline:
            now = [sorted((p["topic"], p["partition"]) for p in partitions(w)) for w in procs]
            if now != seen:
                seen, quiet_since = now, time.monotonic()
            time.sleep(0.2)
    t0, cpu0 = time.perf_counter(), [cpu_seconds(w.proc.pid) for w in procs]
    if produce_after_settle is not None:
        produce_after_settle()
    # Every consumed record ends in a delivered batch (as a row, unattributed or dead-lettered):
    # the fresh topics' partitions are done up to the furthest any worker delivered.
    topic, reached = f"{prefix}.order-items", {}
    done, deadline = 0, time.monotonic() + timeout
    while done < items and time.monotonic() < deadline:
        time.sleep(0.1)
        for p in (p for w in procs for p in partitions(w) if p["topic"] == topic):
            reached[p["partition"]] = max(reached.get(p["partition"], 0), p["delivered_to"])
        done = sum(reached.values())
    wall = time.perf_counter() - t0
    cpu = sum(cpu_seconds(w.proc.pid) - c for w, c in zip(procs, cpu0))
    for worker in procs:
        worker.stop()
    return {"items": done, "wall_s": wall, "cpu_s": cpu, "workers": workers}


QUIX_PYTHON = Path(__file__).parents[1] / ".venv-quix" / "bin" / "python"  # made by scripts/setup.sh


def peer(module: str, broker: DevBroker, tmp: Path, prefix: str, n: int, timeout: float) -> dict:
    """A peer joining the same topics into CSV (bench/naive.py, bench/quix.py) in its own group;
    the quix-streams one in its own virtualenv (see bench/quix.py)."""
    python = str(QUIX_PYTHON) if module == "bench.quix" else sys.executable
    if not Path(python).exists():
        raise SystemExit(f"{python} is missing: run scripts/setup.sh")
    return run_json([python, "-m", module, "--bootstrap", broker.bootstrap, "--app-id", module,
                     "--clicks", f"{prefix}.clicks", "--items", f"{prefix}.order-items",
                     "--out", str(tmp / module), "--expect", str(n)], timeout)


def contenders(broker: DevBroker, tmp: Path, prefix: str, n: int, customers: int, timeout: float) -> dict:
    """Every contender on the same produced topics, one after another: key -> figures. Two
    workers get topics of their own, produced once their group has settled (run_pipeline)."""
    scale = f"{prefix}-x2"
    create_topics(broker.bootstrap, [f"{scale}.clicks", f"{scale}.order-items"], 4)
    return {
        "ceiling": run_json([sys.executable, "-m", "bench.ceiling", "--bootstrap", broker.bootstrap,
                             "--items", f"{prefix}.order-items", "--expect", str(n)], timeout),
        "baseline": peer("bench.naive", broker, tmp, prefix, n, timeout),
        "quix": peer("bench.quix", broker, tmp, prefix, n, timeout),
        "pipeline": run_pipeline(broker, tmp, prefix, n, timeout),
        "pipeline x2": run_pipeline(broker, tmp, scale, n, timeout, workers=2,
                                    produce_after_settle=lambda: produce(broker.bootstrap, scale, n, customers)),
    }


NAMES = {"ceiling": "ceiling (aiokafka getmany + orjson)", "baseline": "naive per-event Faust agent",
         "quix": "quix-streams", "pipeline": "pipeline (imref-stream worker)",
         "pipeline x2": "pipeline, 2 worker processes"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--customers", type=int, default=40_000)
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, DevBroker(Path(d) / "broker.log") as broker:
        tmp, prefix = Path(d), "bench"
        create_topics(broker.bootstrap, [f"{prefix}.clicks", f"{prefix}.order-items"], 4)
        t = time.perf_counter()
        n = produce(broker.bootstrap, prefix, args.items, args.customers)
        print(f"produced {n} order items and {args.customers} clicks in {time.perf_counter() - t:.0f}s "
              f"(not timed)", flush=True)
        results = contenders(broker, tmp, prefix, n, args.customers, args.timeout)
    print("\n| contender | items | wall s | items/s | CPU s | items per CPU-second |\n|---|---|---|---|---|---|")
    for key, r in results.items():
        print(f"| {NAMES[key]} | {r['items']} | {r['wall_s']:.1f} | {r['items'] / r['wall_s']:,.0f} | "
              f"{r['cpu_s']:.1f} | {r['items'] / r['cpu_s']:,.0f} |")


if __name__ == "__main__":
    main()
