"""What "one order, one file" costs per order item, in the worker's own code.

    python -m bench.orders_check [--items 200000]

The same orders as bench/throughput.py (1-4 items each), 6 % of them re-sent, go through the
check exactly as the worker runs it per record (already parsed, its batch entry made): the line
identities (``line_identities``), the decision (``PartitionOrders.take``), the entry's order and
lines set, and, per cut batch of 9 999 rows, the taken lines (``taken_lines``), the records to
write (``PartitionOrders.seal``) into a dict store (the memory store's) and their changelog records
as the worker makes them (``TableWriter``: Faust's codec bytes, ``encoder``, appended to an aiokafka
record batch), and the refused records with their origin headers in the audit topic's record batches
(``streams.runtime.sends``); sending is not counted. Printed: CPU µs per item, and records written
per item.
It runs with the worker's garbage-collector settings (``tune_gc``): with Python's defaults the
young collections alone would double the figure.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import NamedTuple

import orjson
from aiokafka.producer.message_accumulator import BatchBuilder

from bench.throughput import order_items, run_json
from streams.core.batching import Entry
from streams.core.join import origin_headers
from streams.core.orders import PartitionOrders, line_identities, taken_lines
from streams.runtime.tables import NO_HEADERS, encoder, record_batches
from streams.runtime.worker import tune_gc

ROWS = 9_999
KEY_BYTES = VALUE_BYTES = encoder("json")  # the orders table's codecs


class Fetched(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


def new_batch() -> BatchBuilder:
    return BatchBuilder(16_384, 0)


def changelog(records: dict) -> int:
    """The records' changelog batches, filled as ``TableWriter._publish`` fills them (not sent)."""
    pairs = [(KEY_BYTES(k), VALUE_BYTES(v), NO_HEADERS) for k, v in records.items()]
    return sum(1 for _ in record_batches(pairs, new_batch))


def run(items: int, resend: float = 0.06, seed: int = 1) -> dict:
    tune_gc()
    events = [(orjson.loads(v), v) for _, v in order_items(items, max(items // 5, 1), seed)]
    rng = random.Random(seed)
    by_order: dict[str, list[tuple[dict, bytes]]] = {}
    for event in events:
        by_order.setdefault(event[0]["order_id"], []).append(event)
    stream, recent = [], []
    for lines in by_order.values():  # a re-sent order comes again a little later, whole
        stream += lines
        recent.append(lines)
        if rng.random() < resend:
            stream += recent[rng.randrange(max(len(recent) - 50, 0), len(recent))]
    # The pipeline makes the entries and has the fetched records, not the check.
    entries = [Entry(offset, 0) for offset in range(len(stream))]
    fetched = [Fetched("bench.order-items", 0, offset, b"customer", raw) for offset, (_, raw) in enumerate(stream)]
    store: dict = {}
    orders = PartitionOrders(store, 300.0)
    refused, audit = 0, []
    written = rows = first = 0

    def cut(last: int) -> int:
        records = orders.seal(taken_lines(entries[first:last + 1]), f"f{last}", None, 0.0)
        store.update(records)
        changelog(records)
        sum(1 for _ in record_batches(audit, new_batch))  # the refused records, to the audit topic
        audit.clear()
        return len(records)

    start = time.process_time()
    for (item, raw), entry, record in zip(stream, entries, fetched):
        lines = line_identities([item], raw)
        refusal = orders.take(item["order_id"], lines, entry.offset, 0.0, item.get("items_in_order"))
        if refusal is not None:
            refused += 1
            audit.append((record.key, raw, origin_headers(record, refusal.reason, refusal.detail, refusal.files or ())))
            continue
        entry.order_id, entry.lines = item["order_id"], lines
        rows += 1
        if rows >= ROWS:
            written, rows, first = written + cut(entry.offset), 0, entry.offset + 1
    written += cut(len(stream) - 1)
    cpu_s = time.process_time() - start
    return {"items": len(stream), "refused": refused, "records": written, "cpu_s": cpu_s,
            "us_per_item": cpu_s / len(stream) * 1e6, "records_per_item": written / len(stream)}


def isolated(items: int, timeout: float = 600) -> dict:
    """``run`` in a process of its own, as the worker's check runs: no other stage's threads in its
    CPU time, no other stage's objects for its collector to scan."""
    return run_json([sys.executable, "-m", "bench.orders_check", "--items", str(items), "--json"], timeout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    r = run(args.items)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{r['items']:,} items ({r['refused']:,} re-sent copies refused): {r['us_per_item']:.2f} µs CPU per item, "
          f"{r['records_per_item']:.3f} order records written per item")


if __name__ == "__main__":
    main()
