"""What the worker has done and how its connections are: Prometheus metrics (declared once,
here) plus the recent-files and connection-health state the status page and /readyz show."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from time import monotonic, time

from prometheus_client import GC_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry, Counter, Gauge, Histogram

RECENT_FILES = 50


@dataclass
class FileState:
    name: str
    connection: str
    rows: int | None  # None until the batch is rendered: items may still wait for their click
    state: str  # held | uploading | retrying | delivered
    attempts: int = 0
    error: str = ""
    updated: float = 0.0  # wall clock, for the page
    cut: str = ""  # why its batch was cut: size, full, age, stop, recorded (a cut replayed after a restart)
    cut_at: float | None = None  # CLOCK_MONOTONIC at the cut (machine-wide: bench/latency.py compares it)


@dataclass
class ConnectionHealth:
    failing_since: float | None = None  # monotonic time of the first failure since the last success
    last_error: str = ""
    last_success: float | None = None  # wall clock
    # What the last failure (of an upload, or of the check at start-up) shows to be wrong in the
    # configuration ("host key not in known_hosts", ...); None: no failure, or a transient one.
    configuration_error: str | None = None


class Metrics:
    def __init__(self, connections: list[str] = ()) -> None:
        self.registry = r = CollectorRegistry()
        # The process's CPU, memory and collections (the worker collects garbage on a timer:
        # runtime/worker.py), as prometheus_client's default registry would show them.
        r.register(PROCESS_COLLECTOR)
        r.register(GC_COLLECTOR)
        self.events_in = Counter("imref_events_in", "Events consumed.", ["kind"], registry=r)
        self.joined = Counter("imref_rows_joined", "Order items joined to a click: conversion rows.", registry=r)
        self.unattributed = Counter("imref_unattributed", "Items sent to the unattributed topic.", ["reason"],
                                    registry=r)
        self.dead_letter = Counter("imref_dead_letter", "Events sent to the dead-letter topic.", ["reason"],
                                   registry=r)
        self.refused = Counter("imref_refused", "Order records not written because their order is in a file "
                               "already, sent to the audit topic.", ["reason"], registry=r)
        self.redelivered = Counter("imref_redelivered", "Records read again (after a restart, a rebalance or a seek) while "
                                   "already held or delivered, and dropped.",
                                   registry=r)
        self.offset_jumps = Counter(
            "imref_offset_jumps", "Offsets of an order topic found missing from the log and skipped; "
            "kind=resume_beyond_committed when the partition resumed past its committed offset.",
            ["topic", "kind"], registry=r)
        self.files = Counter("imref_files_delivered", "Files confirmed by a connection.", ["connection"], registry=r)
        self.rows = Counter("imref_rows_delivered", "Rows in files confirmed by a connection.", ["connection"],
                            registry=r)
        self.upload_failures = Counter("imref_upload_failures", "Failed upload attempts; each one is retried.",
                                       ["connection"], registry=r)
        self.configuration_error = Gauge(
            "imref_connection_configuration_error", "1 while a connection's last failure (an upload, or the check "
            "at start-up) was a configuration error: a refused host key, an untrusted certificate, a failed login, "
            "a missing folder. Its batches are held until someone fixes it.", ["connection"], registry=r)
        self.stalls = Gauge("imref_internal_stalls", "Steps of this worker's delivery held longer than "
                            "web.stalled_after_s (beyond attribution.grace_s) with no failing connection to explain it; /healthz fails "
                            "while any.", registry=r)
        self.record_seconds = Histogram(
            "imref_confirmation_record_seconds", "From a connection confirming a file to that confirmation being "
            "recorded: the only window in which a crash makes the file go to that connection again.",
            ["connection"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5), registry=r)
        self.not_resent = Counter(
            "imref_files_not_sent_again", "Batches read again whose file the connection had confirmed before: not "
            "sent again. content=differs: the re-formed file differed from the delivered one, which stands.",
            ["connection", "content"], registry=r)
        self.flush_seconds = Histogram(
            "imref_flush_seconds", "From a batch being cut to its upload being confirmed.", ["connection"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300), registry=r)
        self.batches_held = Gauge("imref_batches_held", "Cut batches not yet confirmed by every connection.",
                                  registry=r)
        self.lag = Gauge("imref_consumer_lag", "Records not yet consumed: highwater minus position.",
                         ["topic", "partition"], registry=r)
        self.counts: dict[str, dict[str, int]] = {"dead_letter": {}, "unattributed": {}, "refused": {}}
        self.recent: OrderedDict[tuple[str, str], FileState] = OrderedDict()
        self.health: dict[str, ConnectionHealth] = {}
        for name in connections:  # exported as 0 from the start, so rates and alerts work at once
            for metric in (self.files, self.rows, self.upload_failures, self.configuration_error):
                metric.labels(name)
            for content in ("same", "differs"):
                self.not_resent.labels(name, content)
            self.health[name] = ConnectionHealth()

    # -- called by the pipeline -----------------------------------------------------------
    def inc(self, what: str, label: str | None = None, n: int = 1) -> None:
        if what in ("clicks_in", "items_in"):
            self.events_in.labels(what[:-3]).inc(n)
        elif what == "joined":
            self.joined.inc(n)
        elif what == "redelivered":
            self.redelivered.inc(n)
        elif what in ("offset_gap", "resume_beyond_committed"):
            self.offset_jumps.labels(label, what).inc(n)
        elif what in self.counts:
            getattr(self, what).labels(label).inc(n)
            self.counts[what][label] = self.counts[what].get(label, 0) + n
        else:
            raise ValueError(f"unknown metric {what!r}")

    # -- called by the delivery lanes -----------------------------------------------------
    def file_held(self, connection: str, name: str, cut: str = "", cut_at: float | None = None) -> None:
        f = self._file(connection, name, None, "held")
        f.cut, f.cut_at = cut, cut_at

    def file_dropped(self, connection: str, name: str) -> None:
        """The batch became no file (no rows left) or its partition was revoked: the new owner
        re-forms it, so a lingering entry would show a file stuck forever."""
        f = self.recent.get((connection, name))
        if f is not None and f.state != "delivered":
            del self.recent[(connection, name)]

    def upload_started(self, connection: str, name: str, rows: int) -> None:
        self.health.setdefault(connection, ConnectionHealth())
        self._file(connection, name, rows, "uploading")

    def upload_failed(self, connection: str, name: str, error: str, configuration_error: str | None = None) -> None:
        self.upload_failures.labels(connection).inc()
        self.connection_failed(connection, error, configuration_error)
        f = self._file(connection, name, None, "retrying")
        f.attempts += 1
        f.error = error

    def upload_confirmed(self, connection: str, name: str, rows: int, cut_at: float, recorded_s: float = 0.0) -> None:
        self.files.labels(connection).inc()
        self.rows.labels(connection).inc(rows)
        self.flush_seconds.labels(connection).observe(monotonic() - cut_at)
        self.record_seconds.labels(connection).observe(recorded_s)
        h = self.health.setdefault(connection, ConnectionHealth())
        h.failing_since, h.last_error, h.last_success = None, "", time()
        self._configuration(connection, h, None)
        self._file(connection, name, rows, "delivered")

    def connection_failed(self, connection: str, error: str, configuration_error: str | None) -> None:
        """An upload, or the check at start-up, failed."""
        h = self.health.setdefault(connection, ConnectionHealth())
        h.failing_since = h.failing_since or monotonic()
        h.last_error = error
        self._configuration(connection, h, configuration_error)

    def _configuration(self, connection: str, h: ConnectionHealth, error: str | None) -> None:
        h.configuration_error = error
        self.configuration_error.labels(connection).set(0 if error is None else 1)

    def not_sent_again(self, connection: str, name: str, rows: int, same: bool) -> None:
        self.not_resent.labels(connection, "same" if same else "differs").inc()
        self._file(connection, name, rows, "delivered before" if same else "delivered before, differs now")

    def failing_connections(self) -> set[str]:
        """Connections that failed since their last success."""
        return {name for name, h in self.health.items() if h.failing_since is not None}

    def _file(self, connection: str, name: str, rows: int | None, state: str) -> FileState:
        key = (connection, name)
        f = self.recent.pop(key, None) or FileState(name, connection, rows, state)
        f.state, f.updated = state, time()
        if rows is not None:
            f.rows = rows
        self.recent[key] = f
        while len(self.recent) > RECENT_FILES:
            self.recent.popitem(last=False)
        return f
