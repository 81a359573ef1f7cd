"""Test harness: workers run as subprocesses the way a user runs them, real topics, real files."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from streams.config import TopicSettings
from streams.tools.devbroker import broker_kind, create_topics, free_port

SUPPORT = Path(__file__).parent
ROOT = SUPPORT.parents[1]


def write_config(path: Path, *, bootstrap: str, app_id: str, out_dir: Path, data_dir: Path,
                 declare_topics: bool = True, **sections) -> Path:
    """The worker's config; ``declare_topics``: create its input topics on the broker now."""
    config = {
        "app_id": app_id,
        "data_dir": str(data_dir),
        "stop_timeout_s": 10,
        # The group settings Tansu needs to form and re-form groups in seconds (test-broker README).
        "kafka": {"brokers": [f"kafka://{bootstrap}"], "session_timeout_s": 6, "heartbeat_interval_s": 1,
                  "rebalance_timeout_s": 6},
        "topics": {"clicks": f"{app_id}.clicks", "order_items": f"{app_id}.order-items",
                   "unattributed": f"{app_id}.unattributed", "dead_letter": f"{app_id}.dead-letter",
                   "partitions": 4},
        "impact": {"campaign_id": 1000, "action_tracker_id": 4321},
        "web": {"enabled": False},
        "connections": [{"name": "outbox", "method": "fsspec", "url": str(out_dir)}],
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(config))
    if declare_topics:
        create_input_topics(path)
    return path


class WorkerProcess:
    """``imref-stream worker`` as a subprocess, serving its web endpoints on 127.0.0.1 on a port
    of its own (``port``): tests wait on what the worker exposes there, never on its log."""

    command = "worker"

    def __init__(self, config: Path, log_path: Path, env: dict | None = None):
        self.config, self.log_path = config, log_path
        # The Tansu shim only where ListOffsets is wrong: elsewhere Faust's own recovery path runs.
        shim = {} if broker_kind().true_end_offsets else {"IMREF_TEST_TANSU_COMPAT": "1"}
        self.env = {**os.environ, "PYTHONPATH": f"{SUPPORT}{os.pathsep}{ROOT}", **shim, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.started_at = 0.0
        self._log_offset = 0

    def start(self) -> "WorkerProcess":
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        config = self._config_to_run()
        log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", self.command, "--config", str(config)],
                                     stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        log.close()
        return self

    def _config_to_run(self) -> Path:
        """The config this run starts from: the test's own when it serves the web endpoints on a
        port it chose (the test reads them there), else a copy next to the log with the web server
        on a free port (test configs share a file between workers, and most disable the server).
        No setting is resolved against the config file's folder, so the copy reads the same."""
        settings = yaml.safe_load(self.config.read_text()) or {}
        web = settings.get("web") or {}
        if web.get("enabled", True) and web.get("port"):
            self.port = web["port"]
            return self.config
        self.port = free_port()
        settings["web"] = {**web, "enabled": True, "host": "127.0.0.1", "port": self.port}
        copy = self.log_path.with_name(f"{self.log_path.name}.{self.port}.config.yaml")
        copy.write_text(yaml.safe_dump(settings))
        return copy

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60) -> float:
        """Seconds from start until ``text`` appears in this run's log: for a test whose subject is
        what is logged, never to wait for the worker's state (wait on its endpoints for that)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return time.monotonic() - self.started_at
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in worker log after {timeout}s:\n{self.log_text()[-3000:]}")

    def wait_ready(self, timeout: float = 90) -> float:
        """Seconds from start until ``/readyz`` answers 200: a broker connection, and the first
        assignment's tables recovered and the rebalance over (Faust sets both in the step that logs
        "Worker ready"; ``streams/runtime/health.py``)."""
        deadline, last = time.monotonic() + timeout, "(no answer yet)"
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.command} exited ({self.proc.returncode}) before /readyz answered 200:\n"
                                     f"{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5):
                    return time.monotonic() - self.started_at
            except urllib.error.HTTPError as exc:  # 503: not ready yet
                last = f"{exc.code} {exc.read().decode(errors='replace')}"
            except OSError as exc:  # not listening yet
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise AssertionError(f"/readyz not 200 after {timeout}s; its last answer: {last}\n"
                                     f"{self.log_text()[-3000:]}")
            time.sleep(0.1)

    def stacks(self) -> str:
        """Every thread's Python stack, when py-spy is installed: what a stuck worker was doing."""
        py_spy = shutil.which("py-spy")
        if not py_spy or self.proc.poll() is not None:
            return "(no stacks: py-spy not installed or worker gone)"
        done = subprocess.run([py_spy, "dump", "--pid", str(self.proc.pid)], capture_output=True, text=True,
                              timeout=30)
        return done.stdout + done.stderr

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                stacks = self.stacks()  # where the stop hangs, before the process is gone
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"worker ignored SIGTERM for {timeout}s; its stacks:\n{stacks}"
                                     f"\nlog: {self.log_path}")
        return self.proc.returncode


def create_input_topics(config: Path) -> None:
    """The input topics with the configured partitions, as an operator declares them before the
    worker starts (deploy/base/topics). Faust declares only its own topics; a source topic would
    otherwise be created by the broker when the worker subscribes, with the broker's default
    partition count (1 on noida-db, as on Kafka)."""
    settings = yaml.safe_load(config.read_text())
    t = TopicSettings(**settings.get("topics", {}))
    create_topics(settings["kafka"]["brokers"][0].removeprefix("kafka://"), [t.clicks, t.order_items, t.order_changes],
                  t.partitions)


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> list:
    """Produce and return each record's (partition, offset) metadata."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in records]
        producer.flush()
        return [f.get(10) for f in futures]
    finally:
        producer.close()


def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 60, settle_s: float = 2.0) -> list:
    """All records of a topic: waits for ``expect`` of them, then ``settle_s`` more for extras."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=300)
    parts = consumer.partitions_for_topic(topic) or set()
    deadline = time.monotonic() + timeout
    while not parts and time.monotonic() < deadline:
        time.sleep(0.3)
        consumer.close()
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                 consumer_timeout_ms=300)
        parts = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, p) for p in parts])
    consumer.seek_to_beginning()
    records, settled_at = [], None
    try:
        while time.monotonic() < deadline:
            records.extend(consumer)
            if len(records) >= expect:
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at >= settle_s:
                    break
        return records
    finally:
        consumer.close()


def read_csv_files(out_dir: Path) -> dict[str, list[list[str]]]:
    """name -> rows including the header; only final names (temporary names start with '.')."""
    files = {}
    for path in sorted(out_dir.glob("*.csv")):
        files[path.name] = list(csv.reader(io.StringIO(path.read_bytes().decode(), newline="")))
    return files


def wait_for_rows(out_dir: Path, expect: int, timeout: float = 90, worker: WorkerProcess | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        files = read_csv_files(out_dir) if out_dir.exists() else {}
        rows = sum(len(r) - 1 for r in files.values())
        if rows >= expect or time.monotonic() > deadline:
            return files
        if worker is not None and worker.proc.poll() is not None:
            raise AssertionError(f"worker exited ({worker.proc.returncode}):\n{worker.log_text()[-3000:]}")
        time.sleep(0.25)


def wait_until(predicate, timeout: float, what: str, worker=None, every: float = 0.1):
    """Polls ``predicate`` until it returns something truthy, and returns that. Fails naming
    ``what`` after ``timeout`` seconds, or as soon as ``worker`` (a WorkerProcess or a Popen) exits."""
    deadline = time.monotonic() + timeout
    proc = getattr(worker, "proc", worker)
    while not (value := predicate()):
        exited = proc is not None and proc.poll() is not None
        if exited or time.monotonic() > deadline:
            log = worker.log_text()[-3000:] if isinstance(worker, WorkerProcess) else ""
            raise AssertionError(f"worker exited ({proc.returncode}) while waiting for {what}\n{log}" if exited
                                 else f"{what} not reached in {timeout}s\n{log}")
        time.sleep(every)
    return value


# -- the worker's state, as a test waits on it -------------------------------------------------

def metrics(port: int) -> dict[tuple, float]:
    """The worker's /metrics: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as r:
        body = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def consumed(port: int) -> float:
    """Records of the gated topics the worker has taken in (``imref_events_in_total``)."""
    return sum(v for (name, _), v in metrics(port).items() if name == "imref_events_in_total")


def status(port: int) -> dict:
    """The worker's /status.json."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=20) as r:
        return json.load(r)


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def ends(metadata) -> dict[int, int]:
    """Per partition, the offset after the last record produced (``produce``'s metadata)."""
    out: dict[int, int] = {}
    for m in metadata:
        out[m.partition] = max(out.get(m.partition, 0), m.offset + 1)
    return out


def wait_committed(bootstrap: str, group: str, topic: str, until: dict[int, int], worker=None,
                   timeout: float = 60) -> None:
    """Until ``group`` has committed ``topic`` up to ``until`` (partition -> offset). The commit
    gate commits a record only once everything it caused is confirmed (its file by every
    connection, its dead letter, its table write), so after this nothing more comes of those
    records: the state a test compares against is final."""
    wait_until(lambda: all(committed_offsets(bootstrap, group, topic).get(p, -1) >= o for p, o in until.items()),
               timeout, f"{group} committed {topic} up to {until}", worker, every=0.2)
