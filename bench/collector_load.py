"""Click collector under load: accepted beacons a second and answer latency, on loopback only.

    python -m bench.collector_load [--requests 20000] [--concurrency 32] [--max-seconds 120]

Starts a local broker, one worker (it creates the topics and consumes the clicks meanwhile, as in
production) and one collector process (``imref-stream collector``) on 127.0.0.1, then keeps
``--concurrency`` beacons in flight from one asyncio client (aiohttp, keep-alive) until
``--requests`` were answered or ``--max-seconds`` passed, whichever comes first; it stops by
itself. Every beacon is valid, from another visitor (customer id, click id, X-Forwarded-For
address through one trusted proxy hop), so the rate limiter runs with a bucket per visitor; its
limits are set far above the load so that what is measured is the collector's capacity, not the
limits. An answer is a 202 only once the broker confirmed the click (acks=all), so its latency
holds the produce; each carries its two Set-Cookie headers. 2 000 beacons warm up first (not
counted).

Counted: accepted/s = 202 answers / seconds from the first counted request to the last answer;
p50/p99 = nearest-rank percentiles of the 202 answers' latency seen by the client; collector CPU =
its process's user+system seconds over the same span, and accepted per CPU-second = what one core
of the collector takes (one process, one event loop: it uses one core at most); the worker's CPU
over the span is what consuming the clicks cost it (before the collector was a process of its own,
the worker's figure held both). The load generator
shares the machine: on 2 cores the client, the collector, the worker and the broker compete, so
accepted/s is a floor. Last, the clicks topic is read back: it must hold every accepted beacon,
warm-up included.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from bench.__main__ import loadavg, machine
from bench.latency import percentile
from bench.throughput import cpu_seconds as cpu_s
from streams.tools.devbroker import DevBroker, free_port
from tests.support.collector import CollectorProcess
from tests.support.harness import WorkerProcess, read_topic, write_config

WARM_UP = 2_000
UNLIMITED = {"client_rate_per_s": 1e9, "client_burst": 1_000_000_000, "global_rate_per_s": 1e9,
             "global_burst": 1_000_000_000}


async def load(url: str, first: int, count: int, concurrency: int, deadline: float) -> tuple[list[float], dict]:
    """Send beacons first..first+count-1; latencies of the 202s, and how many of each status."""
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}
    numbers = iter(range(first, first + count))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def sender() -> None:
            for n in numbers:
                if time.monotonic() > deadline:
                    return
                body = orjson.dumps({"im_ref": f"LOAD-{n}", "customer_id": f"V-{n}",
                                     "landing_url": "https://shop.example/landing", "domain": "shop.example"})
                headers = {"Content-Type": "text/plain;charset=UTF-8",
                           "X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}
                t = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
                    if status == 202 and len(response.headers.getall("Set-Cookie", [])) == 2:
                        latencies.append(time.perf_counter() - t)
                    elif status == 202:
                        status = "202 without its cookies"
                    statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(sender() for _ in range(concurrency)))
    return latencies, statuses


def run(tmp: Path, requests: int, concurrency: int, max_seconds: float) -> dict:
    with DevBroker(tmp / "broker.log") as broker:
        port = free_port()
        cfg = write_config(tmp / "config.yaml", bootstrap=broker.bootstrap, app_id="bench-collector",
                           out_dir=tmp / "out", data_dir=tmp / "data",
                           collector={"host": "127.0.0.1", "port": port, "proxy_hops": 1, **UNLIMITED})
        worker = WorkerProcess(cfg, tmp / "worker.log").start()
        collector = None
        try:
            worker.wait_ready(120)  # the clicks topic exists, co-partitioned, before the collector starts
            collector = CollectorProcess(cfg, tmp / "collector.log", port).start()
            collector.wait_ready()
            url = f"{collector.base}/imref/collect"
            stop_at = time.monotonic() + max_seconds
            warm, _ = asyncio.run(load(url, 0, WARM_UP, concurrency, stop_at))
            cpu0, worker0, t0 = cpu_s(collector.proc.pid), cpu_s(worker.proc.pid), time.monotonic()
            latencies, statuses = asyncio.run(load(url, WARM_UP, requests, concurrency, stop_at))
            wall_s, collector_cpu_s = time.monotonic() - t0, cpu_s(collector.proc.pid) - cpu0
            worker_cpu_s = cpu_s(worker.proc.pid) - worker0
            if not latencies:
                raise SystemExit(f"no beacon accepted: {statuses}; see {collector.log_path}")
            accepted = len(warm) + len(latencies)
            in_topic = len(read_topic(broker.bootstrap, "bench-collector.clicks", expect=accepted, timeout=120,
                                      settle_s=2))
        finally:
            if collector is not None:
                collector.stop()
            worker.stop()
    return {"accepted": len(latencies), "wall_s": wall_s, "collector_cpu_s": collector_cpu_s,
            "worker_cpu_s": worker_cpu_s, "statuses": statuses,
            "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99),
            "max_ms": 1000 * max(latencies), "concurrency": concurrency, "accepted_total": accepted,
            "in_topic": in_topic}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.collector_load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000, help="counted beacons at most (after the warm-up)")
    ap.add_argument("--concurrency", type=int, default=32, help="beacons in flight")
    ap.add_argument("--max-seconds", type=float, default=120, help="stop sending after this long, warm-up included")
    args = ap.parse_args()
    header = machine()
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as d:
        r = run(Path(d), args.requests, args.concurrency, args.max_seconds)
    print("\n".join(header))
    print(f"load average at end: {loadavg()}")
    print(f"\n{r['accepted']:,} beacons accepted in {r['wall_s']:.1f}s, {r['concurrency']} in flight; "
          f"answers by status: {dict(sorted(r['statuses'].items(), key=str))}")
    print("\n| accepted/s | p50 ms | p99 ms | max ms | collector CPU-s per 1 000 accepted | accepted per "
          "collector CPU-second | worker CPU-s per 1 000 (consuming) |\n|---|---|---|---|---|---|---|")
    print(f"| {r['accepted'] / r['wall_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | "
          f"{1000 * r['collector_cpu_s'] / r['accepted']:.2f} | {r['accepted'] / r['collector_cpu_s']:,.0f} | "
          f"{1000 * r['worker_cpu_s'] / r['accepted']:.2f} |")
    print(f"\nclicks topic holds {r['in_topic']:,} records for {r['accepted_total']:,} accepted beacons (warm-up included)")
    if r["in_topic"] != r["accepted_total"]:
        raise SystemExit("an accepted beacon is missing from the topic, or a refused one is in it")


if __name__ == "__main__":
    main()
