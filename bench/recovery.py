"""Table recovery rate: how fast a fresh worker rebuilds the `clicks` table from its changelog.

    python -m bench.recovery [--keys 200000]

The changelog topic (``{app_id}-clicks-changelog``, 4 partitions) is written directly in
Faust's format before anything is timed: key and value through Faust's ``json`` codec, the
values being the click histories ``attribution.remember`` builds (the data of bench/memory.py),
each key in the partition the producer would have used. Then `imref-stream worker` starts with
``store: rocksdb://`` and an empty data_dir.

Counted: the recovery phase from Faust's log timestamps, "Restoring state from changelog
topics..." to "Done reading from changelog topics" (changelog fetched and written into RocksDB;
the group join before it is a fixed cost of the broker, reported apart as start-to-ready).
After a graceful stop the RocksDB files are opened and the keys counted, so a recovery that
stopped early cannot pass for a fast one. Then a warm restart on the same data_dir: Faust
starts from the offsets persisted in RocksDB and should have (almost) nothing to read.

On Tansu (IMREF_DEV_BROKER=tansu) the worker runs with the test-only workaround
(tests/support/tansu_compat.py): without it Tansu's wrong ListOffsets answer makes Faust stop
recovery early. noida-db, the default, needs none.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.memory import PARTITIONS, changelog_records
from streams.tools.devbroker import DevBroker, create_topics
from tests.support.harness import WorkerProcess, write_config

LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
OFFSET_KEY = b"__faust\0offset__"


def fill_changelog(bootstrap: str, topic: str, keys: int) -> float:
    from faust.serializers import codecs
    from kafka import KafkaProducer

    json_codec = codecs.get_codec("json")
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=50, batch_size=1 << 20)
    t0 = time.perf_counter()
    for p, key, value, _ in changelog_records(keys, json_codec.dumps, json_codec.dumps):
        producer.send(topic, key=key, value=value, partition=p)
    producer.flush()
    producer.close()
    return time.perf_counter() - t0


def log_time(log: str, text: str) -> float | None:
    """Epoch seconds of the first log line containing ``text`` (Faust logs milliseconds)."""
    for line in log.splitlines():
        if text in line:
            m = LOG_TIME.match(line)
            if m:
                return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def count_keys(data_dir: Path) -> int:
    import rocksdb

    n = 0
    for p in range(PARTITIONS):
        path = data_dir / "v1" / "tables" / f"clicks-{p}.db"
        if not path.exists():
            continue
        db = rocksdb.DB(str(path), rocksdb.Options(), read_only=True)
        it = db.iterkeys()
        it.seek_to_first()
        n += sum(1 for k in it if k != OFFSET_KEY)
        del it, db
    return n


def start_and_time(worker: WorkerProcess, timeout: float) -> dict:
    ready_s = worker.start().wait_ready(timeout)
    log = worker.log_text()
    began, done = log_time(log, "Restoring state from changelog topics"), log_time(log, "Done reading from changelog")
    return {"ready_s": ready_s, "recovery_s": (done - began) if began and done else 0.0}


def run(bootstrap: str, tmp: Path, keys: int, timeout: float = 900) -> dict:
    app_id = f"bench-recovery-{keys}-{int(time.time())}"
    changelog = f"{app_id}-clicks-changelog"
    create_topics(bootstrap, [f"{app_id}.clicks", f"{app_id}.order-items", changelog], PARTITIONS)
    produce_s = fill_changelog(bootstrap, changelog, keys)
    cfg = write_config(tmp / f"{app_id}.yaml", bootstrap=bootstrap, app_id=app_id, out_dir=tmp / f"{app_id}-out",
                       data_dir=tmp / f"{app_id}-state", store="rocksdb://")
    worker = WorkerProcess(cfg, tmp / f"{app_id}.log")
    cold = start_and_time(worker, timeout)
    assert worker.stop() == 0, worker.log_text()[-3000:]
    cold["keys_recovered"] = count_keys(tmp / f"{app_id}-state")
    warm = start_and_time(worker, timeout)
    assert worker.stop() == 0, worker.log_text()[-3000:]
    return {"keys": keys, "produce_s": produce_s, "cold": cold, "warm": warm,
            "keys_per_s": keys / cold["recovery_s"] if cold["recovery_s"] else float("nan"),
            "log": str(worker.log_path)}


def print_report(r: dict) -> None:
    c, w = r["cold"], r["warm"]
    print(f"changelog of {r['keys']:,} keys written in {r['produce_s']:.1f}s (not timed)")
    print("\n| start | recovery phase s | keys/s in recovery | start to ready s | keys in RocksDB after |\n"
          "|---|---|---|---|---|")
    print(f"| cold (empty data_dir) | {c['recovery_s']:.2f} | {r['keys_per_s']:,.0f} | {c['ready_s']:.1f} | "
          f"{c['keys_recovered']:,} of {r['keys']:,} |")
    print(f"| warm (same data_dir) | {w['recovery_s']:.2f} | | {w['ready_s']:.1f} | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as d, DevBroker(Path(d) / "broker.log") as broker:
        print_report(run(broker.bootstrap, Path(d), args.keys, args.timeout))


if __name__ == "__main__":
    main()
