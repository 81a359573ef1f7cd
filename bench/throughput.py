"""Order items per second: the pipeline against a naive Faust agent and a raw consumer ceiling.

    python -m bench.throughput [--items 200000] [--customers 40000]
    python -m bench.throughput --workers-only --rounds 2 --store both   # memory:// against rocksdb://

One local broker, one data set, produced before anything is timed (the broker's cost of
taking the data is not counted). Each contender runs as its own process (group) on the same topics:
- ceiling:  aiokafka getmany + orjson.loads per record, nothing else (bench/ceiling.py);
- baseline: the per-event Faust agent a user would write, validators compiled once (bench/naive.py);
- quix:     quix-streams doing the same join into CSV files with its own state (bench/quix.py);
- pipeline: `imref-stream worker`, end to end into 10 000-row files in a local folder, at-least-once;
  then two worker processes of one group on the 4 partitions (the scale-out figure), with Faust's
  standby replicas (1, its default) and without (0).
Wall time runs from the first record processed (pipeline: from "Worker ready"; two workers: from
the moment both may fetch) to the last row written; CPU is the process's user+system time over the
same span, all threads (two workers: until their standbys have also read each other's changelog
writes to the end).
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
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.tools.devbroker import DevBroker, create_topics, free_port
from tests.support.harness import WorkerProcess, write_config

TICK = os.sysconf("SC_CLK_TCK")
PARTITIONS = 4  # of the produced topics (bench/__main__.py and main() create them) and in the workers' config


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


def start_workers(broker: DevBroker, tmp: Path, prefix: str, group: str, workers: int,
                  standby_replicas: int = 1, go: Path | None = None, store: str = "memory://") -> list[WorkerProcess]:
    """``workers`` worker processes of one group, ready; with ``go``, none fetches a record before
    that file exists (tests/support/imref_test_hooks.py)."""
    procs = []
    env = {"IMREF_TEST_TANSU_COMPAT": ""}
    if go is not None:
        env.update(IMREF_TEST_HOOKS="1", IMREF_TEST_START_AFTER=str(go))
    for w in range(workers):
        port = free_port()
        cfg = write_config(tmp / f"{group}-{w}.yaml", bootstrap=broker.bootstrap, app_id=group,
                           out_dir=tmp / group, data_dir=tmp / f"{group}-state-{w}",
                           topics={"clicks": f"{prefix}.clicks", "order_items": f"{prefix}.order-items",
                                   "partitions": PARTITIONS},
                           batch={"max_rows": 9_999, "max_age_s": 2}, attribution={"grace_s": 2},
                           web={"enabled": True, "host": "127.0.0.1", "port": port},
                           standby_replicas=standby_replicas, store=store)
        worker = WorkerProcess(cfg, tmp / f"{group}-{w}.log", env=env).start()
        worker.status_url = f"http://127.0.0.1:{port}/status.json"
        procs.append(worker)
    try:
        for worker in procs:
            worker.wait_ready(120)
    except BaseException:
        for worker in procs:
            worker.kill()
        raise
    return procs


def status(worker: WorkerProcess) -> dict:
    """The worker's status page (served by the worker's event loop, which a large fetch of a
    backlog holds for seconds: 5 s was too short)."""
    return json.load(urllib.request.urlopen(worker.status_url, timeout=60))


def partitions(worker: WorkerProcess) -> list[dict]:
    """Where each gated partition of the worker stands, from its status page."""
    return status(worker)["partitions"]


def wait_shared(procs: list[WorkerProcess], topics: set[str], partitions_per_topic: int, quiet_s: float = 5,
                timeout: float = 120) -> None:
    """Until every worker is ready with an equal share of the topics' partitions, all of them
    owned, unchanged for ``quiet_s``: workers started together join one after another, and one
    that creates its internal topics after the others joined makes the group rebalance once more."""
    seen, quiet_since, deadline = None, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        pages = [status(w) for w in procs]
        now = [(page["ready"], sorted((p["topic"], p["partition"]) for p in page["partitions"])) for page in pages]
        if now != seen:
            seen, quiet_since = now, time.monotonic()
        owned = [[tp for tp in tps if tp[0] in topics] for _, tps in now]
        shared = all(ready for ready, _ in now) and len({len(o) for o in owned}) == 1 and \
            len({tp for o in owned for tp in o}) == sum(map(len, owned)) == len(topics) * partitions_per_topic
        if shared and time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.2)
    raise SystemExit(f"{len(procs)} workers did not settle on a shared assignment in {timeout:.0f}s: {seen}")


def run_pipeline(broker: DevBroker, tmp: Path, prefix: str, items: int, timeout: float, workers: int = 1,
                 standby_replicas: int = 1, tag: str = "", store: str = "memory://") -> dict:
    """``workers`` worker processes of one group on the topics' 4 partitions, on the backlog
    already produced; CPU summed over them.

    Several workers are held before their first fetch (``go``) until each owns its share of the
    partitions, then let go together: started together, they still join one after another, and the
    first would read the backlog alone meanwhile (or most of it: the rebalance that lets the next
    one in takes seconds on Tansu). Nothing was consumed before that, so every item counts."""
    group = f"{prefix}-pipeline-{workers}" + (f"-standby{standby_replicas}" if workers > 1 else "") + tag
    go = tmp / f"{group}.go" if workers > 1 else None
    procs = start_workers(broker, tmp, prefix, group, workers, standby_replicas, go, store)
    try:  # a worker left running by a failed run would take CPU from every later one
        topic = f"{prefix}.order-items"
        if go is not None:
            wait_shared(procs, {f"{prefix}.clicks", topic}, PARTITIONS)
            early = sum(p["delivered_to"] - p["resumed_from"] for w in procs for p in partitions(w))
            if early:
                raise SystemExit(f"held workers delivered {early} records before they were let go")
        t0, cpu0 = time.perf_counter(), [cpu_seconds(w.proc.pid) for w in procs]
        if go is not None:
            go.touch()
        # Every consumed record ends in a delivered batch (as a row, unattributed or dead-lettered):
        # the partitions are done up to the furthest any worker delivered.
        reached = {}
        done, deadline = 0, time.monotonic() + timeout
        while done < items and time.monotonic() < deadline:
            time.sleep(0.1)
            for p in (p for w in procs for p in partitions(w) if p["topic"] == topic):
                reached[p["partition"]] = max(reached.get(p["partition"], 0), p["delivered_to"])
            done = sum(reached.values())
        wall = time.perf_counter() - t0
        # A standby replays the other worker's changelog writes as it gets to them: on noida-db it was
        # still at it 10 s after the last item was delivered. That work is the items' too.
        standbys_behind = wait_standbys(broker, procs, timeout) if go is not None else 0.0
        cpus = [cpu_seconds(w.proc.pid) - c for w, c in zip(procs, cpu0)]
        # Each worker's own part, and partitions that changed hands during the timed span (a rebalance
        # after a commit: resumed past 0), which would make the figure a rebalance's, not throughput's.
        # Items that ran past the grace before their click was read take the unattributed path, one
        # Faust send each: more of them (the order in which partitions were read) costs CPU per item.
        pages = [status(w) for w in procs]
        shares = [sum(p["delivered_to"] - p["resumed_from"] for p in page["partitions"] if p["topic"] == topic)
                  for page in pages]
        moved = sum(1 for page in pages for p in page["partitions"] if p["resumed_from"] > 0)
        unattributed = sum(sum(page["unattributed"].values()) for page in pages)
        return {"items": done, "wall_s": wall, "cpu_s": sum(cpus), "workers": workers,
                "standby_replicas": standby_replicas, "items_per_worker": shares,
                "cpu_s_per_worker": [round(c, 2) for c in cpus], "partitions_moved": moved,
                "unattributed": unattributed, "standbys_behind_s": standbys_behind}
    finally:
        stuck = []
        for worker in procs:
            try:
                worker.stop()
            except AssertionError as exc:  # killed after ignoring SIGTERM: the others still get theirs
                stuck.append(exc)
        if stuck:
            raise stuck[0]


def wait_standbys(broker: DevBroker, procs: list[WorkerProcess], timeout: float) -> float:
    """Seconds until every worker's standby changelog partitions are read to the end the broker
    gives (``/test/standby.json``, tests/support/imref_test_hooks.py). Tansu's ListOffsets answers
    the last batch's first offset + 1: there it may end up to one batch early."""
    t0, deadline = time.monotonic(), time.monotonic() + timeout
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        while True:
            read = {TopicPartition(s["topic"], s["partition"]): s["read"] for w in procs
                    for s in json.load(urllib.request.urlopen(f"http://127.0.0.1:{w.port}/test/standby.json", timeout=60))}
            ends = consumer.end_offsets(list(read)) if read else {}
            if all((read[tp] if read[tp] is not None else -1) + 1 >= end for tp, end in ends.items()):
                return time.monotonic() - t0
            if time.monotonic() > deadline:
                raise SystemExit(f"standbys not caught up in {timeout:.0f}s: read {read}, ends {ends}")
            time.sleep(0.1)
    finally:
        consumer.close()


QUIX_PYTHON = Path(__file__).parents[1] / ".venv-quix" / "bin" / "python"  # made by scripts/setup.sh


def require_quix() -> None:
    """Before minutes of other stages: the quix-streams contender needs its own virtualenv."""
    if not QUIX_PYTHON.exists():
        raise SystemExit(f"{QUIX_PYTHON} is missing: run scripts/setup.sh")


def peer(module: str, broker: DevBroker, tmp: Path, prefix: str, n: int, timeout: float) -> dict:
    """A peer joining the same topics into CSV (bench/naive.py, bench/quix.py) in its own group;
    the quix-streams one in its own virtualenv (see bench/quix.py)."""
    if module == "bench.quix":
        require_quix()
    python = str(QUIX_PYTHON) if module == "bench.quix" else sys.executable
    return run_json([python, "-m", module, "--bootstrap", broker.bootstrap, "--app-id", module,
                     "--clicks", f"{prefix}.clicks", "--items", f"{prefix}.order-items",
                     "--out", str(tmp / module), "--expect", str(n)], timeout)


def contenders(broker: DevBroker, tmp: Path, prefix: str, n: int, customers: int, timeout: float,
               only: set[str] | None = None, tag: str = "", store: str = "memory://") -> dict:
    """Every contender (or those in ``only``) on the same produced topics, one after another, each
    in a group of its own (``tag`` makes the workers' groups new for a repeated round): key ->
    figures. ``customers`` is what was produced (kept for callers)."""
    runs = {
        "ceiling": lambda: run_json([sys.executable, "-m", "bench.ceiling", "--bootstrap", broker.bootstrap,
                                     "--items", f"{prefix}.order-items", "--expect", str(n)], timeout),
        "baseline": lambda: peer("bench.naive", broker, tmp, prefix, n, timeout),
        "quix": lambda: peer("bench.quix", broker, tmp, prefix, n, timeout),
        "pipeline": lambda: run_pipeline(broker, tmp, prefix, n, timeout, tag=tag, store=store),
        "pipeline x2": lambda: run_pipeline(broker, tmp, prefix, n, timeout, workers=2, standby_replicas=1, tag=tag,
                                            store=store),
        "pipeline x2 standby 0": lambda: run_pipeline(broker, tmp, prefix, n, timeout, workers=2,
                                                      standby_replicas=0, tag=tag, store=store),
    }
    return {key: run() for key, run in runs.items() if only is None or key in only}


NAMES = {"ceiling": "ceiling (aiokafka getmany + orjson)", "baseline": "naive per-event Faust agent",
         "quix": "quix-streams", "pipeline": "pipeline (imref-stream worker)",
         "pipeline x2": "pipeline, 2 worker processes, standby replicas 1 (Faust's default)",
         "pipeline x2 standby 0": "pipeline, 2 worker processes, standby replicas 0"}
WORKERS = ["pipeline", "pipeline x2", "pipeline x2 standby 0"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--customers", type=int, default=40_000)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--workers-only", action="store_true",
                    help="only the worker's cases: one worker, two with and without standby replicas")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --workers-only: the worker's cases this many times, in turn, on one backlog "
                         "(this shared CPU's speed drifts between runs)")
    ap.add_argument("--store", choices=["memory://", "rocksdb://", "both"], default="memory://",
                    help="the workers' table store (the full bench uses memory://, production rocksdb://); "
                         "both: with --workers-only, each round on one store then the other")
    args = ap.parse_args()
    stores = ["memory://", "rocksdb://"] if args.store == "both" else [args.store]
    with tempfile.TemporaryDirectory() as d, DevBroker(Path(d) / "broker.log") as broker:
        tmp, prefix = Path(d), "bench"
        create_topics(broker.bootstrap, [f"{prefix}.clicks", f"{prefix}.order-items"], PARTITIONS)
        t = time.perf_counter()
        n = produce(broker.bootstrap, prefix, args.items, args.customers)
        print(f"produced {n} order items and {args.customers} clicks in {time.perf_counter() - t:.0f}s "
              f"(not timed)", flush=True)
        rounds = args.rounds if args.workers_only else 1
        for r in range(rounds):
            for store in stores:
                results = contenders(broker, tmp, prefix, n, args.customers, args.timeout,
                                     only=set(WORKERS) if args.workers_only else None,
                                     tag=f"-r{r}-{store[:-3]}", store=store)
                print_results(results, f"round {r + 1} of {rounds}, {store}, ")


def print_results(results: dict, title: str) -> None:
    one = results["pipeline"]["items"] / results["pipeline"]["cpu_s"]
    print(f"\n{title}load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}\n"
          "| contender | items | wall s | items/s | CPU s | items per CPU-second | per CPU-s / one worker |\n"
          "|---|---|---|---|---|---|---|")
    for key, r in results.items():
        per_cpu = r["items"] / r["cpu_s"]
        print(f"| {NAMES[key]} | {r['items']} | {r['wall_s']:.1f} | {r['items'] / r['wall_s']:,.0f} | "
              f"{r['cpu_s']:.1f} | {per_cpu:,.0f} | {per_cpu / one:.2f} |")
    for key in WORKERS:
        if key in results:
            r = results[key]
            print(f"{NAMES[key]}: items per worker {r['items_per_worker']}, CPU s per worker {r['cpu_s_per_worker']}, "
                  f"standbys caught up {r['standbys_behind_s']:.1f} s after the last delivery, "
                  f"unattributed {r['unattributed']}, partitions that changed hands while timed: "
                  f"{r['partitions_moved']}", flush=True)


if __name__ == "__main__":
    main()
