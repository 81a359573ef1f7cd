"""The click collector end to end: a real Chromium lands on one of the retailer's domains with
?im_ref=, imref.js keeps it in a cookie, carries it to the retailer's other domain and sends
the beacon; the worker (a subprocess, web server on) produces the click event. Invalid
beacons are refused with the reason and never reach the topic."""
from __future__ import annotations

import html
import json
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from streams.devbroker import free_port
from tests.support.harness import WorkerProcess, read_topic, write_config

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")


class Site(ThreadingHTTPServer):
    """Two landing 'domains' (shop-a.localhost, shop-b.localhost: Chromium resolves every
    *.localhost name to loopback) served by one loopback server, told apart by Host."""

    def __init__(self, collector: str):
        self.collector = collector
        super().__init__(("127.0.0.1", free_port()), SitePage)

    def origin(self, name: str) -> str:
        return f"http://{name}.localhost:{self.server_port}"


class SitePage(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        site: Site = self.server
        query = parse_qs(urlsplit(self.path).query)
        options = {"collector": f"{site.collector}/collect", "customerId": query.get("cid", [None])[0],
                   "domains": ["shop-a.localhost", "shop-b.localhost"], "cookieDays": 7}
        body = f"""<!doctype html><html><head><title>{html.escape(self.headers['Host'])}</title></head><body>
<a id="other" href="{site.origin('shop-b')}/welcome?utm_source=x">other domain</a>
<a id="same" href="/cart">same domain</a>
<a id="foreign" href="http://elsewhere.localhost:{site.server_port}/">someone else</a>
<script src="{site.collector}/imref.js"></script>
<script>
  window.result = imref.init({json.dumps(options)});
  window.addEventListener("load", function () {{  // after the snippet's own pass: decorated when clicked
    var later = document.createElement("a");
    later.id = "later"; later.href = "{site.origin('shop-b')}/welcome"; later.textContent = "later";
    document.body.appendChild(later);
  }});
</script></body></html>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def collector(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collector")
    app_id = "collector"
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    site = Site(base)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    cfg = write_config(tmp / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=tmp / "out",
                       data_dir=tmp / "data", web={"enabled": True, "host": "127.0.0.1", "port": web_port},
                       collector={"enabled": True, "max_body_bytes": 1024,
                                  "allowed_origins": [site.origin("shop-a"), site.origin("shop-b")]})
    worker = WorkerProcess(cfg, tmp / "worker.log").start()
    try:
        worker.wait_ready()
        yield dict(base=base, site=site, topic=f"{app_id}.clicks", bootstrap=broker.bootstrap, worker=worker)
    finally:
        site.shutdown()
        site.server_close()
        worker.stop()


def post(base: str, body: bytes, content_type: str = "text/plain;charset=UTF-8", origin: str | None = None,
         method: str = "POST", extra: dict | None = None) -> tuple[int, dict, dict]:
    headers = {"Content-Type": content_type, **({"Origin": origin} if origin else {}), **(extra or {})}
    request = urllib.request.Request(f"{base}/collect", data=body if method == "POST" else None,
                                     headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, text, got = exc.code, exc.read(), exc.headers
    return status, (orjson.loads(text) if text else {}), dict(got)


def clicks_until(c: dict, done, timeout: float = 60) -> list[tuple[bytes, dict]]:
    deadline = time.monotonic() + timeout
    while True:
        records = [(r.key, orjson.loads(r.value)) for r in
                   read_topic(c["bootstrap"], c["topic"], expect=0, timeout=10, settle_s=0.5)]
        if done(records) or time.monotonic() > deadline:
            return records


def test_landing_sets_the_cookie_carries_im_ref_to_the_other_domain_and_reports_the_click(collector):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "install Debian's chromium: scripts/setup.sh does (apt-get install chromium)"
    site: Site = collector["site"]
    a, b = site.origin("shop-a"), site.origin("shop-b")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{a}/landing?im_ref=Qi-XYZ.42&cid=V-1001")
            assert page.evaluate("window.result") == {"ref": "Qi-XYZ.42", "sent": True}
            cookie = {c["name"]: c for c in context.cookies(a)}["im_ref"]
            assert cookie["value"] == "Qi-XYZ.42" and cookie["sameSite"] == "Lax"
            assert not cookie["secure"]  # http here; Secure is added on https
            assert 6.9 * 86400 < cookie["expires"] - time.time() <= 7 * 86400
            assert page.get_attribute("#other", "href") == f"{b}/welcome?utm_source=x&im_ref=Qi-XYZ.42"
            assert page.get_attribute("#same", "href") == "/cart"
            assert "im_ref" not in page.get_attribute("#foreign", "href")

            page.reload()  # the same click for the same customer is reported once
            assert page.evaluate("window.result") == {"ref": "Qi-XYZ.42", "sent": False}

            assert page.get_attribute("#later", "href") == f"{b}/welcome"
            page.click("#later")
            page.wait_for_url(f"{b}/welcome?im_ref=Qi-XYZ.42")
            assert {c["name"]: c["value"] for c in context.cookies(b)}["im_ref"] == "Qi-XYZ.42"
            # The other domain's page reported the click too, as customer V-1001 once it knew them.
            page.goto(f"{b}/account?cid=V-1001")
            assert page.evaluate("window.result") == {"ref": "Qi-XYZ.42", "sent": True}
        finally:
            browser.close()

    mine = lambda records: [(k, e) for k, e in records if e["customer_id"] == "V-1001"]  # noqa: E731
    records = mine(clicks_until(collector, lambda r: len(mine(r)) >= 2))
    assert sorted(e["domain"] for _, e in records) == ["shop-a.localhost", "shop-b.localhost"]
    for key, event in records:
        assert key == b"V-1001" and event["im_ref"] == "Qi-XYZ.42"
        assert event["landing_url"] in (f"{a}/landing", f"{b}/account")  # never the query string
        at = datetime.fromisoformat(event["occurred_at"])
        assert abs(at - datetime.now(timezone.utc)) < timedelta(minutes=2)  # server time


@pytest.mark.parametrize("body, status, reason", [
    ({"im_ref": "R1", "customer_id": "jane.doe@example.com"}, 400, "personal_data_in_customer_id"),
    ({"im_ref": "R1", "customer_id": "+44 20 7946 0958"}, 400, "personal_data_in_customer_id"),
    ({"im_ref": "R1", "customer_id": "X-400", "occurred_at": "2026-01-01T10:00:00"}, 400, "schema_violation"),
    ({"im_ref": "R" * 65, "customer_id": "X-400"}, 400, "id_too_long"),
    ({"customer_id": "X-400"}, 400, "schema_violation"),
    (b'{"im_ref": "R1", "customer_id": ', 400, "malformed_json"),
    (["R1", "X-400"], 400, "schema_violation"),
    ({"im_ref": "R1", "customer_id": "X-400", "pad": "x" * 1100}, 413, "body_too_large"),
])
def test_invalid_beacons_are_refused_with_the_reason(collector, body, status, reason):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    origin = collector["site"].origin("shop-a")
    got, answer, headers = post(collector["base"], raw, origin=origin)
    assert (got, answer["error"]) == (status, reason)
    assert headers["Access-Control-Allow-Origin"] == origin  # the page can read why
    assert "jane" not in json.dumps(answer) and "7946" not in json.dumps(answer)


def test_cors_is_answered_only_for_the_configured_origins(collector):
    base, site = collector["base"], collector["site"]
    beacon = orjson.dumps({"im_ref": "R-CORS", "customer_id": "X-evil"})
    status, answer, headers = post(base, beacon, origin="http://evil.localhost")
    assert (status, answer["error"]) == (403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in headers
    status, _, headers = post(base, b"", method="OPTIONS", origin=site.origin("shop-b"),
                              extra={"Access-Control-Request-Method": "POST"})
    assert status == 204 and headers["Access-Control-Allow-Origin"] == site.origin("shop-b")
    assert headers["Access-Control-Allow-Methods"] == "POST"
    status, _, headers = post(base, b"", method="OPTIONS", origin="http://evil.localhost")
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    status, answer, _ = post(base, beacon, content_type="application/x-www-form-urlencoded",
                             origin=site.origin("shop-a"))
    assert (status, answer["error"]) == (415, "unsupported_media_type")


def test_only_accepted_beacons_reach_the_topic(collector):
    base = collector["base"]
    for customer in ("jane.doe@example.com", "555-123-4567"):
        status, _, _ = post(base, orjson.dumps({"im_ref": "R-PII", "customer_id": customer}))
        assert status == 400
    # Server to server (no Origin), JSON, with the visitor's own time: accepted.
    at = (datetime.now(timezone.utc) - timedelta(minutes=3)).isoformat(timespec="seconds")
    status, answer, _ = post(base, orjson.dumps({"im_ref": "R-OK", "customer_id": "X-200", "occurred_at": at,
                                                 "password": "never forwarded"}),
                             content_type="application/json")
    assert (status, answer) == (202, {"accepted": True})  # answered after the broker confirmed
    records = clicks_until(collector, lambda r: any(e["im_ref"] == "R-OK" for _, e in r))
    assert [(k, e) for k, e in records if e["im_ref"] == "R-OK"] == [
        (b"X-200", {"customer_id": "X-200", "im_ref": "R-OK", "occurred_at": at})]
    assert not [e for _, e in records if e["im_ref"] in ("R-PII", "R-CORS") or e["customer_id"] == "X-400"]


def test_the_worker_serves_the_snippet(collector):
    with urllib.request.urlopen(f"{collector['base']}/imref.js", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert b"sendBeacon" in response.read()


def test_collector_settings_are_checked_at_start_up():
    from streams.config import ConfigError, parse_settings

    base = {"impact": {"campaign_id": 1, "action_tracker_id": 2},
            "connections": [{"name": "o", "method": "fsspec", "url": "/tmp/imref-outbox"}]}
    assert parse_settings(base).collector.enabled is False  # a public write path: opt in
    s = parse_settings({**base, "collector": {"enabled": True, "allowed_origins": ["https://Shop.example/"]}})
    assert s.collector.allowed_origins == ["https://shop.example"]
    for patch, key in [({"collector": {"allowed_origins": ["https://shop.example/landing"]}}, "collector.allowed_origins"),
                       ({"collector": {"enabled": True}, "web": {"enabled": False}}, "collector.enabled needs web"),
                       ({"collector": {"max_body_bytes": 10}}, "collector.max_body_bytes")]:
        with pytest.raises(ConfigError, match=key):
            parse_settings({**base, **patch})
