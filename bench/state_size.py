"""State size after simulated months of traffic, with the table sweep and without it.

    python -m bench.state_size [--days 180] [--clicks-per-day 10000] [--orders-per-day 2000]

Time is simulated: every click and order carries its event or report time, and the sweep is
called with the simulated "now"; nothing waits. Each mode runs in a fresh process on a fresh
data_dir. The tables are the worker's own (``streams.runtime.app.create_app`` with ``store: rocksdb://``
and a returns connection, so Faust's RocksDB store with Faust's options and json codec):

- ``clicks``: each day ``--clicks-per-day`` clicks of customers drawn from ``--customers``,
  folded into their histories by ``attribution.remember`` (what ``Conversions.on_clicks`` stores);
- ``reported-orders``: each day ``--orders-per-day`` orders of 1 to 3 items, the value
  ``modifications.reported_order`` builds; one in ten is returned 1 to 30 days later (its
  ``changed_at``, which keeps it longer).

With expiry, the sweep's own code reads the store (``TableWriter.chunks``) and decides with the
worker's rules (``expiry.split`` with ``click_rule`` / ``order_rule``, default settings) at every
checkpoint; a deleted key is deleted from RocksDB and counted as a tombstone. What a table holds
right after a sweep does not depend on how often earlier sweeps ran (a sweep removes exactly what
is past its horizon), so sweeping at the checkpoints gives the state the worker's hourly sweep
leaves, give or take an hour of traffic. At each checkpoint: live keys, key+value bytes (what a
compacted changelog keeps, plus the tombstones of its last `delete.retention.ms`, 1 day by
default), and RocksDB SST bytes after a full compaction.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.memory import ALPHABET, IM_REF_LEN, PARTITIONS, customer_id, partition_of

START = 1_790_000_000.0  # day 0 of the simulation, epoch seconds
DAY = 86400.0
FULL = {"days": 180, "clicks_per_day": 10_000, "orders_per_day": 2_000, "customers": 1_000_000, "every": 30}
SMOKE = {"days": 90, "clicks_per_day": 300, "orders_per_day": 60, "customers": 20_000, "every": 30}


def build_tables(data_dir: Path):
    from streams.runtime.app import create_app
    from streams.config import parse_settings

    settings = parse_settings({
        "app_id": "bench-state", "data_dir": str(data_dir), "store": "rocksdb://",
        "topics": {"partitions": PARTITIONS}, "impact": {"campaign_id": 1, "action_tracker_id": 4321},
        "web": {"enabled": False},
        "connections": [{"name": "o", "method": "fsspec", "url": str(data_dir / "o")},
                        {"name": "r", "method": "fsspec", "url": str(data_dir / "r"),
                         "data_type": "action_modifications"}],
    })
    app = create_app(settings)
    return settings, app.tables["clicks"], app.tables["reported-orders"]


def order_rows(rng: random.Random, cid: str, order_id: str) -> list:
    rows = []
    for n in range(rng.randint(1, 3)):
        amount = f"{rng.randint(500, 20_000) / 100:.2f}"
        rows.append(("1", "4321", "2026-01-01T10:00:00+00:00", order_id, "R" * IM_REF_LEN, cid, "EUR", amount,
                     "Garden", f"SKU-{rng.randint(1, 99_999):05d}-{n}", str(rng.randint(1, 3))))
    return rows


def measure(table, dbs) -> dict:
    store = table.data
    keys = raw = 0
    for db in dbs:
        it = db.iteritems()
        it.seek_to_first()
        for k, v in it:
            if k != store.offset_key:
                keys += 1
                raw += len(k) + len(v)
        db.compact_range()
    sst = sum(f.stat().st_size for p in range(PARTITIONS) for f in store.partition_path(p).glob("*.sst"))
    return {"keys": keys, "changelog_bytes": raw, "sst_bytes": sst}


def sweep(table, rule, now: float) -> tuple[int, float]:
    """The worker's sweep decisions, applied to the store; (tombstones, CPU seconds)."""
    from streams.core.expiry import split
    from streams.runtime.sweep import CHUNK
    from streams.runtime.tables import TableWriter

    store, writer, tombstones = table.data, TableWriter(table), 0
    t0 = time.process_time()
    for p in range(PARTITIONS):
        db = store._dbs[p]
        for chunk in writer.chunks(p, CHUNK):
            gone, renewed = split(chunk, rule, now)
            for key in gone:
                db.delete(store._encode_key(key))
            for key, value in renewed.items():
                db.put(store._encode_key(key), store._encode_value(value))
            tombstones += len(gone)
    return tombstones, time.process_time() - t0


def simulate(size: dict, expire: bool, data_dir: Path) -> list[dict]:
    from streams.core import expiry
    from streams.core.attribution import remember
    from streams.core.changes import reported_order

    settings, clicks, orders = build_tables(data_dir)
    a = settings.attribution
    window_s = a.window_days * DAY
    rules = expiry.rules(settings)
    tables = {"clicks": clicks, "reported-orders": orders}
    dbs = {name: [t.data._db_for_partition(p) for p in range(PARTITIONS)] for name, t in tables.items()}
    ck, cv, ok, ov = clicks.data._encode_key, clicks.data._encode_value, orders.data._encode_key, orders.data._encode_value
    rng = random.Random(7)
    returns: dict[int, list] = {}
    checkpoints, n_orders = [], 0
    for day in range(1, size["days"] + 1):
        day_start = START + (day - 1) * DAY
        for _ in range(size["clicks_per_day"]):
            cid = customer_id(rng.randrange(size["customers"]))
            key = ck(cid)
            db = dbs["clicks"][partition_of(cid.encode())]
            old = db.get(key)
            at = float(int(day_start + rng.random() * DAY))
            history = remember(json.loads(old) if old else None, at, "".join(rng.choices(ALPHABET, k=IM_REF_LEN)),
                               a.clicks_per_customer, window_s)
            db.put(key, cv(history))
        for _ in range(size["orders_per_day"]):
            cid = customer_id(rng.randrange(size["customers"]))
            order_id = f"O-{n_orders:010d}"
            n_orders += 1
            reported_at = datetime.fromtimestamp(day_start + rng.random() * DAY, timezone.utc)
            value = reported_order(order_rows(rng, cid, order_id), "conversions_20260101_p000_000000000000-000000009999.csv",
                                   n_orders, reported_at.isoformat(timespec="seconds"))
            p = partition_of(cid.encode())
            dbs["reported-orders"][p].put(ok(order_id), ov(value))
            if rng.random() < 0.1:
                returns.setdefault(day + rng.randint(1, 30), []).append((p, order_id))
        for p, order_id in returns.pop(day, ()):
            old = dbs["reported-orders"][p].get(ok(order_id))
            if old is not None:
                value = json.loads(old)
                value["changed_at"] = datetime.fromtimestamp(day_start + DAY / 2, timezone.utc).isoformat()
                dbs["reported-orders"][p].put(ok(order_id), ov(value))
        if day % size["every"] == 0 or day == size["days"]:
            now = START + day * DAY
            point = {"day": day}
            for name, table in tables.items():
                tombstones, cpu = sweep(table, rules[name], now) if expire else (0, 0.0)
                point[name] = {**measure(table, dbs[name]), "tombstones": tombstones, "sweep_cpu_s": cpu}
            checkpoints.append(point)
            print(f"  day {day} done", file=sys.stderr, flush=True)
    return checkpoints


def run(size: dict) -> dict:
    out = {"size": size}
    for mode in ("without", "with"):
        with tempfile.TemporaryDirectory(prefix="bench-state-") as d:
            proc = subprocess.run([sys.executable, "-m", "bench.state_size", "--one", mode, "--dir", d,
                                   "--size", json.dumps(size)], capture_output=True, text=True,
                                  cwd=Path(__file__).parents[1])
        if proc.returncode:
            raise SystemExit(f"bench.state_size --one {mode} failed:\n{proc.stderr[-3000:]}")
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def at_day(result: dict, mode: str, day: int) -> dict:
    return next(p for p in result[mode] if p["day"] == day)


def total(point: dict, what: str) -> int:
    return point["clicks"][what] + point["reported-orders"][what]


def print_report(result: dict) -> None:
    s = result["size"]
    print(f"{s['clicks_per_day']:,} clicks/day from {s['customers']:,} customers, {s['orders_per_day']:,} orders/day "
          f"(1-3 items, 1 in 10 returned within 30 days); default settings: window 30 days + 1 day for late items, "
          f"keep_days 90; 4 RocksDB partitions, Faust's options and json codec")
    print("\n| day | table | keys without expiry | keys with expiry | changelog MB without | with | "
          "SST MB without | with | tombstones at the sweep | sweep CPU s |\n|---|---|---|---|---|---|---|---|---|---|")
    for without, with_ in zip(result["without"], result["with"]):
        for name in ("clicks", "reported-orders"):
            a, b = without[name], with_[name]
            print(f"| {with_['day']} | {name} | {a['keys']:,} | {b['keys']:,} | {a['changelog_bytes'] / 1e6:.1f} | "
                  f"{b['changelog_bytes'] / 1e6:.1f} | {a['sst_bytes'] / 1e6:.1f} | {b['sst_bytes'] / 1e6:.1f} | "
                  f"{b['tombstones']:,} | {b['sweep_cpu_s']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=FULL["days"])
    ap.add_argument("--clicks-per-day", type=int, default=FULL["clicks_per_day"])
    ap.add_argument("--orders-per-day", type=int, default=FULL["orders_per_day"])
    ap.add_argument("--customers", type=int, default=FULL["customers"])
    ap.add_argument("--every", type=int, default=FULL["every"], help="days between checkpoints")
    ap.add_argument("--one", choices=("with", "without"), help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(simulate(json.loads(args.size), args.one == "with", Path(args.dir))), flush=True)
        os._exit(0)  # Faust's store never closes its databases; skip the slow teardown
    print_report(run({"days": args.days, "clicks_per_day": args.clicks_per_day, "orders_per_day": args.orders_per_day,
                      "customers": args.customers, "every": args.every}))


if __name__ == "__main__":
    main()
