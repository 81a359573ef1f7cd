"""The worker's HTTP side against a running worker: Prometheus counters equal what was produced,
a failing connection holds its files and shows on the status page while /readyz stays 200, and the status page shows files and dead-letter counts
and updates live in a real headless Chromium (which also takes the docs' screenshot, with IMREF_UPDATE_SCREENSHOT=1)."""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.tools.devbroker import free_port
from tests.support.harness import WorkerProcess, produce, read_csv_files, wait_for_rows, write_config

pytestmark = pytest.mark.integration
CHROMIUM = Path("/usr/bin/chromium")
# docs/operations.md shows this page: IMREF_UPDATE_SCREENSHOT=1 refreshes it (a plain run leaves
# the source tree as it was)
SCREENSHOT = Path(__file__).parents[2] / "docs" / "status-page.png"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metrics(base: str) -> dict[tuple, float]:
    status, body = get(f"{base}/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def items(app_id: str, first_order: int, orders: int, bad: int = 0) -> list[tuple[bytes, bytes]]:
    out = []
    for o in range(first_order, first_order + orders):
        cid = f"W{o % 7}"
        out.append((cid.encode(), orjson.dumps({
            "order_id": f"WO{o:05d}", "customer_id": cid, "occurred_at": (NOW - timedelta(minutes=1)).isoformat(),
            "currency": "EUR", "amount": "12.50", "category": "Web", "sku": "S1", "quantity": 1})))
    out += [(b"W1", b'{"order_id": ')] * bad
    out += [(b"W2", orjson.dumps({"order_id": "WX", "customer_id": "W2", "occurred_at": NOW.isoformat(),
                                  "currency": "XXY", "amount": "1", "category": "c", "sku": "s", "quantity": 1}))] * bad
    return out


@pytest.fixture(scope="module")
def worker(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    app_id, port = "web-status", free_port()
    out = tmp / "out"
    cfg = write_config(tmp / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp / "data", web={"enabled": True, "host": "127.0.0.1", "port": port},
                       batch={"max_rows": 40, "max_age_s": 1}, attribution={"grace_s": 1})
    w = WorkerProcess(cfg, tmp / "worker.log").start()
    try:
        w.wait_ready()
        produce(broker.bootstrap, f"{app_id}.clicks", [(f"W{c}".encode(), orjson.dumps(
            {"customer_id": f"W{c}", "im_ref": f"IRW{c}", "occurred_at": (NOW - timedelta(hours=1)).isoformat()}))
            for c in range(7)])
        yield dict(base=f"http://127.0.0.1:{port}", out=out, app_id=app_id, bootstrap=broker.bootstrap, worker=w)
    finally:
        w.stop()


def test_metrics_count_exactly_what_was_produced(worker):
    produce(worker["bootstrap"], f"{worker['app_id']}.order-items", items(worker["app_id"], 0, 100, bad=3))
    files = wait_for_rows(worker["out"], 100, worker=worker["worker"])
    rows = sum(len(r) - 1 for r in files.values())
    assert rows == 100
    deadline = time.monotonic() + 30
    while True:  # the counters of the last file are bumped right after it is confirmed
        m = metrics(worker["base"])
        if m.get(("imref_files_delivered_total", (("connection", "outbox"),))) == len(files) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert m[("imref_events_in_total", (("kind", "clicks"),))] == 7
    assert m[("imref_events_in_total", (("kind", "items"),))] == 106
    assert m[("imref_rows_joined_total", ())] == 100
    assert m[("imref_dead_letter_total", (("reason", "malformed_json"),))] == 3
    assert m[("imref_dead_letter_total", (("reason", "unknown_currency"),))] == 3
    assert m[("imref_files_delivered_total", (("connection", "outbox"),))] == len(files)
    assert m[("imref_rows_delivered_total", (("connection", "outbox"),))] == 100
    assert m[("imref_flush_seconds_count", (("connection", "outbox"),))] == len(files)
    assert m[("imref_upload_failures_total", (("connection", "outbox"),))] == 0
    lag = [v for (name, labels), v in m.items() if name == "imref_consumer_lag"]
    assert len(lag) == 8  # 4 partitions of each input topic


def test_health_and_readiness_report_a_running_worker(worker):
    status, body = get(f"{worker['base']}/healthz")
    assert (status, json.loads(body)) == (200, {"ok": True, "reasons": []})
    status, body = get(f"{worker['base']}/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["ok"] and set(ready["checks"]) == {"broker", "recovery"}
    # Faust's table pages would publish customer ids and click ids: they are off.
    assert get(f"{worker['base']}/table/clicks/")[0] == 404


def test_status_page_lists_files_and_dead_letters_and_updates_live(worker, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), "install Debian's chromium: scripts/setup.sh does (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(worker["base"] + "/")
            expect(page.locator("#ready")).to_have_text("ready", timeout=20_000)
            before = set(read_csv_files(worker["out"]))
            some = sorted(before)[-1]
            expect(page.locator("#files tbody")).to_contain_text(some, timeout=10_000)
            expect(page.locator("#dead-letter tbody tr", has_text="malformed_json")).to_contain_text("3")
            expect(page.locator("#connections tbody")).to_contain_text("healthy")

            # more traffic while the page is open: new files and counts appear without a reload
            produce(worker["bootstrap"], f"{worker['app_id']}.order-items", items(worker["app_id"], 500, 40, bad=1))
            files = wait_for_rows(worker["out"], 140, worker=worker["worker"])
            assert set(files) - before
            new = sorted(set(files) - before)[-1]
            expect(page.locator("#files tbody")).to_contain_text(new, timeout=10_000)
            expect(page.locator("#dead-letter tbody tr", has_text="malformed_json")).to_contain_text("4")
            # The page lists a file from the moment it is held; it says delivered once the upload's
            # confirmation is recorded, which can come after the file is in the folder.
            expect(page.locator("#files tbody tr", has_text=new).locator("td").nth(3)).to_have_text("delivered",
                                                                                                  timeout=10_000)
            shot = SCREENSHOT if os.environ.get("IMREF_UPDATE_SCREENSHOT") else tmp_path / SCREENSHOT.name
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()


def test_a_connection_failing_holds_its_files_and_the_worker_stays_ready(broker, tmp_path, monkeypatch):
    """An outage at a destination is not ill health: the worker still consumes and commits (the
    other connection delivers), so /readyz stays 200 (it turned 503 before issue #21, taking every
    pod out of service while impact was down); the status page shows the failing connection and
    its held files."""
    port, dead = free_port(), free_port()  # nothing listens on `dead`
    app_id = "web-unready"
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=tmp_path / "out",
                       data_dir=tmp_path / "data",
                       web={"enabled": True, "host": "127.0.0.1", "port": port},
                       batch={"max_rows": 40, "max_age_s": 1},
                       connections=[{"name": "outbox", "method": "fsspec", "url": str(tmp_path / "out")},
                                    {"name": "partner ftp", "method": "ftp", "allow_plaintext": True,
                                     "methodology": "pull_from_3rd_party", "host": "127.0.0.1", "port": dead,
                                     "username": "u", "password": {"env": "IMREF_WEB_TEST_PASSWORD"},
                                     "timeout_s": 2}])
    w = WorkerProcess(cfg, tmp_path / "worker.log", env={"IMREF_WEB_TEST_PASSWORD": "not-logged-0097"}).start()
    base = f"http://127.0.0.1:{port}"
    try:
        w.wait_ready()
        assert get(f"{base}/readyz")[0] == 200
        produce(broker.bootstrap, f"{app_id}.order-items", [(b"W1", orjson.dumps({
            "order_id": "U1", "customer_id": "W1", "occurred_at": NOW.isoformat(), "im_ref": "IRU",
            "currency": "EUR", "amount": "3.00", "category": "Web", "sku": "S", "quantity": 1}))])
        deadline = time.monotonic() + 60
        while not metrics(base).get(("imref_upload_failures_total", (("connection", "partner ftp"),))) \
                and time.monotonic() < deadline:
            time.sleep(0.3)
        assert get(f"{base}/readyz")[0] == 200 and get(f"{base}/healthz")[0] == 200
        s = json.loads(get(f"{base}/status.json")[1])
        [ftp] = [c for c in s["connections"] if c["name"] == "partner ftp"]
        assert ftp["configuration_error"] is None and "connect failed" in ftp["last_error"]  # refused: an outage
        assert {c["name"]: c["ok"] for c in s["connections"]} == {"outbox": True, "partner ftp": False}
        states = {(f["connection"], f["state"]) for f in s["files"]}
        assert ("partner ftp", "retrying") in states and ("outbox", "delivered") in states
        # a second batch of the same partition queues behind the one being retried
        produce(broker.bootstrap, f"{app_id}.order-items", [(b"W1", orjson.dumps({
            "order_id": "U2", "customer_id": "W1", "occurred_at": NOW.isoformat(), "im_ref": "IRU",
            "currency": "EUR", "amount": "4.00", "category": "Web", "sku": "S", "quantity": 1}))])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            files = json.loads(get(f"{base}/status.json")[1])["files"]
            if sum(f["connection"] == "partner ftp" and f["state"] == "held" for f in files) == 1 \
                    and sum(f["connection"] == "outbox" and f["state"] == "delivered" for f in files) == 2:
                break
            time.sleep(0.3)
        held = [f for f in files if f["connection"] == "partner ftp" and f["state"] == "held"]
        assert len(held) == 1 and held[0]["rows"] is None, files
        assert metrics(base)[("imref_upload_failures_total", (("connection", "partner ftp"),))] >= 1
        assert "not-logged-0097" not in w.log_text()
    finally:
        w.stop()


def test_lanes_report_each_file_held_then_uploading_retrying_delivered_and_forget_what_is_no_file():
    """The file states behind the status page, from the real delivery lanes (no broker needed)."""
    import asyncio

    from connectors.base import Connection, ConnectionSettings
    from streams.delivery.lanes import Job, PartitionLanes, RetryPolicy
    from streams.metrics import Metrics

    class Gate(Connection):
        def __init__(self, name, fail):
            super().__init__(ConnectionSettings(name=name, methodology="push_to_impact"))
            self.fail = fail

        def put(self, name, data):
            if self.fail:
                raise ConnectionRefusedError("nothing listens")

    def job(name, data):
        async def prepare():
            return data, 2 if data else 0

        async def delivered():
            pass

        return Job(name, prepare, delivered)

    async def scenario():
        m = Metrics(["ok", "down"])
        lanes = PartitionLanes(0, [Gate("ok", False), Gate("down", True)],
                               RetryPolicy(first_delay_s=0.01, max_delay_s=0.02), metrics=m)
        for n, data in (("a.csv", b"x"), ("b.csv", None), ("c.csv", b"y")):
            lanes.submit(job(n, data))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            before = {(f.connection, f.name): (f.state, f.rows) for f in m.recent.values()}
            if before.get(("ok", "c.csv"), ("",))[0] == "delivered" and before[("down", "a.csv")][0] == "retrying":
                break
            await asyncio.sleep(0.02)
        lanes.cancel()
        after = {(f.connection, f.name): f.state for f in m.recent.values()}
        return before, after, m.failing_connections()

    before, after, failing = asyncio.run(scenario())
    assert before == {("ok", "a.csv"): ("delivered", 2), ("ok", "c.csv"): ("delivered", 2),
                      ("down", "a.csv"): ("retrying", 2), ("down", "b.csv"): ("held", None),
                      ("down", "c.csv"): ("held", None)}
    # the revoked partition's new owner re-forms its batches: only what was confirmed stays listed
    assert after == {("ok", "a.csv"): "delivered", ("ok", "c.csv"): "delivered"}
    assert set(failing) == {"down"}
