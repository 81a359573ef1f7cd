"""``imref-stream demo``: the whole pipeline on this machine, nothing to set up.

Starts a local Kafka-protocol broker, runs the worker as a user would, produces a realistic
stream (clicks, orders, late clicks, clicks outside the window, invalid events), waits for the
files and prints what was written where."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from .dev import read_reasons
from .devbroker import DevBroker, create_topics
from .producer import CheckoutProducer

CATEGORIES = ["Garden", "Tools", "Books", "Sporting Goods", "Kitchen"]


def _traffic(producer: CheckoutProducer, orders: int, rng: random.Random) -> dict:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    counts = Counter()
    late = []
    for n in range(orders):
        kind = rng.choices(["clicked", "cookie", "late", "none", "expired", "invalid"], [70, 10, 8, 5, 3, 4])[0]
        # returning customers only among those who clicked, so each kind's outcome is certain
        customer = f"CUST{rng.randrange(orders // 2 + 1):06d}" if kind == "clicked" else f"NEW{n:07d}"
        ref = f"IR{rng.getrandbits(64):016X}"
        if kind == "clicked":
            producer.click(customer, ref, (now - timedelta(hours=rng.randint(1, 48))).isoformat())
        elif kind == "expired":
            producer.click(customer, ref, (now - timedelta(days=45)).isoformat())
        elif kind == "late":
            late.append((customer, ref))
        items = [{"sku": f"SKU-{rng.randrange(10_000):05d}", "category": rng.choice(CATEGORIES),
                  "amount": f"{rng.randint(3, 300)}.{rng.randrange(100):02d}", "quantity": rng.randint(1, 3)}
                 for _ in range(rng.randint(1, 4))]
        order_id = f"ORD{n:07d}"
        if kind == "invalid":
            producer.order(order_id, customer, rng.choice(["EURO", "XXY"]), items[:1])
        else:
            producer.order(order_id, customer, "USD", items, im_ref=ref if kind == "cookie" else None)
        counts[kind] += len(items) if kind != "invalid" else 1
    producer.send(producer.items_topic, "CUST-broken", b'{"order_id": "ORD-broken", ')
    counts["invalid"] += 1
    producer.flush()
    time.sleep(1.0)  # these clicks arrive after their orders, inside the grace period
    for customer, ref in late:
        producer.click(customer, ref, (now - timedelta(minutes=10)).isoformat())
    producer.flush()
    return counts


def _rows(folder: Path) -> dict[str, int]:
    return {p.name: p.read_bytes().count(b"\r\n") - 1 for p in sorted(folder.glob("*.csv"))}


def run_demo(output: str, orders: int) -> int:
    out = Path(output).resolve()
    files_dir = out / "files"
    out.mkdir(parents=True, exist_ok=True)
    for old in files_dir.glob("*.csv"):
        old.unlink()
    broker = DevBroker(out / "broker.log").start()
    worker = None
    try:
        topics = {"clicks": "demo.clicks", "order_items": "demo.order-items",
                  "unattributed": "demo.unattributed", "dead_letter": "demo.dead-letter", "partitions": 4}
        create_topics(broker.bootstrap, [topics["clicks"], topics["order_items"]], topics["partitions"])
        config = out / "config.yaml"
        config.write_text(yaml.safe_dump({
            "app_id": "imref-demo", "data_dir": str(out / "state"), "topics": topics,
            "kafka": {"brokers": [f"kafka://{broker.bootstrap}"], "session_timeout_s": 6,
                      "heartbeat_interval_s": 1, "rebalance_timeout_s": 6},
            "impact": {"campaign_id": 1000, "action_tracker_id": 4321},
            "attribution": {"grace_s": 5}, "batch": {"max_rows": 250, "max_age_s": 3, "file_title": "demo-conversions"},
            "web": {"enabled": False},
            "connections": [{"name": "local folder", "method": "fsspec", "url": str(files_dir)}],
        }))
        print(f"broker    {broker.bootstrap} (Tansu, in memory)\nconfig    {config}")
        log = open(out / "worker.log", "wb")
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--config", str(config)],
                                  stdout=log, stderr=subprocess.STDOUT)
        _wait_for(lambda: b"Worker ready" in (out / "worker.log").read_bytes(), 90, "the worker to join")
        print(f"worker    ready (log: {out / 'worker.log'})")
        producer = CheckoutProducer(broker.bootstrap, topics["clicks"], topics["order_items"])
        counts = _traffic(producer, orders, random.Random(7))
        producer.close()
        expected = counts["clicked"] + counts["cookie"] + counts["late"]
        print(f"produced  {sum(counts.values())} order items: {dict(counts)}")
        _wait_for(lambda: sum(_rows(files_dir).values()) >= expected, 120, "the files")
        time.sleep(2)
        # What the worker wrote to its side topics, read back from them: the generator only knows
        # what it meant to send.
        options = {"bootstrap_servers": broker.bootstrap}
        dead = read_reasons(options, topics["dead_letter"], expect=counts["invalid"], timeout_s=30)
        unattributed = read_reasons(options, topics["unattributed"], expect=counts["none"] + counts["expired"],
                                    timeout_s=30)
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        broker.stop()
    files = _rows(files_dir)
    for name, rows in files.items():
        print(f"  {rows:5d} rows  {name}")
    print(f"wrote     {sum(files.values())} rows in {len(files)} files to {files_dir}")
    for topic, reasons in ((topics["dead_letter"], dead), (topics["unattributed"], unattributed)):
        by_reason = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common()) or "none"
        print(f"          {sum(reasons.values())} in {topic}: {by_reason}")
    right = (sum(files.values()) == expected and sum(dead.values()) == counts["invalid"]
             and sum(unattributed.values()) == counts["none"] + counts["expired"])
    return 0 if right else 1


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.2)
