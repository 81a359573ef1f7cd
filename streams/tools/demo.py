"""``imref-stream demo``: the whole pipeline on this machine, nothing to set up.

Starts a local Kafka-protocol broker (``devbroker``), runs the worker as a user would, produces a realistic
stream (clicks, orders, late clicks, clicks outside the window, invalid events), waits for the
files and prints what was written where."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from .dev import read_reasons
from .devbroker import DevBroker, create_topics, free_port
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


class Demo:
    """The embedded broker, the demo's config and its worker, a separate process as a user runs
    it. The broker keeps no table key from being lost over a worker restart (``devbroker``), and the
    worker has static membership, so one killed with -9 is replaced at once on a broker that never
    expires a dead member's session."""

    TOPICS = {"clicks": "demo.clicks", "order_items": "demo.order-items", "unattributed": "demo.unattributed",
              "dead_letter": "demo.dead-letter", "partitions": 4}

    def __init__(self, output: str | Path, broker: str | None = None):
        self.out = Path(output).resolve()
        self.files_dir = self.out / "files"
        self.broker = DevBroker(self.out / "broker.log", kind=broker)
        self.web_port = free_port()
        self.worker: subprocess.Popen | None = None

    def start(self) -> "Demo":
        self.out.mkdir(parents=True, exist_ok=True)
        for old in self.files_dir.glob("*.csv"):
            old.unlink()
        self.broker.start()
        topics = self.TOPICS
        create_topics(self.broker.bootstrap, [topics["clicks"], topics["order_items"]], topics["partitions"])
        self.config = self.out / "config.yaml"
        self.config.write_text(yaml.safe_dump({
            "app_id": "imref-demo", "data_dir": str(self.out / "state"), "topics": topics,
            "kafka": {"brokers": [f"kafka://{self.broker.bootstrap}"], "session_timeout_s": 6,
                      "heartbeat_interval_s": 1, "rebalance_timeout_s": 6, "instance_id": "imref-demo-0"},
            "impact": {"campaign_id": 1000, "action_tracker_id": 4321},
            "attribution": {"grace_s": 5}, "batch": {"max_rows": 250, "max_age_s": 3, "file_title": "demo-conversions"},
            "web": {"enabled": True, "host": "127.0.0.1", "port": self.web_port},
            "connections": [{"name": "local folder", "method": "fsspec", "url": str(self.files_dir)}],
        }))
        return self

    def start_worker(self, timeout: float = 90) -> None:
        """Starts the worker and waits until it is ready with every partition positioned."""
        with open(self.out / "worker.log", "ab") as log:
            self.worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--config", str(self.config)],
                                           stdout=log, stderr=subprocess.STDOUT)
        gated = 2 * self.TOPICS["partitions"]
        _wait_for(lambda: (s := self.status()) is not None and s["ready"] and len(s["partitions"]) == gated,
                  timeout, "the worker to join", self.worker)

    def status(self) -> dict | None:
        """The worker's /status.json; None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/status.json", timeout=5) as r:
                return json.load(r)
        except OSError:
            return None

    def stop_worker(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.worker.send_signal(sig)
        return self.worker.wait(timeout)

    def producer(self) -> CheckoutProducer:
        return CheckoutProducer(self.broker.bootstrap, self.TOPICS["clicks"], self.TOPICS["order_items"])

    def rows(self) -> dict[str, int]:
        return _rows(self.files_dir)

    def wait_rows(self, expected: int, timeout: float = 120) -> None:
        _wait_for(lambda: sum(self.rows().values()) >= expected, timeout, "the files", self.worker)

    def close(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.stop_worker()
        self.broker.stop()

    def __enter__(self) -> "Demo":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def run_demo(output: str, orders: int) -> int:
    with Demo(output) as demo:
        print(f"broker    {demo.broker.bootstrap} ({demo.broker.kind.title}, in memory)\nconfig    {demo.config}")
        demo.start_worker()
        print(f"worker    ready (log: {demo.out / 'worker.log'}; status page http://127.0.0.1:{demo.web_port}/)")
        producer = demo.producer()
        counts = _traffic(producer, orders, random.Random(7))
        producer.close()
        expected = counts["clicked"] + counts["cookie"] + counts["late"]
        print(f"produced  {sum(counts.values())} order items: {dict(counts)}")
        demo.wait_rows(expected)
        # A row too many would come with a batch still held or delivered but not committed.
        _wait_for(lambda: _settled(demo.status()), 30, "the commits", demo.worker)
        # What the worker wrote to its side topics, read back from them: the generator only knows
        # what it meant to send.
        topics = Demo.TOPICS
        options = {"bootstrap_servers": demo.broker.bootstrap}
        dead = read_reasons(options, topics["dead_letter"], expect=counts["invalid"], timeout_s=30)
        unattributed = read_reasons(options, topics["unattributed"], expect=counts["none"] + counts["expired"],
                                    timeout_s=30)
    files = _rows(demo.files_dir)
    for name, rows in files.items():
        print(f"  {rows:5d} rows  {name}")
    print(f"wrote     {sum(files.values())} rows in {len(files)} files to {demo.files_dir}")
    for topic, reasons in ((topics["dead_letter"], dead), (topics["unattributed"], unattributed)):
        by_reason = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common()) or "none"
        print(f"          {sum(reasons.values())} in {topic}: {by_reason}")
    right = (sum(files.values()) == expected and sum(dead.values()) == counts["invalid"]
             and sum(unattributed.values()) == counts["none"] + counts["expired"])
    return 0 if right else 1


def _settled(status: dict | None) -> bool:
    """Nothing held, every gated partition committed up to what it delivered."""
    return status is not None and status["batches_held"] == 0 and all(
        p["committed"] == p["delivered_to"] for p in status["partitions"])


def _wait_for(condition, timeout: float, what: str, worker: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if worker is not None and worker.poll() is not None:
            raise SystemExit(f"demo: the worker exited ({worker.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.2)
