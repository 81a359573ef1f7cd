"""Group-join and restart-to-ready times of the worker on the local test broker.

    python -m bench.group_times [--keys 5000] [--runs 3]

Measures, on the broker IMREF_DEV_BROKER names (streams/tools/devbroker.py), with the group
settings the tests use (session 6 s, heartbeat 1 s, rebalance 6 s), 4 partitions and a click table
of --keys customers: a fresh group join; restart after SIGTERM; restart after kill -9 with and
without static membership (kafka.instance_id; without it only on a broker that expires a dead
member's session: not noida-db). "Ready" is
Faust's "Worker ready": every partition assigned and its tables recovered.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from streams.tools.devbroker import DevBroker
from tests.support.harness import WorkerProcess, produce, write_config


def measure(broker: DevBroker, tmp: Path, keys: int, static: bool, runs: int) -> dict[str, list[float]]:
    app_id = f"bench-{'static' if static else 'dynamic'}-{int(time.time())}"
    kafka = {"instance_id": "bench-0"} if static else {}
    cfg = write_config(tmp / f"{app_id}.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=tmp / "out",
                       data_dir=tmp / app_id, kafka=kafka)
    worker = WorkerProcess(cfg, tmp / f"{app_id}.log").start()
    out = {"fresh join": [worker.wait_ready()]}
    produce(broker.bootstrap, f"{app_id}.clicks",
            [(f"C{i}".encode(), orjson.dumps({"customer_id": f"C{i}", "im_ref": f"R{i}",
                                              "occurred_at": "2026-11-01T00:00:00+00:00"})) for i in range(keys)])
    time.sleep(3)
    for _ in range(runs):
        assert worker.stop() == 0
        worker.start()
        out.setdefault("SIGTERM, restart", []).append(worker.wait_ready())
        time.sleep(2)
        if not (static or broker.kind.expires_sessions):
            continue  # the killed member would stay in the group for good (streams/tools/devbroker.py)
        worker.kill()
        worker.start()
        out.setdefault("kill -9, restart", []).append(worker.wait_ready(timeout=240))
        time.sleep(2)
    worker.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d, DevBroker(Path(d) / "broker.log") as broker:
        print(f"| membership | what | runs | median s | max s |  ({args.keys} keys in the click table)")
        print("|---|---|---|---|---|")
        for static in (False, True):
            for what, values in measure(broker, Path(d), args.keys, static, args.runs).items():
                print(f"| {'static' if static else 'dynamic'} | {what} | {len(values)} | "
                      f"{statistics.median(values):.1f} | {max(values):.1f} |", flush=True)


if __name__ == "__main__":
    main()
