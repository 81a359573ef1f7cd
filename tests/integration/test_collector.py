"""The click collector end to end: a real Chromium lands on one of the retailer's domains with
?im_ref=, imref.js keeps it in a cookie, carries it to the retailer's other domain and sends
the beacon; the worker (a subprocess, web server on) produces the click event. Invalid
beacons are refused with the reason and never reach the topic; a second worker with tight rate
limits answers 429 per client and for all clients."""
from __future__ import annotations

import contextlib
import html
import json
import os
import shutil
import ssl
import subprocess
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
import trustme

from streams.tools.devbroker import free_port
from tests.support.harness import WorkerProcess, read_topic, write_config

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")


class Site(ThreadingHTTPServer):
    """Two landing 'domains' (shop-a.localhost, shop-b.localhost: Chromium resolves every
    *.localhost name to loopback) served by one loopback server, told apart by Host; over https
    when given a TLS context."""

    def __init__(self, collector: str, tls: ssl.SSLContext | None = None):
        self.collector, self.scheme = collector, "https" if tls else "http"
        super().__init__(("127.0.0.1", free_port()), SitePage)
        if tls:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    def origin(self, name: str) -> str:
        return f"{self.scheme}://{name}.localhost:{self.server_port}"

    def serve(self) -> "Site":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()


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
def ca():
    return trustme.CA()


def collector_worker(broker, tmp: Path, app_id: str, web_port: int, **collector) -> WorkerProcess:
    cfg = write_config(tmp / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=tmp / "out",
                       data_dir=tmp / "data", web={"enabled": True, "host": "127.0.0.1", "port": web_port},
                       collector={"enabled": True, **collector})
    return WorkerProcess(cfg, tmp / "worker.log").start()


@pytest.fixture(scope="module")
def collector(broker, ca, tmp_path_factory):
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("shop-a.localhost", "shop-b.localhost").configure_cert(tls)
    site, secure_site = Site(base).serve(), Site(base, tls).serve()
    worker = collector_worker(broker, tmp_path_factory.mktemp("collector"), "collector", web_port,
                              max_body_bytes=1024,
                              allowed_origins=[s.origin(n) for s in (site, secure_site) for n in ("shop-a", "shop-b")],
                              # every request here comes from 127.0.0.1: the limits are tested on their own worker
                              client_burst=10_000, global_burst=10_000)
    try:
        worker.wait_ready()
        yield dict(base=base, site=site, secure_site=secure_site, topic="collector.clicks",
                   bootstrap=broker.bootstrap, worker=worker)
    finally:
        site.close()
        secure_site.close()
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


@contextlib.contextmanager
def chromium(home: Path | None = None):
    """A fresh browser context in Debian's Chromium; ``home``: the HOME whose NSS database it trusts."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "install Debian's chromium: scripts/setup.sh does (apt-get install chromium)"
    env = {**os.environ, "HOME": str(home)} if home else None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), env=env)
        try:
            yield browser.new_context()
        finally:
            browser.close()


def trusting(ca: trustme.CA, home: Path) -> Path:
    """A HOME whose NSS database (~/.pki/nssdb: Chromium on Linux trusts the CAs in it besides its
    own root store) holds the test CA, as a company CA is installed: real verification, no ignored
    errors."""
    assert shutil.which("certutil"), "install Debian's libnss3-tools: scripts/setup.sh does"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    ca.cert_pem.write_to_path(str(home / "ca.pem"))
    subprocess.run(["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True)
    subprocess.run(["certutil", "-A", "-d", f"sql:{nssdb}", "-n", "imref test CA", "-t", "C,,",
                    "-i", str(home / "ca.pem")], check=True)
    return home


def test_landing_sets_the_cookie_carries_im_ref_to_the_other_domain_and_reports_the_click(collector):
    site: Site = collector["site"]
    a, b = site.origin("shop-a"), site.origin("shop-b")
    with chromium() as context:
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

    mine = lambda records: [(k, e) for k, e in records if e["customer_id"] == "V-1001"]  # noqa: E731
    records = mine(clicks_until(collector, lambda r: len(mine(r)) >= 2))
    assert sorted(e["domain"] for _, e in records) == ["shop-a.localhost", "shop-b.localhost"]
    for key, event in records:
        assert key == b"V-1001" and event["im_ref"] == "Qi-XYZ.42"
        assert event["landing_url"] in (f"{a}/landing", f"{b}/account")  # never the query string
        at = datetime.fromisoformat(event["occurred_at"])
        assert abs(at - datetime.now(timezone.utc)) < timedelta(minutes=2)  # server time


def test_over_https_the_cookies_are_secure(collector, ca, tmp_path):
    a = collector["secure_site"].origin("shop-a")
    with chromium(home=trusting(ca, tmp_path)) as context:
        page = context.new_page()
        page.goto(f"{a}/landing?im_ref=Qi-TLS.7&cid=V-2002")  # an untrusted certificate would raise here
        assert page.evaluate("window.result") == {"ref": "Qi-TLS.7", "sent": True}
        cookies = {c["name"]: c for c in context.cookies(a)}
        assert cookies["im_ref"]["value"] == "Qi-TLS.7" and cookies["im_ref"]["sameSite"] == "Lax"
        assert cookies["im_ref"]["secure"] and cookies["im_ref_sent"]["secure"]
    records = clicks_until(collector, lambda r: any(e["im_ref"] == "Qi-TLS.7" for _, e in r))
    assert [(k, e["landing_url"]) for k, e in records if e["im_ref"] == "Qi-TLS.7"] == [(b"V-2002", f"{a}/landing")]


def _beacon(**fields) -> bytes:
    return orjson.dumps(fields)


def _chunks(size: int):
    yield b'{"im_ref": "BAD-chunked", "customer_id": "X-1", "pad": "'
    for _ in range(size // 65536):
        yield b"x" * 65536
    yield b'"}'


OLD = (datetime.now(timezone.utc) - timedelta(days=100)).isoformat()
SOON = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()
# (what, body, content type, status, error); every body carries BAD- where a click would show it.
BAD_INPUT = [
    ("form post", b"im_ref=BAD-1&customer_id=X-1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("multipart", b"--b\r\n\r\nBAD-2\r\n--b--", "multipart/form-data; boundary=b", 415, "unsupported_media_type"),
    ("xml", b"<click im_ref='BAD-3'/>", "application/xml", 415, "unsupported_media_type"),
    ("UTF-16 JSON", _beacon(im_ref="BAD-4", customer_id="X-1").decode().encode("utf-16"),
     "application/json; charset=utf-16", 415, "unsupported_media_type"),
    ("8 MiB body", _beacon(im_ref="BAD-5", customer_id="X-1", pad="x" * (8 << 20)), "application/json", 413,
     "body_too_large"),
    ("2 MiB chunked body, no length", _chunks(2 << 20), "text/plain", 413, "body_too_large"),
    ("just over the limit", _beacon(im_ref="BAD-7", customer_id="X-1", pad="x" * 1000), "text/plain", 413,
     "body_too_large"),
    ("empty body", b"", "text/plain", 400, "malformed_json"),
    ("truncated JSON", b'{"im_ref": "BAD-9", "customer_id": ', "text/plain", 400, "malformed_json"),
    ("invalid UTF-8", b'{"im_ref": "BAD-10", "customer_id": "X-\xff"}', "text/plain", 400, "malformed_json"),
    ("UTF-8 byte order mark", b'\xef\xbb\xbf{"im_ref": "BAD-11", "customer_id": "X-1"}', "text/plain", 400,
     "malformed_json"),
    ("lone surrogate", b'{"im_ref": "BAD-12", "customer_id": "X-\\ud800"}', "text/plain", 400, "malformed_json"),
    ("JSON array", b'["BAD-13", "X-1"]', "text/plain", 400, "schema_violation"),
    ("JSON string", b'"BAD-14"', "text/plain", 400, "schema_violation"),
    ("e-mail address", _beacon(im_ref="BAD-15", customer_id="jane.doe@example.com"), "text/plain", 400,
     "personal_data_in_customer_id"),
    ("e-mail address in a longer id", _beacon(im_ref="BAD-16", customer_id="web|jane.doe@example.com"),
     "text/plain", 400, "personal_data_in_customer_id"),
    ("phone number", _beacon(im_ref="BAD-17", customer_id="+44 20 7946 0958"), "text/plain", 400,
     "personal_data_in_customer_id"),
    ("fullwidth @", _beacon(im_ref="BAD-18", customer_id="jane\uff20example.com"), "text/plain", 400,
     "personal_data_in_customer_id"),
    ("fullwidth digits", _beacon(im_ref="BAD-19", customer_id="\uff0b\uff14\uff14 20 7946 0958"), "text/plain",
     400, "personal_data_in_customer_id"),
    ("zero-width space in an e-mail", _beacon(im_ref="BAD-20", customer_id="jane@example.c\u200bom"), "text/plain",
     400, "personal_data_in_customer_id"),
    ("zero-width space", _beacon(im_ref="BAD-21", customer_id="V-10\u200b01"), "text/plain", 400,
     "schema_violation"),
    ("right-to-left override", _beacon(im_ref="BAD-22", customer_id="\u202e1001-V"), "text/plain", 400,
     "schema_violation"),
    ("NUL", _beacon(im_ref="BAD-23", customer_id="V-1001\u0000"), "text/plain", 400, "schema_violation"),
    ("line separator in domain", _beacon(im_ref="BAD-24", customer_id="X-1", domain="shop\u2028example"),
     "text/plain", 400, "schema_violation"),
    ("look-alike letter in im_ref", _beacon(im_ref="\uff31i-1", customer_id="BAD-25"), "text/plain", 400,
     "schema_violation"),
    ("missing im_ref", _beacon(customer_id="BAD-26"), "text/plain", 400, "schema_violation"),
    ("missing customer_id", _beacon(im_ref="BAD-27"), "text/plain", 400, "schema_violation"),
    ("customer_id null", _beacon(im_ref="BAD-28", customer_id=None), "text/plain", 400, "schema_violation"),
    ("customer_id a number", _beacon(im_ref="BAD-29", customer_id=1001), "text/plain", 400, "schema_violation"),
    ("customer_id empty", _beacon(im_ref="BAD-30", customer_id=""), "text/plain", 400, "schema_violation"),
    ("im_ref of 65 characters", _beacon(im_ref="BAD-31" + "R" * 59, customer_id="X-1"), "text/plain", 400,
     "id_too_long"),
    ("customer_id of 256 characters", _beacon(im_ref="R-1", customer_id="BAD-32" + "C" * 250), "text/plain", 400,
     "id_too_long"),
    ("time without a zone", _beacon(im_ref="BAD-33", customer_id="X-1", occurred_at="2026-01-01T10:00:00"),
     "text/plain", 400, "schema_violation"),
    ("time 100 days ago", _beacon(im_ref="BAD-34", customer_id="X-1", occurred_at=OLD), "text/plain", 400,
     "event_date_too_old"),
    ("time 3 days ahead", _beacon(im_ref="BAD-35", customer_id="X-1", occurred_at=SOON), "text/plain", 400,
     "event_date_in_future"),
    ("script URL", _beacon(im_ref="BAD-36", customer_id="X-1", landing_url="javascript:alert(1)"), "text/plain",
     400, "schema_violation"),
]


def test_bad_input_of_every_kind_gets_a_clear_4xx_and_nothing_reaches_the_topic(collector):
    base, origin = collector["base"], collector["site"].origin("shop-a")
    wrong = []
    for what, body, content_type, status, error in BAD_INPUT:
        got, answer, headers = post(base, body, content_type=content_type, origin=origin)
        if (got, answer.get("error")) != (status, error) or not answer.get("detail"):
            wrong.append(f"{what}: expected {status} {error}, got {got} {answer}")
        elif headers.get("Access-Control-Allow-Origin") != origin:  # the page can read why
            wrong.append(f"{what}: no CORS headers on the refusal")
        elif "jane" in json.dumps(answer) or "7946" in json.dumps(answer):
            wrong.append(f"{what}: the answer echoes personal data: {answer}")
    assert not wrong, "\n".join(wrong)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/collect", timeout=30)
    assert refused.value.code == 405

    # A good beacon after them: once it is in the topic, every earlier answer's click would be too.
    assert post(base, _beacon(im_ref="GOOD-after-bad", customer_id="X-1"), origin=origin)[0] == 202
    records = clicks_until(collector, lambda r: any(e["im_ref"] == "GOOD-after-bad" for _, e in r))
    assert any(e["im_ref"] == "GOOD-after-bad" for _, e in records)
    assert not [(k, e) for k, e in records if b"BAD-" in k + orjson.dumps(e)]


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
                                                 "password": "never forwarded",
                                                 "landing_url": "https://u:pw@shop.example/p?mail=jane@example.com#x"}),
                             content_type="application/json")
    assert (status, answer) == (202, {"accepted": True})  # answered after the broker confirmed
    records = clicks_until(collector, lambda r: any(e["im_ref"] == "R-OK" for _, e in r))
    assert [(k, e) for k, e in records if e["im_ref"] == "R-OK"] == [
        (b"X-200", {"customer_id": "X-200", "im_ref": "R-OK", "occurred_at": at,
                    "landing_url": "https://shop.example/p"})]
    assert not [e for _, e in records if e["im_ref"] in ("R-PII", "R-CORS")]


def test_the_worker_serves_the_snippet(collector):
    with urllib.request.urlopen(f"{collector['base']}/imref.js", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert b"sendBeacon" in response.read()


@pytest.fixture(scope="module")
def limited(broker, tmp_path_factory):
    """A worker with tight limits behind one trusted proxy (X-Forwarded-For says who the client is)."""
    web_port = free_port()
    worker = collector_worker(broker, tmp_path_factory.mktemp("limited"), "limited", web_port, proxy_hops=1,
                              client_rate_per_s=0.5, client_burst=3, global_rate_per_s=1, global_burst=12)
    try:
        worker.wait_ready()
        yield dict(base=f"http://127.0.0.1:{web_port}", topic="limited.clicks", bootstrap=broker.bootstrap)
    finally:
        worker.stop()


def beacon_from(limited: dict, client: str, im_ref: str, forged: str = "") -> tuple[int, dict, dict]:
    """A beacon as the trusted proxy forwards it: the client's address appended to what it sent."""
    forwarded = {"X-Forwarded-For": f"{forged}, {client}" if forged else client} if client else {}
    return post(limited["base"], _beacon(im_ref=im_ref, customer_id="X-1"), extra=forwarded)


def refs_in_topic(limited: dict, last: str) -> set[str]:
    return {e["im_ref"] for _, e in clicks_until(limited, lambda r: any(e["im_ref"] == last for _, e in r))}


def test_a_client_over_its_limit_gets_429_with_retry_after_and_the_others_get_through(limited):
    # The client forges a new X-Forwarded-For entry each time: only what the proxy appended counts.
    answers = [beacon_from(limited, "198.51.100.7", f"LIM-A{i}", forged=f"203.0.113.{i}") for i in range(5)]
    assert [status for status, _, _ in answers] == [202, 202, 202, 429, 429]
    status, answer, headers = answers[-1]
    assert answer == {"error": "rate_limited", "detail": "too many beacons from this client"}
    retry_after = int(headers["Retry-After"])
    assert 1 <= retry_after <= 2  # a token every 2 s
    assert beacon_from(limited, "198.51.100.8", "LIM-B")[0] == 202  # another client behind the proxy
    assert beacon_from(limited, "", "LIM-direct")[0] == 202  # not through the proxy: the peer address counts
    time.sleep(retry_after)  # what the answer promised
    assert beacon_from(limited, "198.51.100.7", "LIM-A-later")[0] == 202
    refs = refs_in_topic(limited, "LIM-A-later")
    assert {"LIM-A0", "LIM-A1", "LIM-A2", "LIM-B", "LIM-direct", "LIM-A-later"} <= refs
    assert not refs & {"LIM-A3", "LIM-A4"}


def test_all_clients_together_are_held_to_the_global_limit(limited):
    answers, started = [], time.monotonic()
    for i in range(40):  # each from another client, as a flood from many addresses
        answers.append(beacon_from(limited, f"192.0.2.{i}", f"LIM-G{i}"))
        if answers[-1][0] == 429:
            break
    elapsed = time.monotonic() - started
    status, answer, headers = answers[-1]
    assert (status, answer["detail"]) == (429, "too many beacons from all clients together")
    assert int(headers["Retry-After"]) == 1
    accepted = [f"LIM-G{i}" for i, (s, _, _) in enumerate(answers) if s == 202]
    assert len(accepted) <= 12 + elapsed * 1 + 1  # the burst, plus the rate for the time the loop took
    time.sleep(1)
    assert beacon_from(limited, "192.0.2.250", "LIM-G-later")[0] == 202
    refs = refs_in_topic(limited, "LIM-G-later")
    assert set(accepted) <= refs and f"LIM-G{len(answers) - 1}" not in refs


def test_collector_settings_are_checked_at_start_up():
    from streams.config import ConfigError, parse_settings

    base = {"impact": {"campaign_id": 1, "action_tracker_id": 2},
            "connections": [{"name": "o", "method": "fsspec", "url": "/tmp/imref-outbox"}]}
    assert parse_settings(base).collector.enabled is False  # a public write path: opt in
    s = parse_settings({**base, "collector": {"enabled": True, "allowed_origins": ["https://Shop.example/"]}})
    assert s.collector.allowed_origins == ["https://shop.example"]
    for patch, key in [({"collector": {"allowed_origins": ["https://shop.example/landing"]}}, "collector.allowed_origins"),
                       ({"collector": {"enabled": True}, "web": {"enabled": False}}, "collector.enabled needs web"),
                       ({"collector": {"max_body_bytes": 10}}, "collector.max_body_bytes"),
                       ({"collector": {"client_rate_per_s": 0}}, "collector.client_rate_per_s"),
                       ({"collector": {"client_burst": 0}}, "collector.client_burst"),
                       ({"collector": {"global_rate_per_s": -5}}, "collector.global_rate_per_s"),
                       ({"collector": {"global_burst": "many"}}, "collector.global_burst"),
                       ({"collector": {"proxy_hops": -1}}, "collector.proxy_hops")]:
        with pytest.raises(ConfigError, match=key):
            parse_settings({**base, **patch})
