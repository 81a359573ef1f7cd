"""What "one order, one file" costs per order item, in the worker's own code.

    python -m bench.orders_check [--items 200000]

The same orders as bench/throughput.py (1-4 items each), 6 % of them re-sent, go through the
check exactly as the worker runs it per record (already parsed): the line identities
(``line_identities``), the
decision (``PartitionOrders.take``) and, per cut batch of 9 999 rows, the records to write
(``PartitionOrders.seal``) into a dict store (the memory store's) and their changelog records as
the worker makes them (``TableWriter``: Faust's codec bytes, ``encoder``, appended to an aiokafka record
batch; sending is not counted). Printed: CPU µs per item, and records written per item.
It runs with the worker's garbage-collector settings (``tune_gc``): with Python's defaults the
young collections alone would double the figure.
"""
from __future__ import annotations

import argparse
import random
import time

import orjson
from aiokafka.producer.message_accumulator import BatchBuilder

from bench.throughput import order_items
from streams.core.orders import PartitionOrders, line_identities
from streams.runtime.tables import encoder, record_batches
from streams.runtime.worker import tune_gc

ROWS = 9_999
KEY_BYTES = VALUE_BYTES = encoder("json")  # the orders table's codecs


def changelog(records: dict) -> int:
    """The records' changelog batches, filled as ``TableWriter._publish`` fills them (not sent)."""
    pairs = [(KEY_BYTES(k), VALUE_BYTES(v)) for k, v in records.items()]
    return sum(1 for _ in record_batches(pairs, lambda: BatchBuilder(16_384, 0)))


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
    store: dict = {}
    orders = PartitionOrders(store, 300.0)
    taken: dict[str, dict[str, int]] = {}
    refused = written = rows = 0
    start = time.process_time()
    for offset, (item, raw) in enumerate(stream):
        lines = line_identities([item], raw)
        if orders.take(item["order_id"], lines, offset, 0.0, item.get("items_in_order")) is not None:
            refused += 1
            continue
        order = taken.setdefault(item["order_id"], {})
        for line in lines:
            order[line] = offset
        rows += 1
        if rows >= ROWS:
            records = orders.seal(taken, f"f{offset}", None, 0.0)
            store.update(records)
            changelog(records)
            written, taken, rows = written + len(records), {}, 0
    records = orders.seal(taken, "last", None, 0.0)
    store.update(records)
    changelog(records)
    written += len(records)
    cpu_s = time.process_time() - start
    return {"items": len(stream), "refused": refused, "records": written, "cpu_s": cpu_s,
            "us_per_item": cpu_s / len(stream) * 1e6, "records_per_item": written / len(stream)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000)
    r = run(ap.parse_args().items)
    print(f"{r['items']:,} items ({r['refused']:,} re-sent copies refused): {r['us_per_item']:.2f} µs CPU per item, "
          f"{r['records_per_item']:.3f} order records written per item")


if __name__ == "__main__":
    main()
