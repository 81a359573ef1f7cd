"""The ceiling: a raw aiokafka ``getmany`` loop that only decodes the events (orjson).
Prints one JSON line of figures after ``--expect`` records."""
from __future__ import annotations

import argparse
import asyncio
import json
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition


async def run(bootstrap: str, topic: str, expect: int) -> dict:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=16 << 20)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        n, t0, cpu0 = 0, None, None
        while n < expect:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            if t0 is None and batches:
                t0, cpu0 = time.perf_counter(), time.process_time()
            for records in batches.values():
                for r in records:
                    orjson.loads(r.value)
                n += len(records)
        return {"items": n, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0}
    finally:
        await consumer.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--items", required=True)
    p.add_argument("--expect", type=int, required=True)
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args.bootstrap, args.items, args.expect))), flush=True)


if __name__ == "__main__":
    main()
