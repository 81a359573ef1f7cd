"""Chaos scenarios: traffic flows while workers are killed, rebalanced, stopped or fed poison,
and a verifier compares every file that reached the destination with the expected rows.

Checkout re-sends a share of its orders (``Traffic.resend``), as at-least-once producers do. Each
scenario returns a result row: runs, rows expected, rows delivered, lost, and rows reported more
than once (a row in two files, or twice in one). A file written again under the same name in a
folder counts once (it overwrote itself); the kill sweep also pushes every file to an FTP server
that counts each upload, as impact's would."""
from __future__ import annotations

import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncssh
import orjson
import yaml
from kafka import KafkaProducer

from streams.tools.devbroker import free_port
from tests.support.harness import (WorkerProcess, committed_offsets, metrics, read_csv_files, read_topic, wait_until,
                                   write_config)
from tests.support.servers import PASSWORD, USER, Certs, FtpServer, SftpServer

NOW = datetime.now(timezone.utc).replace(microsecond=0)
CUSTOMERS = 300


@dataclass
class Result:
    scenario: str
    runs: int
    expected: int
    delivered: int
    lost: int
    duplicated: int
    note: str = ""  # for people: the README table
    facts: dict = field(default_factory=dict)  # for the tests: what the note says, as numbers


class Traffic:
    """Clicks for every customer first, then orders at ``rate`` items/s in a thread. Every
    item has a unique (OrderId, Sku); ``poison`` of them are invalid and must be dead-lettered;
    ``resend`` of the orders are produced again, whole, a little later (a producer's retry, an
    outbox relay after a crash): the copies must never reach a file."""

    def __init__(self, bootstrap: str, prefix: str, rate: int = 300, poison: float = 0.0, seed: int = 1,
                 resend: float = 0.06):
        self.bootstrap, self.prefix, self.rate, self.poison, self.resend = bootstrap, prefix, rate, poison, resend
        self.rng = random.Random(seed)
        self.expected: set[tuple[str, str]] = set()
        self.poisoned: dict[tuple[str, int, int], bytes] = {}
        self.resent: dict[tuple[str, int, int], bytes] = {}  # the copies, where they landed
        self._recent: list[tuple[str, list[bytes]]] = []
        self.produced_ends: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        for c in range(CUSTOMERS):
            cid = f"K{c:04d}"
            self._producer.send(f"{prefix}.clicks", key=cid.encode(), value=orjson.dumps(
                {"customer_id": cid, "im_ref": f"IM{cid}", "occurred_at": (NOW - timedelta(hours=3)).isoformat()}))
        self._producer.flush()
        self._order = 0

    def clicks_consumed_by(self, group: str, timeout: float = 60) -> "Traffic":
        """Waits until ``group`` has committed every click. Real orders follow their click by
        minutes; here they would race it, and an item that beats its click by more than the grace
        is rightly unattributed, which the verifier would count as lost."""
        deadline = time.monotonic() + timeout
        while sum(committed_offsets(self.bootstrap, group, f"{self.prefix}.clicks").values()) < CUSTOMERS:
            assert time.monotonic() < deadline, f"{group} did not consume the clicks in {timeout:.0f}s"
            time.sleep(0.2)
        return self

    def start(self) -> "Traffic":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._producer.flush()

    def burst(self, items: int) -> None:
        for _ in range(items):
            self._one_order()
        self._producer.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            sent = 0
            while sent < self.rate // 10:
                sent += self._one_order()
            self._producer.flush()
            time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))

    def _one_order(self) -> int:
        if self.resend and self._recent and self.rng.random() < self.resend:
            cid, values = self._recent.pop(self.rng.randrange(len(self._recent)))
            for value in values:
                self._send(cid, value).add_callback(
                    lambda md, v=value: self.resent.__setitem__((md.topic, md.partition, md.offset), v))
            return len(values)
        self._order += 1
        cid = f"K{self.rng.randrange(CUSTOMERS):04d}"
        n, good = self.rng.randint(1, 3), []
        poisoned = [bool(self.poison) and self.rng.random() < self.poison for _ in range(n)]
        # The order's count of lines, as checkout knows it (not with a poisoned line: the order
        # would wait batch.order_wait_s for it): no time cut splits it, however slowly its items
        # reach a worker on a loaded machine (without it, an item that comes more than
        # order_settle_s after its order's batch was cut is refused as order_already_reported,
        # tests/integration/test_exactly_once.py).
        count = {} if any(poisoned) else {"items_in_order": n}
        for i in range(n):
            item = {"order_id": f"X{self._order:07d}", "customer_id": cid, "currency": "USD", "amount": "9.99",
                    "occurred_at": (NOW - timedelta(minutes=2)).isoformat(), "category": "Chaos",
                    "sku": f"S{i}", "quantity": 1, **count}
            bad = poisoned[i]
            value = (b'{"order_id": ' if self.rng.random() < 0.5 else orjson.dumps({**item, "currency": "ZZZ"})) \
                if bad else orjson.dumps(item)
            fut = self._send(cid, value)
            if bad:
                fut.add_callback(lambda md, v=value: self.poisoned.__setitem__((md.topic, md.partition, md.offset), v))
            else:
                self.expected.add((item["order_id"], item["sku"]))
                good.append(value)
        if good and len(good) == n:
            self._recent = (self._recent + [(cid, good)])[-50:]  # re-sent within the next few hundred items
        return n

    def _send(self, cid: str, value: bytes):
        fut = self._producer.send(f"{self.prefix}.order-items", key=cid.encode(), value=value)
        fut.add_callback(lambda md: self.produced_ends.__setitem__(
            md.partition, max(self.produced_ends.get(md.partition, 0), md.offset + 1)))
        return fut


def verify(out_dir: Path, expected: set) -> tuple[int, int, int]:
    """(delivered, lost, rows reported more than once: in two files, twice in one, or an order's
    rows split over two files)"""
    count: Counter = Counter()
    files_of: dict[str, set[str]] = defaultdict(set)
    for name, rows in read_csv_files(out_dir).items():
        for r in rows[1:]:
            count[(r[3], r[9])] += 1
            files_of[r[3]].add(name)
    split = sum(1 for (order, _) in count if len(files_of[order]) > 1)
    delivered = len(count.keys() & expected)
    return delivered, len(expected - count.keys()), sum(n - 1 for n in count.values()) + split


def pushed_again(received: list[str], log: str, connection: str = "impact push") -> tuple[int, int]:
    """Files a push server completed more than once: (a worker had seen the file confirmed, and
    it was sent again: a failure; else a push in flight or not yet recorded when the worker died,
    inside the window). The worker logs a confirmation only once it is recorded."""
    again = [name for name, n in Counter(received).items() if n > 1]
    confirmed = [name for name in again if log.count(f"connection {connection!r} confirmed {name} (") > 1]
    return len(confirmed), len(again) - len(confirmed)


def audited(bootstrap: str, prefix: str, traffic: "Traffic") -> int:
    """How many of the re-sent copies are on the audit topic (each at least once)."""
    if not traffic.resent:
        return 0
    records = read_topic(bootstrap, f"{prefix}.audit", expect=len(traffic.resent))
    seen = {(h["imref.source.topic"].decode(), int(h["imref.source.partition"]), int(h["imref.source.offset"]))
            for h in (dict(r.headers) for r in records) if h["imref.reason"] == b"duplicate"}
    return len(seen & traffic.resent.keys())


def wait_delivered(out_dir: Path, traffic: Traffic, timeout: float) -> None:
    """Until every expected row is in a file and the group has committed every item produced: the
    commit gate commits only what every connection confirmed, so no file comes after that (a
    duplicate would be there for the verifier to see). Returns at ``timeout`` either way."""
    topic = f"{traffic.prefix}.order-items"

    def settled() -> bool:
        if verify(out_dir, traffic.expected)[1]:
            return False
        committed = committed_offsets(traffic.bootstrap, traffic.prefix, topic)
        return all(committed.get(p, -1) >= end for p, end in traffic.produced_ends.items())

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not settled():
        time.sleep(0.5)


def delivering(out_dir: Path, before: set[str]) -> set[int]:
    """The partitions with a file delivered that is not in ``before``."""
    return {int(m.group(1)) for p in out_dir.glob("*.csv") if p.name not in before
            and (m := re.search(r"_p(\d{3})_", p.name))}


def items_in(port: int) -> float:
    return metrics(port).get(("imref_events_in_total", (("kind", "items"),)), 0)


def _setup(broker, tmp: Path, name: str, **sections):
    app_id = f"chaos-{name}-{int(time.time() * 1000) % 10**8}"
    out = tmp / f"{name}-out"
    sections.setdefault("topics", {"audit": f"{app_id}.audit"})
    sections.setdefault("batch", {"max_rows": 50, "max_age_s": 1})
    sections.setdefault("attribution", {"grace_s": 2})
    cfg = write_config(tmp / f"{name}.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp / f"{name}-state", **sections)
    return app_id, out, cfg


# before_record: a push confirmed, its confirmation not recorded yet (the one window in which a
# confirmed file may be sent again)
POINTS = ["before_upload", "mid_upload", "before_record", "after_upload", "after_ack"]
PUSH_ENV = {"IMREF_CHAOS_PUSH_PASSWORD": PASSWORD}


def kill_sweep(broker, tmp: Path, kills: int) -> Result:
    """``kills`` workers, each killed by SIGKILL at a fault point; a run counts only when the point
    was reached (the worker killed itself), not when it was still waiting there after 60 s. Every
    file also goes to a push connection whose server counts each upload: a file the worker saw
    confirmed must never be uploaded again."""
    with FtpServer(tmp / "kill-push") as push:
        app_id, out, cfg = _setup(broker, tmp, "kill", kafka={"instance_id": "chaos-0"}, connections=[
            {"name": "outbox", "method": "fsspec", "url": str(tmp / "kill-out")},
            {"name": "impact push", "method": "ftp", "host": "127.0.0.1", "port": push.port, "username": USER,
             "password": {"env": "IMREF_CHAOS_PUSH_PASSWORD"}, "allow_plaintext": True, "timeout_s": 5}])
        traffic = Traffic(broker.bootstrap, app_id).start()
        rng = random.Random(kills)
        reached, missed, worker = {point: 0 for point in POINTS}, 0, None
        try:
            for i in range(kills):
                point = POINTS[i % len(POINTS)]
                worker = WorkerProcess(cfg, tmp / "kill.log",
                                       env={**PUSH_ENV, "IMREF_FAULTS": f"{point}@{rng.randint(1, 6)}"})
                worker.start()
                try:
                    reached[point] += worker.proc.wait(60) == -signal.SIGKILL
                except subprocess.TimeoutExpired:
                    worker.kill()
                    missed += 1
            worker = WorkerProcess(cfg, tmp / "kill.log", env=PUSH_ENV).start()
            worker.wait_ready()
        finally:
            traffic.stop()
        wait_delivered(out, traffic, 120)
        wait_pushed(push, out, 60)
        worker.stop()
        confirmed_again, in_window = pushed_again(push.received, (tmp / "kill.log").read_text(errors="replace"))
        pushed = len(push.received)
    copies = audited(broker.bootstrap, app_id, traffic)
    points = ", ".join(f"{point} {n}" for point, n in reached.items())
    return Result("kill -9 at injected points, restart", sum(reached.values()), len(traffic.expected),
                  *verify(out, traffic.expected),
                  facts={"confirmed_pushed_again": confirmed_again, "pushed_in_window": in_window,
                         "resent": len(traffic.resent), "audited": copies},
                  note=f"kills at points reached: {points}; not reached in 60 s: {missed}; {pushed} uploads to the "
                       f"push server, confirmed files uploaded again: {confirmed_again}, uploads in flight at a kill "
                       f"sent again: {in_window}; {copies}/{len(traffic.resent)} re-sent items on the audit topic")


def wait_pushed(push: FtpServer, out: Path, timeout: float) -> None:
    """Until the push server has every file the folder has."""
    deadline = time.monotonic() + timeout
    while set(read_csv_files(out)) - set(push.received) and time.monotonic() < deadline:
        time.sleep(0.5)


# A second worker that joins under load and leaves: on noida-db the first worker's commit during the
# join is refused with IllegalGeneration (Kafka accepts a commit of the current generation while the
# group prepares a rebalance), aiokafka then rejoins under a new member id, and noida-db never
# removes the old one (Kafka does after the rebalance timeout): the group never forms again.
REBALANCE_NEEDS = ("expires_sessions", "a member that does not rejoin within the rebalance timeout must be "
                                       "removed from the group")


def rebalance(broker, tmp: Path, cycles: int) -> Result:
    app_id, out, cfg = _setup(broker, tmp, "rebalance")
    cfg2 = tmp / "rebalance-2.yaml"
    cfg2.write_text(cfg.read_text().replace(str(tmp / "rebalance-state"), str(tmp / "rebalance-state-2")))
    first = WorkerProcess(cfg, tmp / "rebalance-1.log").start()
    first.wait_ready()
    traffic = Traffic(broker.bootstrap, app_id).clicks_consumed_by(app_id).start()
    partitions = set(range(4))
    try:
        for _ in range(cycles):
            second = WorkerProcess(cfg2, tmp / "rebalance-2.log").start()
            second.wait_ready()
            # Under load with both: every partition delivers again after the split.
            before = {p.name for p in out.glob("*.csv")}
            wait_until(lambda: delivering(out, before) == partitions, 60, "files from every partition", second)
            assert second.stop() == 0
            before = {p.name for p in out.glob("*.csv")}  # and with the first alone again
            wait_until(lambda: delivering(out, before) == partitions, 60, "files from every partition", first)
    finally:
        traffic.stop()
    wait_delivered(out, traffic, 120)
    first.stop()
    return Result("second worker joins and leaves under load", cycles, len(traffic.expected),
                  *verify(out, traffic.expected))


class Hooks:
    """The test hooks of a worker (tests/support/imref_test_hooks.py): held uploads, a forced
    rebalance, and the marker files that say when each step happened."""

    def __init__(self, gate: Path):
        gate.mkdir(parents=True, exist_ok=True)
        self.gate = gate

    def env(self, seek_delay_s: float = 0) -> dict:
        return {"IMREF_TEST_HOOKS": "1", "IMREF_TEST_HOLD": str(self.gate),
                "IMREF_TEST_SEEK_DELAY_S": str(seek_delay_s)}

    def count(self, mark: str) -> int:
        return len(list(self.gate.glob(f"{mark}-*")))

    def hold(self) -> None:
        """A new hold: a new token, written whole (renamed into place), so a worker still held
        by the previous hold lets go even if it never saw the file missing in between."""
        temp = self.gate / ".hold"
        temp.write_text(str(time.monotonic_ns()))
        temp.replace(self.gate / "hold")

    def release(self) -> None:
        (self.gate / "hold").unlink(missing_ok=True)

    def wait(self, mark: str, count: int, worker: WorkerProcess, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.count(mark) < count:
            assert worker.proc.poll() is None, f"worker exited:\n{worker.log_text()[-3000:]}"
            assert time.monotonic() < deadline, (f"no {mark}-{count} in {timeout}s; marks "
                                                 f"{sorted(p.name for p in self.gate.iterdir())}\n"
                                                 f"{worker.stacks()}\n{worker.log_text()[-3000:]}")
            time.sleep(0.02)

    def regain_mid_upload(self, worker: WorkerProcess, while_revoked=lambda: None) -> None:
        """One upload held; the worker loses and regains its partitions; the upload completes in
        between (after the revoke, before the re-assignment)."""
        held, revoked, regained = self.count("held"), self.count("revoked"), self.count("regained")
        self.hold()
        try:
            self.wait("held", held + 1, worker)
            worker.proc.send_signal(signal.SIGHUP)
            self.wait("revoked", revoked + 1, worker)
            while_revoked()
        finally:
            self.release()
        self.wait("regained", regained + 1, worker)


def regain_mid_upload(broker, tmp: Path, cycles: int) -> Result:
    """The same worker loses and regains its partitions while uploads are in flight."""
    app_id, out, cfg = _setup(broker, tmp, "regain")
    hooks = Hooks(tmp / "regain-gate")
    worker = WorkerProcess(cfg, tmp / "regain.log", env=hooks.env(seek_delay_s=0.5)).start()
    worker.wait_ready()
    traffic = Traffic(broker.bootstrap, app_id).clicks_consumed_by(app_id).start()
    try:
        for _ in range(cycles):
            hooks.regain_mid_upload(worker)
    finally:
        traffic.stop()
        hooks.release()
    wait_delivered(out, traffic, 120)
    assert worker.stop() == 0
    # A revoke cancels uploads waiting for Faust's sends; it must not cancel the sends themselves.
    assert "InvalidStateError" not in worker.log_text(), worker.log_text()[-3000:]
    return Result("the same worker loses and regains its partitions mid-upload", cycles, len(traffic.expected),
                  *verify(out, traffic.expected))


def graceful_stop(broker, tmp: Path, runs: int, bound_s: float = 10) -> Result:
    """Open batches (max_age 60 s) must be flushed and committed by SIGTERM within the bound."""
    port = free_port()
    app_id, out, cfg = _setup(broker, tmp, "sigterm", batch={"max_rows": 9_999, "max_age_s": 60},
                              stop_timeout_s=bound_s, web={"enabled": True, "host": "127.0.0.1", "port": port})
    traffic = Traffic(broker.bootstrap, app_id)
    slowest, unflushed, uncommitted = 0.0, 0, 0
    for _ in range(runs):
        worker = WorkerProcess(cfg, tmp / "sigterm.log").start()
        worker.wait_ready()
        traffic.clicks_consumed_by(app_id)
        before = sum(traffic.produced_ends.values())
        traffic.burst(150)
        # Every record read (re-sent copies count in items_in too: waiting for the originals' count
        # alone could stop the worker before an order's last item, which then rightly stays out),
        # but no batch is old or big enough to be cut.
        produced = sum(traffic.produced_ends.values()) - before
        wait_until(lambda: items_in(port) >= produced, 30, "every record produced taken in", worker)
        t = time.monotonic()
        assert worker.stop(timeout=bound_s + 15) == 0
        slowest = max(slowest, time.monotonic() - t)
        unflushed += verify(out, traffic.expected)[1]
        committed = committed_offsets(broker.bootstrap, app_id, f"{app_id}.order-items")
        uncommitted += sum(end - committed.get(p, 0) for p, end in traffic.produced_ends.items())
    return Result("SIGTERM flushes and commits", runs, len(traffic.expected), *verify(out, traffic.expected),
                  facts={"unflushed": unflushed, "uncommitted": uncommitted, "slowest_stop_s": slowest},
                  note=f"slowest stop {slowest:.1f}s (bound {bound_s:.0f}s); after stops: {unflushed} rows "
                       f"not in files, {uncommitted} records not committed")


def poison(broker, tmp: Path, items: int, ratio: float = 0.01) -> Result:
    app_id, out, cfg = _setup(broker, tmp, "poison")
    worker = WorkerProcess(cfg, tmp / "poison.log").start()
    worker.wait_ready()
    traffic = Traffic(broker.bootstrap, app_id, poison=ratio, seed=5).clicks_consumed_by(app_id)
    traffic.burst(items)
    wait_delivered(out, traffic, 120)
    dlq = read_topic(broker.bootstrap, f"{app_id}.dead-letter", expect=len(traffic.poisoned), settle_s=0)
    worker.stop()
    origins = {(dict(r.headers)["imref.source.topic"].decode(), int(dict(r.headers)["imref.source.partition"]),
                int(dict(r.headers)["imref.source.offset"])) for r in dlq}
    missing = set(traffic.poisoned) - origins
    copies = audited(broker.bootstrap, app_id, traffic)
    return Result(f"{ratio:.0%} poison events", 1, len(traffic.expected), *verify(out, traffic.expected),
                  facts={"poisoned": len(traffic.poisoned), "dead_lettered": len(traffic.poisoned) - len(missing),
                         "resent": len(traffic.resent), "audited": copies},
                  note=f"{len(traffic.poisoned) - len(missing)}/{len(traffic.poisoned)} poison events in the "
                       f"dead-letter topic with their origin; {copies}/{len(traffic.resent)} re-sent items on the "
                       f"audit topic")


SECRET_ENV = {"IMREF_CHAOS_PASSWORD": PASSWORD}


def _ftps(server: FtpServer, certs: Certs | None, **extra) -> dict:
    # pull_from_3rd_party: temporary name + rename, so a reset never leaves a partial final file
    return {"name": "retailer ftps", "method": "ftps", "methodology": "pull_from_3rd_party", "host": "127.0.0.1",
            "port": server.port, "username": USER, "password": {"env": "IMREF_CHAOS_PASSWORD"}, "timeout_s": 5,
            **({"ca_file": str(certs.ca_file)} if certs else {}), **extra}


def destination_faults(broker, tmp: Path, cycles: int) -> Result:
    """The FTPS destination is down 5 s of every 10 s, the first upload after every outage is
    reset in the middle, and every second outage the worker is killed (-9) while it cannot
    deliver: a batch acked before its upload was confirmed would be lost after the restart."""
    certs = Certs.make(tmp / "dest-tls")
    root = tmp / "dest-ftp"
    with FtpServer(root, certs=certs) as ftp:
        app_id, _, cfg = _setup(broker, tmp, "dest", connections=[_ftps(ftp, certs)],
                                kafka={"instance_id": "chaos-dest"})
        start = lambda: WorkerProcess(cfg, tmp / "dest.log", env=SECRET_ENV).start()  # noqa: E731
        worker = start()
        worker.wait_ready()
        traffic = Traffic(broker.bootstrap, app_id).clicks_consumed_by(app_id).start()
        kills = resets = 0
        try:
            for cycle in range(cycles):
                ftp.down()
                time.sleep(2.5)
                if cycle % 2:
                    worker.kill()
                    kills += 1
                    worker = start()
                time.sleep(2.5)
                ftp.drop_uploads += 1
                resets += 1
                ftp.up()
                time.sleep(5)
        finally:
            traffic.stop()
        wait_delivered(root, traffic, 180)
        worker.stop()
        resets -= ftp.drop_uploads  # requested but never triggered
        failures = (tmp / "dest.log").read_text().count("upload failed: connection='retailer ftps'")
    return Result("destination down 5 s of 10 s, resets mid-upload, kill -9 during outages", cycles,
                  len(traffic.expected), *verify(root, traffic.expected),
                  facts={"kills": kills, "resets": resets, "failures": failures},
                  note=f"{cycles} outages, {resets} resets mid-upload, {kills} kills while down, "
                       f"{failures} failed uploads retried")


def _variant(cfg: Path, suffix: str, change) -> Path:
    config = yaml.safe_load(cfg.read_text())
    change(config["connections"])
    path = cfg.with_name(f"{cfg.stem}-{suffix}.yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def security_negatives(broker, tmp: Path, items: int = 300) -> Result:
    """Refusals that must not lose data: an SFTP server whose host key is not pinned and an FTPS
    server whose certificate is not trusted get nothing; plain FTP is refused at start-up; once
    the operator pins the key and names the CA, every row arrives exactly once at both. Finally
    no log line this suite wrote (every *.log under ``tmp``) holds a secret."""
    certs = Certs.make(tmp / "sec-tls")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp / "sec-id_ed25519"
    key_file.write_bytes(client_key.export_private_key("openssh"))
    ftp_root, sftp_root, checks = tmp / "sec-ftp", tmp / "sec-sftp", []
    with FtpServer(ftp_root, certs=certs) as ftp, \
            SftpServer(sftp_root, tmp / "sec-known_hosts", client_key.export_public_key().decode()) as sftp:
        sftp_conn = {"name": "retailer sftp", "method": "sftp", "methodology": "pull_from_3rd_party",
                     "host": "127.0.0.1", "port": sftp.port, "username": USER, "timeout_s": 5,
                     "private_key": {"file": str(key_file)}, "known_hosts": str(sftp.known_hosts)}
        port = free_port()
        app_id, _, cfg = _setup(broker, tmp, "security", connections=[_ftps(ftp, None), sftp_conn],
                                web={"enabled": True, "host": "127.0.0.1", "port": port})

        plain = _variant(cfg, "plain", lambda conns: conns[0].update(method="ftp"))
        refused = WorkerProcess(plain, tmp / "security-plain.log", env=SECRET_ENV).start()
        refused.proc.wait(60)
        if refused.proc.returncode != 0 and "allow_plaintext" in refused.log_text():
            checks.append("plain FTP refused at start-up")

        sftp.known_hosts.write_text("")  # the operator has not pinned this server
        worker = WorkerProcess(cfg, tmp / "security.log", env=SECRET_ENV).start()
        worker.wait_ready()
        traffic = Traffic(broker.bootstrap, app_id).clicks_consumed_by(app_id)
        traffic.burst(items)
        for name in ("retailer sftp", "retailer ftps"):  # each refused at least once (and logged before)
            wait_until(lambda: metrics(port).get(("imref_upload_failures_total", (("connection", name),)), 0), 60,
                       f"a failed upload to {name}", worker)
        log = worker.log_text()
        if "not found in known_hosts" in log and not list(sftp_root.iterdir()):
            checks.append("unknown SSH host key refused")
        if "CERTIFICATE_VERIFY_FAILED" in log and not list(ftp_root.glob("*.csv")):
            checks.append("untrusted FTPS certificate refused")
        assert worker.stop() == 0

        sftp.pin()
        fixed = _variant(cfg, "fixed", lambda conns: conns[0].update(ca_file=str(certs.ca_file)))
        worker = WorkerProcess(fixed, tmp / "security.log", env=SECRET_ENV).start()
        wait_delivered(ftp_root, traffic, 120)
        wait_delivered(sftp_root, traffic, 60)
        worker.stop()
        counts = [verify(root, traffic.expected) for root in (ftp_root, sftp_root)]

    secrets = [PASSWORD, client_key.export_private_key("openssh").decode().splitlines()[1]]
    lines = [line for log in tmp.rglob("*.log") for line in log.read_text(errors="replace").splitlines()]
    leaks = sum(any(secret in line for secret in secrets) for line in lines)
    if lines and not leaks:
        checks.append(f"no secret in {len(lines)} log lines")
    return Result("security negatives, then fixed by the operator", len(checks), 2 * len(traffic.expected),
                  *(sum(c[i] for c in counts) for i in range(3)),
                  note="; ".join(checks) + " (rows counted at both destinations)")
