"""Trying your own config without writing a script: ``imref-stream dev-broker`` (the embedded
broker, left running) and ``imref-stream produce`` (clicks, order items and order changes from the
command line or a JSON-lines file, keyed by customer id, to the configured topics).
``read_reasons`` counts a side-output topic by reason (the demo's summary, the runbook)."""
from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from schemas.validation import InvalidEvent, validate_click, validate_order_change

from ..config import ConfigError, Settings, load_settings
from ..core.join import parse_record
from ..kafka import client_options
from .devbroker import DevBroker, create_topics
from .producer import CheckoutProducer, now_iso

DEFAULT_PORT = 9092  # what kafka.brokers defaults to, so a config without a kafka section works


def input_topics(settings: Settings) -> list[str]:
    t = settings.topics
    return [t.clicks, t.order_items] + ([t.order_changes] if settings.pushes("action_modifications") else [])


# -- dev-broker -----------------------------------------------------------------------------

def run_dev_broker(port: int | None, config: str | None, log: str) -> int:
    settings = None
    if config:
        try:
            settings = load_settings(config)
        except ConfigError as exc:
            print(f"imref-stream: {exc}", file=sys.stderr)
            return 2
    port = port or _local_port(settings) or DEFAULT_PORT
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    broker = DevBroker(log, port=port)
    try:
        broker.start()
    except RuntimeError as exc:
        print(f"imref-stream: the broker did not start on port {port} ({exc}); pick another with --port",
              file=sys.stderr)
        return 1
    try:
        print(f"broker    {broker.bootstrap}   ({broker.kind.title}, in memory: everything is gone when it stops; "
              f"log: {log})")
        print(f'config    kafka: {{brokers: ["kafka://{broker.bootstrap}"]}}')
        if settings is not None:
            names = input_topics(settings)
            create_topics(broker.bootstrap, names, settings.topics.partitions)
            print(f"topics    {', '.join(names)} ({settings.topics.partitions} partitions)")
            if _local_port(settings) != port:
                print(f"note      {config} points at {', '.join(settings.kafka.brokers)}: set kafka.brokers as above")
            if settings.kafka.instance_id is None and not broker.kind.expires_sessions:
                print(f"note      {broker.kind.title} never expires the session of a worker killed without "
                      "leaving: set kafka.instance_id (static membership) so that its restart takes its place")
        print("stop      Ctrl-C", flush=True)
        while not stop.wait(0.5):
            if broker.proc.poll() is not None:
                print(f"imref-stream: the broker exited ({broker.proc.returncode}); see {log}", file=sys.stderr)
                return 1
        return 0
    finally:
        broker.stop()


def _local_port(settings: Settings | None) -> int | None:
    """The port of the config's first broker when it is on this machine."""
    if settings is None:
        return None
    url = urlsplit(settings.kafka.brokers[0] if "://" in settings.kafka.brokers[0] else f"kafka://{settings.kafka.brokers[0]}")
    return url.port if url.hostname in ("localhost", "127.0.0.1") else None


# -- produce --------------------------------------------------------------------------------

NAMES = {"click": "click", "item": "order item", "change": "order change"}


def kind_of(event: dict) -> str:
    """What a JSON line is, from its fields: an order change has a change_id, an order item an
    order_id, a click an im_ref."""
    if "change_id" in event:
        return "change"
    if "order_id" in event:
        return "item"
    if "im_ref" in event:
        return "click"
    raise ValueError("neither a click (im_ref), an order item (order_id) nor an order change (change_id)")


def read_events(lines) -> list[dict]:
    """Parse every line first, so a bad line sends nothing; ValueError names the line."""
    events = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
            if not isinstance(event, dict) or not isinstance(event.get("customer_id"), str):
                raise ValueError("not a JSON object with a customer_id string (the record key)")
            kind_of(event)
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise ValueError(f"line {number}: {exc}") from None
        events.append(event)
    return events


def refusal(kind: str, event: dict, settings: Settings) -> str | None:
    """The reason the worker will refuse this event, if it will (it is sent all the same)."""
    raw, key = orjson.dumps(event), event["customer_id"].encode()
    try:
        if kind == "item":
            parse_record(raw, key, settings.max_event_age_days, max_lines=settings.batch.max_rows)
        else:
            (validate_click if kind == "click" else validate_order_change)(raw, key)
    except InvalidEvent as exc:
        return f"{exc.reason} ({exc.detail})"
    return None


def produce(settings: Settings, events: list[dict], out=print) -> Counter:
    """Send the events to the configured topics, keyed by customer id, and wait for the broker."""
    t = settings.topics
    options = client_options(settings.kafka)
    producer = CheckoutProducer(options.pop("bootstrap_servers"), t.clicks, t.order_items, **options)
    topic = {"click": t.clicks, "item": t.order_items, "change": t.order_changes}
    sent, futures = Counter(), []
    try:
        for number, event in enumerate(events, 1):
            kind = kind_of(event)
            reason = refusal(kind, event, settings)
            if reason:
                out(f"event {number} ({kind}): the worker will refuse it: {reason}")
            futures.append((kind, producer.send(topic[kind], event["customer_id"], orjson.dumps(event))))
        producer.flush()
        for kind, future in futures:
            future.get(30)
            sent[kind] += 1
    finally:
        producer.close()
    out("sent      " + ", ".join(f"{sent[k]} {NAMES[k]}{'s' if sent[k] != 1 else ''} to {topic[k]}"
                                  for k in NAMES if sent[k]))
    return sent


def order_events(order_id: str, customer_id: str, currency: str, items: list[str], occurred_at: str | None,
                 im_ref: str | None) -> list[dict]:
    """One event per ``--item sku=...,category=...,amount=...,quantity=...``."""
    common = {"order_id": order_id, "customer_id": customer_id, "currency": currency,
              "occurred_at": occurred_at or now_iso(), **({"im_ref": im_ref} if im_ref else {})}
    events = []
    for text in items:
        fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        if "quantity" in fields and fields["quantity"].isdigit():
            fields["quantity"] = int(fields["quantity"])
        events.append({**common, **fields})
    return events


def run_produce(config: str, events_from) -> int:
    """``events_from(settings)`` gives the events; 2 for a bad config or input."""
    try:
        settings = load_settings(config)
        events = events_from(settings)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"imref-stream: {exc}", file=sys.stderr)
        return 2
    produce(settings, events)
    return 0


def events_from_file(path: str):
    def read(settings: Settings) -> list[dict]:
        if path == "-":
            return read_events(sys.stdin)
        with open(Path(path)) as f:
            return read_events(f)
    return read


# -- reading side outputs -------------------------------------------------------------------

def read_reasons(options: dict, topic: str, expect: int = 0, timeout_s: float = 10.0) -> Counter:
    """Records of a dead-letter, unattributed or unmatched topic by their ``imref.reason``: all of
    them, waiting up to ``timeout_s`` until there are ``expect``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, consumer_timeout_ms=500, **options)
    try:
        reasons: Counter = Counter()
        deadline = time.monotonic() + timeout_s
        partitions = None
        while time.monotonic() < deadline:
            if partitions is None:
                partitions = consumer.partitions_for_topic(topic)
                if partitions:
                    consumer.assign([TopicPartition(topic, p) for p in partitions])
                    consumer.seek_to_beginning()
            if partitions:
                for record in consumer:
                    reasons[dict(record.headers).get("imref.reason", b"?").decode()] += 1
            if sum(reasons.values()) >= expect and (partitions or not expect):
                break
            if not partitions:
                time.sleep(0.2)
        return reasons
    finally:
        consumer.close()
