"""The baseline: a naive per-event Faust agent doing the same work with the same table.

Per event: stdlib json, the same JSON Schema through the `jsonschema` package, a table lookup,
one csv row written and flushed. Prints one JSON line of figures when ``--expect`` rows are
written, then exits."""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import faust
import jsonschema

from schemas import load


def main() -> None:
    p = argparse.ArgumentParser()
    for a in ("--bootstrap", "--clicks", "--items", "--out", "--app-id"):
        p.add_argument(a, required=True)
    p.add_argument("--expect", type=int, required=True)
    args = p.parse_args()
    app = faust.App(args.app_id, broker=f"kafka://{args.bootstrap}", store="memory://", web_enabled=False,
                    broker_session_timeout=6, broker_heartbeat_interval=1, broker_rebalance_timeout=6,
                    consumer_auto_offset_reset="earliest", topic_partitions=4, autodiscover=False,
                    datadir=os.path.dirname(args.out))
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    clicks, items = app.topic(args.clicks, **raw), app.topic(args.items, **raw)
    table = app.Table("clicks", key_type=str)
    click_schema, item_schema = load("click.schema.json"), load("order-item.schema.json")
    out = open(args.out, "a", newline="")
    writer = csv.writer(out)
    state = {"rows": 0, "t0": None, "cpu0": None}

    @app.agent(clicks)
    async def on_click(stream):
        async for value in stream:
            click = json.loads(value)
            jsonschema.validate(click, click_schema)
            table[click["customer_id"]] = click["im_ref"]

    @app.agent(items)
    async def on_item(stream):
        async for value in stream:
            if state["t0"] is None:
                state["t0"], state["cpu0"] = time.perf_counter(), time.process_time()
            item = json.loads(value)
            jsonschema.validate(item, item_schema)
            ref = item.get("im_ref") or table.get(item["customer_id"])
            if ref:
                writer.writerow([1000, 4321, item["occurred_at"], item["order_id"], ref, item["customer_id"],
                                 item["currency"], item["amount"], item["category"], item["sku"], item["quantity"]])
                out.flush()
            state["rows"] += 1
            if state["rows"] == args.expect:
                print(json.dumps({"items": state["rows"], "wall_s": time.perf_counter() - state["t0"],
                                  "cpu_s": time.process_time() - state["cpu0"]}), flush=True)
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    main()
