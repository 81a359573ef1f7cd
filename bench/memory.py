"""Memory and disk per stored im_ref in the `clicks` table on Faust's RocksDB store.

    python -m bench.memory [--keys 100000,300000,1000000] [--extrapolate 10000000]

Each size runs in a fresh process. The app is built by ``streams.runtime.app.create_app`` with
``store: rocksdb://``, so the table's store is Faust's own ``faust.stores.rocksdb.Store`` with
Faust's options and the table's serializers (key and value: Faust's ``json`` codec). Customer
histories are built by ``attribution.remember`` (what the clicks agent stores) and written
through ``Store.apply_changelog_batch`` in chunks of 1 000 (how recovery fills the store), one
RocksDB per partition (4), partitioned like the producer (murmur2 of the customer id).

Then every partition is compacted (memtable flushed to SST), and every key is read once in
scattered order, as the order-items agent does, so the block cache holds what a running worker
would hold. Counted: SST bytes on disk, and VmRSS growth over the process after the app and the
empty databases were opened (fixed costs such as Faust's imports are excluded; memtables and
block cache are included). 10 M is extrapolated from a least-squares line through the measured
sizes, not measured.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, NamedTuple

PARTITIONS = 4
CUSTOMER_ID_LEN = 16
IM_REF_LEN = 40  # impact ClickIds seen in the wild are ~40 characters (at most 64)
# Most customers click once within the 30-day window; a few keep the full history of 4.
CLICK_MIX = ((1, 0.75), (2, 0.15), (3, 0.05), (4, 0.05))
ALPHABET = string.ascii_letters + string.digits
NOW = 1_790_000_000.0
WINDOW_S = 30 * 86400


def customer_id(i: int) -> str:
    return f"cust-{i:0{CUSTOMER_ID_LEN - 5}d}"


def history_for(i: int) -> list:
    """Customer i's stored clicks: deterministic, so recovery and memory use the same data."""
    from streams.core.attribution import remember

    rng = random.Random(i)
    r, n = rng.random(), CLICK_MIX[-1][0]
    for count, share in CLICK_MIX:
        if r < share:
            n = count
            break
        r -= share
    history = None
    for _ in range(n):
        at = float(int(NOW - rng.random() * WINDOW_S))
        history = remember(history, at, "".join(rng.choices(ALPHABET, k=IM_REF_LEN)), 4, WINDOW_S)
    return history


def partition_of(key: bytes) -> int:
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS


def changelog_records(n: int, encode_key, encode_value) -> Iterator[tuple[int, bytes, bytes, int]]:
    """(partition, key, value, clicks) for customers 0..n-1, encoded as the table encodes them."""
    for i in range(n):
        cid = customer_id(i)
        history = history_for(i)
        yield partition_of(cid.encode()), encode_key(cid), encode_value(history), len(history)


def build_store(data_dir: Path):
    from streams.runtime.app import create_app
    from streams.config import parse_settings

    settings = parse_settings({
        "app_id": "bench-memory", "data_dir": str(data_dir), "store": "rocksdb://",
        "topics": {"partitions": PARTITIONS}, "impact": {"campaign_id": 1, "action_tracker_id": 1},
        "web": {"enabled": False}, "connections": [{"name": "o", "method": "fsspec", "url": str(data_dir / "o")}],
    })
    return create_app(settings).tables["clicks"].data


def vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class _Msg(NamedTuple):
    tp: object
    partition: int
    offset: int
    key: bytes
    value: bytes


class _Event(NamedTuple):
    message: _Msg


def measure_one(n: int, data_dir: Path) -> dict:
    from faust.types import TP

    store = build_store(data_dir)
    dbs = [store._db_for_partition(p) for p in range(PARTITIONS)]
    rss0 = vm("VmRSS")
    offsets = [0] * PARTITIONS
    chunk, clicks, raw = [], 0, 0
    t0 = time.perf_counter()
    for p, key, value, count in changelog_records(n, store._encode_key, store._encode_value):
        chunk.append(_Event(_Msg(TP("bench-memory-clicks-changelog", p), p, offsets[p], key, value)))
        offsets[p] += 1
        clicks += count
        raw += len(key) + len(value)
        if len(chunk) == 1000:
            store.apply_changelog_batch(chunk, None, None)
            chunk = []
    if chunk:
        store.apply_changelog_batch(chunk, None, None)
    write_s = time.perf_counter() - t0
    rss_written = vm("VmRSS")
    for db in dbs:
        db.compact_range()
    rss_compacted = vm("VmRSS")
    sst = sum(f.stat().st_size for f in data_dir.rglob("*.sst"))
    total = sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())
    # A stride coprime with n visits every key once, scattered, without a list of n keys in RAM.
    stride = next(s for s in range(7_919, 10 * n + 7_919) if _gcd(s, n) == 1)
    missing = 0
    for j in range(n):
        cid = customer_id(j * stride % n).encode()
        if dbs[partition_of(cid)].get(b'"' + cid + b'"') is None:
            missing += 1
    rss_read = vm("VmRSS")
    return {"keys": n, "im_refs": clicks, "raw_bytes": raw, "sst_bytes": sst, "dir_bytes": total,
            "rss_base": rss0, "rss_written": rss_written - rss0, "rss_compacted": rss_compacted - rss0,
            "rss_read": rss_read - rss0, "missing": missing, "write_s": write_s}


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else my / mx
    return my - b * mx, b


def run(sizes: list[int], extrapolate: int) -> dict:
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as d:
            out = subprocess.run([sys.executable, "-m", "bench.memory", "--one", str(n), "--dir", d],
                                 capture_output=True, text=True, cwd=Path(__file__).parents[1])
        if out.returncode:
            raise SystemExit(f"bench.memory --one {n} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    refs_per_key = rows[-1]["im_refs"] / rows[-1]["keys"]
    result = {"rows": rows, "refs_per_key": refs_per_key, "extrapolate": extrapolate}
    for what in ("sst_bytes", "rss_read"):
        if len(rows) > 1:
            a, b = _fit([r["im_refs"] for r in rows], [r[what] for r in rows])
            refs = extrapolate * refs_per_key
            result[f"{what}_at_extrapolated"] = (a + b * refs) / refs
        else:  # one point: proportional
            result[f"{what}_at_extrapolated"] = rows[0][what] / rows[0]["im_refs"]
    return result


def print_report(result: dict) -> None:
    print(f"customer id {CUSTOMER_ID_LEN} chars, im_ref {IM_REF_LEN} chars, "
          f"{result['refs_per_key']:.2f} clicks per customer (mix {CLICK_MIX}), Faust json codec, "
          f"4 RocksDB partitions with Faust's options")
    print("\n| keys | im_refs | key+value bytes/im_ref | SST bytes/im_ref | RSS bytes/im_ref after write | "
          "after compaction | after reading every key | missing |\n|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        m = r["im_refs"]
        print(f"| {r['keys']:,} | {m:,} | {r['raw_bytes'] / m:.0f} | {r['sst_bytes'] / m:.0f} | "
              f"{r['rss_written'] / m:.0f} | {r['rss_compacted'] / m:.0f} | {r['rss_read'] / m:.0f} | {r['missing']} |")
    print(f"| {result['extrapolate']:,} (extrapolated) | {result['extrapolate'] * result['refs_per_key']:,.0f} | | "
          f"{result['sst_bytes_at_extrapolated']:.0f} | | | {result['rss_read_at_extrapolated']:.0f} | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", default="100000,300000,1000000", help="comma-separated customer counts")
    ap.add_argument("--extrapolate", type=int, default=10_000_000)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, Path(args.dir))), flush=True)
        os._exit(0)  # Faust's store never closes its databases; skip the slow teardown
    print_report(run([int(k) for k in args.keys.split(",")], args.extrapolate))


if __name__ == "__main__":
    main()
