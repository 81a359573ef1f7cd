"""The commands a user tries a config with: --version, dev-broker, produce, the demo, and the
worker's JSON log lines; each run as a user runs it, as a subprocess."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import version

import orjson
import pytest
import yaml

from streams.tools.devbroker import create_topics, free_port
from tests.support.harness import ROOT, WorkerProcess, read_topic, write_config

pytestmark = pytest.mark.integration


def cli(*args, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def test_version():
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"imref-stream {version('imref-stream')}"


def test_dev_broker_stays_up_with_the_configs_topics_until_stopped(tmp_path):
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"brokers": [f"kafka://localhost:{port}"]}, "topics": {"partitions": 3},
        "impact": {"campaign_id": 1, "action_tracker_id": 2},
        "connections": [{"name": "o", "method": "fsspec", "url": str(tmp_path / "out")},
                        {"name": "r", "method": "fsspec", "url": str(tmp_path / "r"),
                         "data_type": "action_modifications"}]}))
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "dev-broker", "--config", str(config),
                             "--log", str(tmp_path / "broker.log")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(4)]  # the port comes from the config's localhost broker
        assert lines[0].startswith(f"broker    127.0.0.1:{port}"), lines
        assert f'kafka: {{brokers: ["kafka://127.0.0.1:{port}"]}}' in lines[1]
        assert lines[2].startswith("topics    imref.clicks, imref.order-items, imref.order-changes (3 partitions)")
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(["imref.clicks", "imref.order-changes"])}
        admin.close()
        assert described == {"imref.clicks": 3, "imref.order-changes": 3}
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    with pytest.raises(OSError):  # the broker went with it
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_produce_sends_clicks_orders_and_json_lines_keyed_by_customer(tmp_path, broker, app_id):
    config = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id,
                          out_dir=tmp_path / "out", data_dir=tmp_path / "data")
    clicks, items = f"{app_id}.clicks", f"{app_id}.order-items"
    create_topics(broker.bootstrap, [clicks, items], 4)
    done = cli("produce", "--config", str(config), "click", "C-1", "IR-1", "--at", "2026-12-01T10:00:00+00:00")
    assert done.returncode == 0 and done.stdout.strip() == f"sent      1 click to {clicks}", done.stderr
    done = cli("produce", "--config", str(config), "order", "O-1", "C-1", "--currency", "EUR",
               "--item", "sku=A-1,category=Tools,amount=42.50,quantity=2", "--item", "sku=B-2,category=Books,amount=9,quantity=1")
    assert done.returncode == 0 and done.stdout.strip() == f"sent      2 order items to {items}", done.stderr
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in [
        {"customer_id": "C-2", "im_ref": "IR-2", "occurred_at": "2026-12-01T11:00:00+00:00"},
        {"order_id": "O-2", "customer_id": "C-2", "occurred_at": "2026-12-01T11:05:00+00:00", "currency": "EURO",
         "amount": "5.00", "category": "Tools", "sku": "C-3", "quantity": 1}]) + "\n")
    done = cli("produce", "--config", str(config), "file", str(events))
    assert done.returncode == 0, done.stderr
    assert "event 2 (item): the worker will refuse it: unknown_currency" in done.stdout  # sent all the same
    assert f"sent      1 click to {clicks}, 1 order item to {items}" in done.stdout
    got_clicks = read_topic(broker.bootstrap, clicks, expect=2, settle_s=0.5)
    got_items = read_topic(broker.bootstrap, items, expect=3, settle_s=0.5)
    assert sorted((r.key, orjson.loads(r.value)["im_ref"]) for r in got_clicks) == [(b"C-1", "IR-1"), (b"C-2", "IR-2")]
    assert sorted((r.key, orjson.loads(r.value)["sku"], orjson.loads(r.value).get("quantity")) for r in got_items) == \
        [(b"C-1", "A-1", 2), (b"C-1", "B-2", 1), (b"C-2", "C-3", 1)]


def test_produce_refuses_a_bad_line_and_sends_nothing(tmp_path, broker, app_id):
    config = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id,
                          out_dir=tmp_path / "out", data_dir=tmp_path / "data")
    create_topics(broker.bootstrap, [f"{app_id}.clicks", f"{app_id}.order-items"], 4)
    events = tmp_path / "events.jsonl"
    events.write_text('{"customer_id": "C-1", "im_ref": "IR-1"}\n{"customer_id": "C-1"}\n')
    done = cli("produce", "--config", str(config), "file", str(events))
    assert done.returncode == 2 and "line 2: neither a click" in done.stderr
    assert read_topic(broker.bootstrap, f"{app_id}.clicks", expect=1, timeout=3) == []


def test_demo_summary_reads_the_side_topics(tmp_path):
    done = cli("demo", "--output", str(tmp_path), "--orders", "60", timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    dead, unattributed = (re.search(rf"(\d+) in demo.{name}: (.*)", done.stdout) for name in ("dead-letter", "unattributed"))
    assert "malformed_json 1" in dead[2] and "unknown_currency" in dead[2]
    assert "no_click" in unattributed[2] and "click_outside_window" in unattributed[2]


def test_worker_logs_json_lines(tmp_path, broker, app_id):
    config = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id,
                          out_dir=tmp_path / "out", data_dir=tmp_path / "data", logging={"format": "json"})
    worker = WorkerProcess(config, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
    finally:
        assert worker.stop() == 0
    lines = [line for line in worker.log_text().splitlines() if line.strip()]
    entries = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert any("Worker ready" in e["message"] for e in entries)
    assert all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
