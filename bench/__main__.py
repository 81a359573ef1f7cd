"""Every benchmark in one run, on one machine and one local broker, as one table.

    python -m bench [--smoke]

Stages: throughput (bench/throughput.py: ceiling, naive baseline, quix-streams, pipeline, two
workers with and without standby replicas), memory
(bench/memory.py), recovery (bench/recovery.py), cut-to-visible latency (bench/latency.py),
table state after 90 simulated days with and without expiry (bench/state_size.py), the
one-order-one-file check's cost per item (bench/orders_check.py).
Every stage produces its data before it starts timing, so the broker's cost of taking the data
is not counted. ``--smoke`` uses tiny sizes and runs the stages side by side to finish within a
minute: it proves the programs work, its figures mean nothing.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from bench import latency, memory, orders_check, recovery, state_size, throughput
from streams.tools.devbroker import DevBroker, broker_kind, create_topics

FULL = {"items": 200_000, "customers": 40_000, "memory_keys": [100_000, 300_000, 1_000_000],
        "recovery_keys": 1_000_000, "batches": 20, "rows": 9_999, "state": {**state_size.FULL, "days": 90}}
SMOKE = {"items": 2_000, "customers": 400, "memory_keys": [3_000, 6_000],
         "recovery_keys": 3_000, "batches": 4, "rows": 200, "state": state_size.SMOKE}
EXTRAPOLATE = 10_000_000

# Row labels, in print order; tests/test_bench_smoke.py checks each has a number.
PIPELINE, BASELINE, QUIX, CEILING = "pipeline items/s per worker core", "naive Faust agent items/s per core", \
    "quix-streams items/s per core", "ceiling items/s per core"
VS_BASELINE, VS_QUIX, VS_CEILING = "pipeline / naive Faust agent", "pipeline / quix-streams", "pipeline / ceiling"
# Two workers with Faust's default of one standby replica (each replays the other's changelog
# writes), and with none.
TWO_WALL, TWO_CPU, TWO_VS_ONE = "2 workers, 4 partitions, standby replicas 1: items/s (wall)", \
    "2 workers, 4 partitions, standby replicas 1: items/s per core", "2 workers, standby replicas 1 / one worker, per core"
TWO0_WALL, TWO0_CPU, TWO0_VS_ONE = "2 workers, 4 partitions, standby replicas 0: items/s (wall)", \
    "2 workers, 4 partitions, standby replicas 0: items/s per core", "2 workers, standby replicas 0 / one worker, per core"
MEM_MEASURED, MEM_EXTRAPOLATED, DISK = "memory per im_ref, measured", "memory per im_ref, extrapolated", \
    "disk (SST) per im_ref, measured"
RECOVERY, WARM = "recovery keys/s, empty data_dir", "recovery phase s, warm data_dir"
P50, P99 = "cut-to-visible p50 s", "cut-to-visible p99 s"
STATE_ON, STATE_OFF = "tables on disk with expiry", "tables on disk without expiry"
CHECK, CHECK_SHARE = "one order, one file: check CPU per item", "one order, one file: share of the pipeline's CPU per item"
ROWS = [PIPELINE, BASELINE, QUIX, CEILING, VS_BASELINE, VS_QUIX, VS_CEILING, TWO_WALL, TWO_CPU, TWO_VS_ONE, TWO0_WALL,
        TWO0_CPU, TWO0_VS_ONE, MEM_MEASURED, MEM_EXTRAPOLATED, DISK,
        RECOVERY, WARM, P50, P99, STATE_ON, STATE_OFF, CHECK, CHECK_SHARE]


def machine() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import faust

    return [f"CPU: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; faust-streaming "
            f"{faust.__version__}; broker: {broker_kind().title} on loopback",
            f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average at start: {loadavg()}"]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def stage_throughput(broker: DevBroker, tmp: Path, size: dict) -> dict:
    prefix, bootstrap = "bench", broker.bootstrap
    create_topics(bootstrap, [f"{prefix}.clicks", f"{prefix}.order-items"], throughput.PARTITIONS)
    n = throughput.produce(bootstrap, prefix, size["items"], size["customers"])
    return throughput.contenders(broker, tmp, prefix, n, size["customers"], 900)


def stages(broker: DevBroker, tmp: Path, size: dict, parallel: bool) -> dict:
    bootstrap = broker.bootstrap
    work = {
        "throughput": lambda: stage_throughput(broker, _dir(tmp, "throughput"), size),
        "memory": lambda: memory.run(size["memory_keys"], EXTRAPOLATE),
        "recovery": lambda: recovery.run(bootstrap, _dir(tmp, "recovery"), size["recovery_keys"]),
        "latency": lambda: latency.run(bootstrap, _dir(tmp, "latency"), size["batches"], size["rows"]),
        "state": lambda: state_size.run(size["state"]),
        "orders": lambda: orders_check.isolated(size["items"]),
    }
    out = {}
    with ThreadPoolExecutor(max_workers=len(work) if parallel else 1) as pool:
        futures = {name: pool.submit(fn) for name, fn in work.items()}
        for name, fut in futures.items():
            out[name] = fut.result()
            if not parallel:
                print(f"  {name} done ({loadavg()} load)", file=sys.stderr, flush=True)
    return out


def _dir(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir(exist_ok=True)
    return tmp / name


def table(r: dict, size: dict) -> list[tuple[str, float, str, str, str]]:
    """(label, value, unit, target, met) rows."""
    per_cpu = {k: v["items"] / v["cpu_s"] for k, v in r["throughput"].items()}
    m, rec, lat, st = r["memory"], r["recovery"], r["latency"], r["state"]
    days = size["state"]["days"]
    on, off = state_size.at_day(st, "with", days), state_size.at_day(st, "without", days)
    largest = m["rows"][-1]
    mem_measured = largest["rss_read"] / largest["im_refs"]
    vs_base = per_cpu["pipeline"] / per_cpu["baseline"]
    vs_quix = per_cpu["pipeline"] / per_cpu["quix"]
    vs_ceiling = per_cpu["pipeline"] / per_cpu["ceiling"]
    one, two, two0 = r["throughput"]["pipeline"], r["throughput"]["pipeline x2"], r["throughput"]["pipeline x2 standby 0"]
    two_vs_one, two0_vs_one = per_cpu["pipeline x2"] / per_cpu["pipeline"], per_cpu["pipeline x2 standby 0"] / per_cpu["pipeline"]
    check = r["orders"]
    share = check["us_per_item"] / (1e6 / per_cpu["pipeline"])

    def met(ok: bool) -> str:
        return "met" if ok else "MISSED"

    return [
        (PIPELINE, per_cpu["pipeline"], "items/CPU-s", ">= 50000", met(per_cpu["pipeline"] >= 50_000)),
        (BASELINE, per_cpu["baseline"], "items/CPU-s", "", ""),
        (QUIX, per_cpu["quix"], "items/CPU-s", "", ""),
        (CEILING, per_cpu["ceiling"], "items/CPU-s", "", ""),
        (VS_BASELINE, vs_base, "x", ">= 10x", met(vs_base >= 10)),
        (VS_QUIX, vs_quix, "x", ">= 1.5x", met(vs_quix >= 1.5)),
        (VS_CEILING, vs_ceiling, "x", ">= 0.2x", met(vs_ceiling >= 0.2)),
        (TWO_WALL, two["items"] / two["wall_s"], "items/s",
         f"one worker: {one['items'] / one['wall_s']:,.0f}", ""),
        (TWO_CPU, per_cpu["pipeline x2"], "items/CPU-s", f"one worker: {per_cpu['pipeline']:,.0f}", ""),
        (TWO_VS_ONE, two_vs_one, "x", ">= 0.9x", met(two_vs_one >= 0.9)),
        (TWO0_WALL, two0["items"] / two0["wall_s"], "items/s", f"one worker: {one['items'] / one['wall_s']:,.0f}", ""),
        (TWO0_CPU, per_cpu["pipeline x2 standby 0"], "items/CPU-s", f"one worker: {per_cpu['pipeline']:,.0f}", ""),
        (TWO0_VS_ONE, two0_vs_one, "x", ">= 0.9x", met(two0_vs_one >= 0.9)),
        (f"{MEM_MEASURED} ({largest['keys']:,} keys)", mem_measured, "B RSS", "<= 200", met(mem_measured <= 200)),
        (f"{MEM_EXTRAPOLATED} ({EXTRAPOLATE:,} keys)", m["rss_read_at_extrapolated"], "B RSS",
         "<= 200", met(m["rss_read_at_extrapolated"] <= 200)),
        (f"{DISK} ({largest['keys']:,} keys)", largest["sst_bytes"] / largest["im_refs"], "B", "", ""),
        (f"{RECOVERY} ({rec['keys']:,} keys)", rec["keys_per_s"], "keys/s", ">= 100000",
         met(rec["keys_per_s"] >= 100_000)),
        (WARM, rec["warm"]["recovery_s"], "s", "< 10% of cold",
         met(rec["warm"]["recovery_s"] < 0.1 * rec["cold"]["recovery_s"])),
        (f"{P50} ({lat['batches']} batches of {size['rows']:,} rows)", lat["p50_s"], "s", "", ""),
        (f"{P99} ({lat['batches']} batches of {size['rows']:,} rows)", lat["p99_s"], "s", "<= 2", met(lat["p99_s"] <= 2)),
        (f"{STATE_ON} after {days} simulated days (clicks + reported orders)", state_size.total(on, "sst_bytes") / 1e6,
         "MB SST", "", ""),
        (f"{STATE_OFF} after {days} simulated days (clicks + reported orders)",
         state_size.total(off, "sst_bytes") / 1e6, "MB SST", "", ""),
        (f"{CHECK} (identity, decision, records and their changelog bytes; {check['records_per_item']:.2f} order records per item)",
         check["us_per_item"], "µs", "", ""),
        (CHECK_SHARE, share * 100, "%", "<= 10", met(share <= 0.10)),
    ]


def _wall(r: dict) -> str:
    return f"{r['items'] / r['wall_s']:,.0f}"


def _shares(r: dict) -> str:
    moved = f", {r['partitions_moved']} partitions changed hands while timed" if r["partitions_moved"] else ""
    return " + ".join(f"{n:,}" for n in r["items_per_worker"]) + \
        f" (CPU s {' + '.join(map(str, r['cpu_s_per_worker']))}; {r['unattributed']:,} unattributed{moved})"


def fmt(v: float) -> str:
    if math.isnan(v):
        return "nan"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, stages side by side, < 60 s")
    args = ap.parse_args()
    size = SMOKE if args.smoke else FULL
    throughput.require_quix()
    header = machine()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as d, DevBroker(Path(d) / "broker.log") as broker:
        results = stages(broker, Path(d), size, parallel=args.smoke)
    thr, rec, mem = results["throughput"], results["recovery"], results["memory"]
    days = size["state"]["days"]
    on, off = state_size.at_day(results["state"], "with", days), state_size.at_day(results["state"], "without", days)
    print("\n".join(header))
    print(f"load average at end: {loadavg()}; {time.monotonic() - t0:.0f}s{' (smoke sizes)' if args.smoke else ''}")
    print("\n| figure | value | unit | target | result |\n|---|---|---|---|---|")
    for label, value, unit, target, result in table(results, size):
        print(f"| {label} | {fmt(value)} | {unit} | {target or '-'} | {result or '-'} |")
    print(f"""
What was counted:
- throughput: {size['items']:,} order items and {size['customers']:,} clicks produced before any contender ran.
  Items per CPU-second of the contender's process (user+system, all threads) from its first record to its
  last: pipeline = `imref-stream worker` from "Worker ready" to the last item in a delivered file (10 000-row
  files in a local folder, at-least-once); naive Faust agent = bench/naive.py (per-event agent, orjson,
  schemas compiled once, Faust table, buffered csv); quix-streams = bench/quix.py (the same join into CSV
  files, clicks in quix's own state); ceiling = bench/ceiling.py (aiokafka getmany + orjson.loads, nothing
  else). Wall-clock items/s: pipeline {_wall(thr['pipeline'])}, naive {_wall(thr['baseline'])}, quix
  {_wall(thr['quix'])}, ceiling {_wall(thr['ceiling'])}. 2 workers: two processes of one group on the same
  backlog, held before their first fetch until each owned half the partitions, then let go together; wall from
  then to the last item delivered, CPU summed over both until their standbys had also read the other's changelog
  writes to the end ({thr['pipeline x2']['standbys_behind_s']:.1f} s after the last delivery); standby replicas 1
  (Faust's default: each worker replays the other's changelog writes) and 0. Items per worker:
  {_shares(thr['pipeline x2'])} (standby 1),
  {_shares(thr['pipeline x2 standby 0'])} (standby 0); one worker: {thr['pipeline']['unattributed']:,} unattributed
  (items read more than the grace before their click: each goes out alone, a slower path).
- memory: VmRSS growth of a process holding the `clicks` table in Faust's RocksDB store (Faust's options,
  json codec), after writing, compacting and reading every key once, divided by stored im_refs
  ({mem['refs_per_key']:.2f} per customer; 16-char customer ids, 40-char im_refs); per customer multiply by
  {mem['refs_per_key']:.2f}. 10 M is extrapolated (not measured) from a least-squares line through the
  measured {', '.join(f"{k:,}" for k in size['memory_keys'])} keys.
- recovery: `clicks` changelog of {rec['keys']:,} keys written in Faust's format; a worker with an empty
  RocksDB data_dir; keys / (Faust's "Done reading from changelog topics" - "Restoring state from changelog
  topics"); {rec['cold']['keys_recovered']:,} keys found in RocksDB afterwards. Start to ready: cold
  {rec['cold']['ready_s']:.1f}s, warm {rec['warm']['ready_s']:.1f}s (group join included).
- cut-to-visible: the worker consumes a produced backlog; from the monotonic time it logs at a size cut to
  the file first seen under its final name in the local fsspec folder (5 ms polling); p99 is nearest-rank.
- tables on disk: bench/state_size.py, {size['state']['clicks_per_day']:,} clicks/day from {size['state']['customers']:,}
  customers and {size['state']['orders_per_day']:,} orders/day in simulated time, written into the worker's `clicks` and
  `reported-orders` RocksDB stores; SST bytes of both after a full compaction, with the sweep's rules applied (default
  settings) and without. Live keys on day {days}: clicks {on['clicks']['keys']:,} with expiry, {off['clicks']['keys']:,}
  without; reported orders {on['reported-orders']['keys']:,} with, {off['reported-orders']['keys']:,} without.
- one order, one file: bench/orders_check.py, the throughput stage's orders with 6 % re-sent, through the worker's
  own check code in a process of its own (line identities, the decision, the order records per 9 999-row file into a dict
  store, and their changelog records' bytes in aiokafka record batches: {results['orders']['records_per_item']:.2f}
  per item; only sending them is not counted), with the worker's collector settings: CPU µs per item against the
  pipeline's CPU µs per item (which includes the check).""")


if __name__ == "__main__":
    main()
