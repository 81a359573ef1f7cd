"""The click collector end to end, as its own process (``imref-stream collector``): a real
Chromium lands on one of the retailer's domains with ?im_ref=, imref.js keeps it in a cookie,
carries it to the retailer's other domain and sends the beacon; the collector produces the click
event and its answer sets the cookie from the server, which the browser keeps where the collector
is under the shop's own host (a proxy path, as an ingress routes /imref/). With consent required,
the snippet stores and sends nothing until the page's consent API, a TCF CMP or Google Consent
Mode says yes, and removes the cookies when they say no. Invalid beacons are refused with the
reason and never reach the topic; a collector with tight rate limits answers 429 per client and
for all clients. Last, a worker attributes an order to a click the collector produced."""
from __future__ import annotations

import contextlib
import html
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
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

from streams.collector.beacon import sent_marker
from streams.tools.devbroker import create_topics, free_port
from tests.support.collector import CollectorProcess
from tests.support.harness import ROOT, WorkerProcess, produce, read_topic, wait_for_rows, wait_until, write_config

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
WINDOW_S = 30 * 86400  # attribution.window_days (the default): the server-set cookies' Max-Age
SCRIPT_DAYS = 7  # the pages' cookieDays: what the script writes, told apart from the server's by it
# Forwarded to the collector as an ingress would; the rest are hop-by-hop or rewritten.
NOT_FORWARDED = {"connection", "keep-alive", "transfer-encoding", "content-length", "x-forwarded-for"}

# What a CMP and Google's tag put on a page before any other script, reduced to what imref.js
# reads: a TCF v2 API whose CMP still shows its banner, and Consent Mode's default of "denied".
TCF_STUB = """
  window.tcf = {listeners: [], data: {tcString: "", gdprApplies: true, eventStatus: "cmpuishown",
                                       purpose: {consents: {}}}};
  window.__tcfapi = function (command, version, callback) {
    if (command === "addEventListener") { tcf.listeners.push(callback); callback(tcf.data, true); }
  };
  window.tcfUser = function (purpose1) {  // the visitor answers the banner
    tcf.data = {tcString: "CP-test", gdprApplies: true, eventStatus: "useractioncomplete",
                purpose: {consents: {1: purpose1, 2: true}}};
    tcf.listeners.forEach(function (callback) { callback(tcf.data, true); });
  };"""
CONSENT_MODE_STUB = """
  window.dataLayer = window.dataLayer || [];
  window.gtag = function () { dataLayer.push(arguments); };
  gtag("consent", "default", {ad_storage: "denied", analytics_storage: "denied"});"""
# How each signal says yes and no on the page.
CONSENT_SIGNALS = {
    "api": ("", "imref.consent(true)", "imref.consent(false)"),
    "tcf": (TCF_STUB, "tcfUser(true)", "tcfUser(false)"),
    "consent-mode": (CONSENT_MODE_STUB, 'gtag("consent", "update", {ad_storage: "granted"})',
                     'gtag("consent", "update", {ad_storage: "denied"})'),
}


class Site(ThreadingHTTPServer):
    """Two landing 'domains' (shop-a.localhost, shop-b.localhost: Chromium resolves every
    *.localhost name to loopback) served by one loopback server, told apart by Host; over https
    when given a TLS context. /imref/ is passed on to the collector, as the shop's ingress would."""

    def __init__(self, collector_port: int, tls: ssl.SSLContext | None = None):
        self.collector_port, self.scheme = collector_port, "https" if tls else "http"
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
    """A landing page; ``?via=`` says where its snippet and collector are: ``shop`` (default: under
    the shop's own host, /imref/), ``port`` (the collector's own port on the same host name: same
    site, another origin) or ``ip`` (127.0.0.1: another site). ``?consent=`` asks for consent with
    the given signal's stub on the page; ``?cid=`` is the customer."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.startswith("/imref/"):
            return self.forward()
        site: Site = self.server
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        host = self.headers["Host"].split(":")[0]
        script = {"shop": "/imref/imref.js", "port": f"http://{host}:{site.collector_port}/imref/imref.js",
                  "ip": f"http://127.0.0.1:{site.collector_port}/imref/imref.js"}[query.get("via", "shop")]
        options = {"customerId": query.get("cid"), "domains": ["shop-a.localhost", "shop-b.localhost"],
                   "cookieDays": SCRIPT_DAYS, "requireConsent": "consent" in query}
        stub = CONSENT_SIGNALS[query["consent"]][0] if "consent" in query else ""
        other = site.origin("shop-b" if host.startswith("shop-a.") else "shop-a")
        body = f"""<!doctype html><html><head><title>{html.escape(self.headers['Host'])}</title>
<script>{stub}</script></head><body>
<a id="other" href="{other}/welcome?utm_source=x">other domain</a>
<a id="same" href="/cart">same domain</a>
<a id="foreign" href="http://elsewhere.localhost:{site.server_port}/">someone else</a>
<script src="{script}"></script>
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

    def do_POST(self):  # noqa: N802
        if not self.path.startswith("/imref/"):
            return self.send_error(405)
        self.forward()

    def do_OPTIONS(self):  # noqa: N802
        self.forward()

    def forward(self) -> None:
        """Pass the request to the collector under the same path, with X-Forwarded-For appended
        (one trusted hop), and its answer back, Set-Cookie included: what ingress-nginx does."""
        site: Site = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in NOT_FORWARDED}
        forwarded = self.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{forwarded}, {self.client_address[0]}" if forwarded else self.client_address[0]
        upstream = http.client.HTTPConnection("127.0.0.1", site.collector_port, timeout=30)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in NOT_FORWARDED:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def start_collector(broker, tmp: Path, app_id: str, port: int | None = None, **collector) -> CollectorProcess:
    """A collector process reading a worker's config file (its own sections of it)."""
    port = port or free_port()
    cfg = write_config(tmp / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=tmp / "out",
                       data_dir=tmp / "data", collector={"host": "127.0.0.1", "port": port, **collector})
    # In production the KafkaTopics exist first; the collector refuses a clicks topic of another partition count.
    create_topics(broker.bootstrap, [f"{app_id}.clicks"], 4)
    process = CollectorProcess(cfg, tmp / "collector.log", port).start()
    try:
        process.wait_ready()
    except BaseException:
        process.stop()
        raise
    return process


@pytest.fixture(scope="module")
def collector(broker, ca, tmp_path_factory):
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("shop-a.localhost", "shop-b.localhost").configure_cert(tls)
    port = free_port()  # the sites pass /imref/ on to it; their origins go into its config
    site, secure_site = Site(port).serve(), Site(port, tls).serve()
    origins = [s.origin(n) for s in (site, secure_site) for n in ("shop-a", "shop-b")]
    try:
        process = start_collector(broker, tmp_path_factory.mktemp("collector"), "collector", port=port,
                                  max_body_bytes=1024, allowed_origins=origins, proxy_hops=1,
                                  cookie_domains=["shop-b.localhost"],
                                  # all requests come from 127.0.0.1: the limits are tested on their own collector
                                  client_burst=10_000, global_burst=10_000)
        yield dict(base=process.base, site=site, secure_site=secure_site, topic="collector.clicks",
                   bootstrap=broker.bootstrap, process=process)
        assert process.stop() == 0, process.log_text()[-3000:]  # SIGTERM: a clean stop
    finally:
        site.close()
        secure_site.close()


def post(base: str, body: bytes, content_type: str = "text/plain;charset=UTF-8", origin: str | None = None,
         method: str = "POST", extra: dict | None = None, path: str = "/imref/collect") -> tuple[int, dict, dict]:
    headers = {"Content-Type": content_type, **({"Origin": origin} if origin else {}), **(extra or {})}
    request = urllib.request.Request(f"{base}{path}", data=body if method == "POST" else None,
                                     headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, text, got = exc.code, exc.read(), exc.headers
    answer = orjson.loads(text) if text and got.get_content_type() == "application/json" else {}
    return status, answer, {**dict(got), "Set-Cookie": got.get_all("Set-Cookie") or []}


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


def cookies(context, origin: str) -> dict[str, dict]:
    return {c["name"]: c for c in context.cookies(origin)}


def lifetime_s(cookie: dict) -> float:
    return cookie["expires"] - time.time()


# Blocks the page's own cookie writes (and records them): what is then in the jar was set by a server.
NO_SCRIPT_COOKIES = """
  window.blockedCookieWrites = [];
  Object.defineProperty(document, "cookie", {
    configurable: true,
    get: function () { return Object.getOwnPropertyDescriptor(Document.prototype, "cookie").get.call(document); },
    set: function (value) { window.blockedCookieWrites.push(value); }
  });"""


def test_the_collectors_answer_sets_the_cookie_that_survives_without_the_script_writing_it(collector):
    site: Site = collector["site"]
    b = site.origin("shop-b")
    with chromium() as context:
        context.add_init_script(NO_SCRIPT_COOKIES)
        page = context.new_page()
        with page.expect_response(lambda r: r.url == f"{b}/imref/collect") as beacon:
            page.goto(f"{b}/landing?im_ref=Qi-SRV.1&cid=V-3003")
        answer = beacon.value
        assert answer.status == 202 and answer.request.resource_type == "ping"  # navigator.sendBeacon
        assert answer.request.post_data_json["im_ref"] == "Qi-SRV.1"
        attributes = f"Max-Age={WINDOW_S}; Path=/; Secure; SameSite=Lax; Domain=shop-b.localhost"
        assert answer.all_headers()["set-cookie"].split("\n") == [
            f"im_ref=Qi-SRV.1; {attributes}", f"im_ref_sent={sent_marker('Qi-SRV.1', 'V-3003')}; {attributes}"]
        # The script tried to write both cookies itself and could not: the ones in the jar are the server's.
        writes = page.evaluate("window.blockedCookieWrites")
        assert [w.split("=")[0] for w in writes] == ["im_ref", "im_ref_sent"] and "Max-Age=604800" in writes[0]
        jar = cookies(context, b)
        for name in ("im_ref", "im_ref_sent"):
            c = jar[name]
            assert (c["domain"], c["path"], c["secure"], c["httpOnly"], c["sameSite"]) == \
                (".shop-b.localhost", "/", True, False, "Lax"), c
            assert WINDOW_S - 120 < lifetime_s(c) <= WINDOW_S, c  # the attribution window, not the script's 7 days
        assert jar["im_ref"]["value"] == "Qi-SRV.1"

        page.reload()  # the landing again: the server's marker is the one the script computes, so no second beacon
        assert page.evaluate("window.result") == {"ref": "Qi-SRV.1", "sent": False, "consent": "not required"}
        page.goto(f"{b}/cart")  # no ?im_ref= any more: the click id comes from the server's cookie alone
        assert page.evaluate("imref.ref()") == "Qi-SRV.1"
        assert cookies(context, b)["im_ref"]["value"] == "Qi-SRV.1"
    records = clicks_until(collector, lambda r: any(e["im_ref"] == "Qi-SRV.1" for _, e in r))
    assert [k for k, e in records if e["im_ref"] == "Qi-SRV.1"] == [b"V-3003"]


def test_a_collector_on_another_origin_of_the_same_site_sets_the_cookie_too(collector):
    """Another port of the same host name: same site, another origin (collect.shop.example beside
    www.shop.example is the same case). The beacon goes with credentials, so the answer's cookie is
    stored; it is the collector host's own cookie, seen by the page because cookies ignore ports."""
    a = collector["site"].origin("shop-a")
    with chromium() as context:
        page = context.new_page()
        with page.expect_response(lambda r: r.url.endswith("/imref/collect")) as beacon:
            page.goto(f"{a}/landing?im_ref=Qi-PORT.2&cid=V-3004&via=port")
        assert beacon.value.status == 202 and beacon.value.url.startswith(f"http://shop-a.localhost:{collector['process'].port}/")
        c = cookies(context, a)["im_ref"]
        assert c["value"] == "Qi-PORT.2" and WINDOW_S - 120 < lifetime_s(c) <= WINDOW_S


def test_landing_sets_the_cookie_carries_im_ref_to_the_other_domain_and_reports_the_click(collector):
    """The collector on another site (127.0.0.1): the beacon is taken, but the browser drops the
    answer's SameSite=Lax cookie of a cross-site request, so the script's cookie is what stays."""
    site: Site = collector["site"]
    a, b = site.origin("shop-a"), site.origin("shop-b")
    with chromium() as context:
        page = context.new_page()
        with page.expect_response(lambda r: r.url.endswith("/imref/collect")) as beacon:
            page.goto(f"{a}/landing?im_ref=Qi-XYZ.42&cid=V-1001&via=ip")
        assert beacon.value.status == 202  # taken, and answered with the cookies as every accepted beacon is
        assert page.evaluate("window.result") == {"ref": "Qi-XYZ.42", "sent": True, "consent": "not required"}
        cookie = cookies(context, a)["im_ref"]
        assert cookie["value"] == "Qi-XYZ.42" and cookie["sameSite"] == "Lax" and cookie["domain"] == "shop-a.localhost"
        assert not cookie["secure"]  # http here; Secure is added on https
        assert (SCRIPT_DAYS - 0.1) * 86400 < lifetime_s(cookie) <= SCRIPT_DAYS * 86400  # the script's, not the server's
        assert page.get_attribute("#other", "href") == f"{b}/welcome?utm_source=x&im_ref=Qi-XYZ.42"
        assert page.get_attribute("#same", "href") == "/cart"
        assert "im_ref" not in page.get_attribute("#foreign", "href")

        page.reload()  # the same click for the same customer is reported once
        assert page.evaluate("window.result") == {"ref": "Qi-XYZ.42", "sent": False, "consent": "not required"}

        assert page.get_attribute("#later", "href") == f"{b}/welcome"
        page.click("#later")
        page.wait_for_url(f"{b}/welcome?im_ref=Qi-XYZ.42")
        assert {c["name"]: c["value"] for c in context.cookies(b)}["im_ref"] == "Qi-XYZ.42"
        # The other domain's page reported the click too, as customer V-1001 once it knew them.
        page.goto(f"{b}/account?cid=V-1001&via=ip")
        assert page.evaluate("window.result") == {"ref": "Qi-XYZ.42", "sent": True, "consent": "not required"}

    mine = lambda records: [(k, e) for k, e in records if e["customer_id"] == "V-1001"]  # noqa: E731
    records = mine(clicks_until(collector, lambda r: len(mine(r)) >= 2))
    assert sorted(e["domain"] for _, e in records) == ["shop-a.localhost", "shop-b.localhost"]
    for key, event in records:
        assert key == b"V-1001" and event["im_ref"] == "Qi-XYZ.42"
        assert event["landing_url"] in (f"{a}/landing", f"{b}/account")  # never the query string
        at = datetime.fromisoformat(event["occurred_at"])
        assert abs(at - datetime.now(timezone.utc)) < timedelta(minutes=2)  # server time


def test_over_https_the_server_sets_secure_cookies(collector, ca, tmp_path):
    a = collector["secure_site"].origin("shop-a")
    with chromium(home=trusting(ca, tmp_path)) as context:
        page = context.new_page()
        with page.expect_response(lambda r: r.url == f"{a}/imref/collect") as beacon:
            page.goto(f"{a}/landing?im_ref=Qi-TLS.7&cid=V-2002")  # an untrusted certificate would raise here
        assert beacon.value.status == 202
        assert page.evaluate("window.result") == {"ref": "Qi-TLS.7", "sent": True, "consent": "not required"}
        jar = cookies(context, a)
        assert jar["im_ref"]["value"] == "Qi-TLS.7" and jar["im_ref"]["sameSite"] == "Lax"
        assert jar["im_ref"]["secure"] and jar["im_ref_sent"]["secure"]
        assert WINDOW_S - 120 < lifetime_s(jar["im_ref"]) <= WINDOW_S  # the server's answer replaced the script's
        page.reload()  # the landing again: the script leaves the server's cookie as it is (same value)
        assert page.evaluate("window.result") == {"ref": "Qi-TLS.7", "sent": False, "consent": "not required"}
        assert WINDOW_S - 120 < lifetime_s(cookies(context, a)["im_ref"]) <= WINDOW_S
    records = clicks_until(collector, lambda r: any(e["im_ref"] == "Qi-TLS.7" for _, e in r))
    assert [(k, e["landing_url"]) for k, e in records if e["im_ref"] == "Qi-TLS.7"] == [(b"V-2002", f"{a}/landing")]


def test_a_click_id_the_click_schema_refuses_is_neither_kept_nor_sent(collector):
    a = collector["site"].origin("shop-a")
    with chromium() as context:
        page = context.new_page()
        page.goto(f"{a}/landing?im_ref=Qi%3Bx%3D1&cid=V-4004")  # "Qi;x=1": not URL-safe
        assert page.evaluate("window.result") == {"ref": None, "sent": False, "consent": "not required"}
        assert context.cookies() == []
        page.goto(f"{a}/landing?im_ref=Qi-ok.1&cid=V-4004")  # a good one after it: its beacon is the only one
        assert page.evaluate("window.result")["sent"] is True and cookies(context, a)["im_ref"]["value"] == "Qi-ok.1"
    records = clicks_until(collector, lambda r: any(e["im_ref"] == "Qi-ok.1" for _, e in r))
    assert [e["im_ref"] for _, e in records if e["customer_id"] == "V-4004"] == ["Qi-ok.1"]


@pytest.mark.parametrize("signal", CONSENT_SIGNALS)
def test_with_consent_required_nothing_is_stored_or_sent_until_granted_and_withdrawal_removes_it(collector, signal):
    _, grant, withdraw = CONSENT_SIGNALS[signal]
    site: Site = collector["site"]
    b, ref, customer = site.origin("shop-b"), f"Qi-CONSENT.{signal}", f"V-{signal}"
    with chromium() as context:
        page = context.new_page()
        beacons = []
        page.on("request", lambda r: beacons.append(r) if "/collect" in r.url else None)
        page.goto(f"{b}/landing?im_ref={ref}&cid={customer}&consent={signal}")
        pending = {"api": "pending", "tcf": "pending", "consent-mode": "denied"}[signal]  # Consent Mode's default
        assert page.evaluate("window.result") == {"ref": None, "sent": False, "consent": pending}
        assert context.cookies() == [] and page.evaluate("document.cookie") == ""
        assert page.evaluate("imref.ref()") is None
        other = f"{site.origin('shop-a')}/welcome?utm_source=x"
        assert page.get_attribute("#other", "href") == other  # not carried along either

        with page.expect_response(lambda r: r.url == f"{b}/imref/collect") as beacon:
            page.evaluate(grant)
        assert beacon.value.status == 202
        assert beacon.value.request.post_data_json == {"im_ref": ref, "customer_id": customer, "consent": True,
                                                       "landing_url": f"{b}/landing", "domain": "shop-b.localhost"}
        # The one request to the collector is this one: none went before consent, or it would be listed first.
        assert [r.url for r in beacons] == [f"{b}/imref/collect"]
        jar = cookies(context, b)
        assert jar["im_ref"]["value"] == ref and WINDOW_S - 120 < lifetime_s(jar["im_ref"]) <= WINDOW_S
        assert page.evaluate("imref.ref()") == ref
        assert page.get_attribute("#other", "href") == f"{other}&im_ref={ref}"

        page.evaluate(withdraw)
        # The server set them for Domain=shop-b.localhost, the script for the host: both are gone,
        # at once for the page; the browser's own store hears of a script's cookie writes a moment
        # later (an IPC to Chromium's network service: under load, after the next statement).
        assert page.evaluate("document.cookie") == ""
        wait_until(lambda: context.cookies() == [], 10, "the browser's cookie store emptied by the withdrawal")
        assert page.evaluate("imref.ref()") is None
        assert page.get_attribute("#other", "href") == other
        page.goto(f"{b}/cart?cid={customer}&consent={signal}")  # the next page knows nothing of the click
        assert page.evaluate("window.result")["ref"] is None and context.cookies() == []
        assert len(beacons) == 1
    records = clicks_until(collector, lambda r: any(e["im_ref"] == ref for _, e in r))
    assert [k for k, e in records if e["im_ref"] == ref] == [customer.encode()]


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
    ("NUL", _beacon(im_ref="BAD-23", customer_id="V-1001\u0000"), "text/plain", 400, "control_character"),
    ("line separator in domain", _beacon(im_ref="BAD-24", customer_id="X-1", domain="shop\u2028example"),
     "text/plain", 400, "schema_violation"),
    ("look-alike letter in im_ref", _beacon(im_ref="\uff31i-1", customer_id="BAD-25"), "text/plain", 400,
     "invalid_click_id"),
    ("im_ref that is not URL-safe", _beacon(im_ref="BAD;39", customer_id="X-1"), "text/plain", 400, "invalid_click_id"),
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
    ("consent refused", _beacon(im_ref="BAD-37", customer_id="X-1", consent=False), "text/plain", 403,
     "consent_not_given"),
    ("consent not a boolean", _beacon(im_ref="BAD-38", customer_id="X-1", consent="yes"), "text/plain", 400,
     "schema_violation"),
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
        elif headers["Set-Cookie"]:
            wrong.append(f"{what}: a refusal sets cookies: {headers['Set-Cookie']}")
    assert not wrong, "\n".join(wrong)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/imref/collect", timeout=30)
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
    status, answer, headers = post(base, orjson.dumps({"im_ref": "R-OK", "customer_id": "X-200", "occurred_at": at,
                                                 "password": "never forwarded",
                                                 "landing_url": "https://u:pw@shop.example/p?mail=jane@example.com#x"}),
                             content_type="application/json")
    assert (status, answer) == (202, {"accepted": True})  # answered after the broker confirmed
    assert headers["Set-Cookie"] == [  # no Origin, no Host of the shop: a cookie for the collector's own host
        f"im_ref=R-OK; Max-Age={WINDOW_S}; Path=/; Secure; SameSite=Lax",
        f"im_ref_sent={sent_marker('R-OK', 'X-200')}; Max-Age={WINDOW_S}; Path=/; Secure; SameSite=Lax"]
    records = clicks_until(collector, lambda r: any(e["im_ref"] == "R-OK" for _, e in r))
    assert [(k, e) for k, e in records if e["im_ref"] == "R-OK"] == [
        (b"X-200", {"customer_id": "X-200", "im_ref": "R-OK", "occurred_at": at,
                    "landing_url": "https://shop.example/p"})]
    assert not [e for _, e in records if e["im_ref"] in ("R-PII", "R-CORS")]


def test_the_collector_serves_the_snippet_and_probes(collector):
    base = collector["base"]
    with urllib.request.urlopen(f"{base}/imref/imref.js", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert b"sendBeacon" in response.read()
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"{base}{path}", timeout=30) as response:
            assert orjson.loads(response.read()) == {"ok": True}
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        assert 'imref_collector_answers_total{reason="",status="202"}' in response.read().decode()


@pytest.fixture(scope="module")
def consenting(broker, tmp_path_factory):
    process = start_collector(broker, tmp_path_factory.mktemp("consenting"), "consenting", require_consent=True)
    yield dict(base=process.base, topic="consenting.clicks", bootstrap=broker.bootstrap)
    process.stop()


def test_a_collector_that_requires_consent_takes_only_beacons_that_say_so(consenting):
    base = consenting["base"]
    for beacon in ({"im_ref": "NC-1", "customer_id": "X-1"}, {"im_ref": "NC-2", "customer_id": "X-1", "consent": False}):
        status, answer, headers = post(base, orjson.dumps(beacon))
        assert (status, answer["error"]) == (403, "consent_not_given") and headers["Set-Cookie"] == []
    status, _, headers = post(base, orjson.dumps({"im_ref": "C-3", "customer_id": "X-1", "consent": True}))
    assert status == 202 and headers["Set-Cookie"][0].startswith("im_ref=C-3;")
    records = clicks_until(consenting, lambda r: any(e["im_ref"] == "C-3" for _, e in r))
    assert [e["im_ref"] for _, e in records] == ["C-3"]


@pytest.fixture(scope="module")
def limited(broker, tmp_path_factory):
    """A collector with tight limits behind one trusted proxy (X-Forwarded-For says who the client is)."""
    process = start_collector(broker, tmp_path_factory.mktemp("limited"), "limited", proxy_hops=1,
                              client_rate_per_s=0.5, client_burst=3, global_rate_per_s=1, global_burst=12)
    yield dict(base=process.base, topic="limited.clicks", bootstrap=broker.bootstrap)
    process.stop()


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


def test_collector_settings_are_checked_at_start_up(tmp_path):
    from streams.config import CollectorProcessSettings, ConfigError, parse_settings

    base = {"impact": {"campaign_id": 1, "action_tracker_id": 2},
            "connections": [{"name": "o", "method": "fsspec", "url": "/tmp/imref-outbox"}]}
    s = parse_settings({**base, "collector": {"allowed_origins": ["https://Shop.example/"],
                                              "cookie_domains": [".Shop.example"]}})
    assert s.collector.allowed_origins == ["https://shop.example"] and s.collector.cookie_domains == ["shop.example"]
    # The collector reads the worker's file, its own sections only: a connection's secret file need not exist.
    worker_file = {**base, "connections": [{"name": "o", "method": "ftps", "username": "u",
                                            "password": {"file": "/nowhere/secret"}}], "batch": {"max_rows": 10}}
    assert parse_settings(worker_file, model=CollectorProcessSettings).collector.port == 6067
    assert parse_settings({}, model=CollectorProcessSettings).max_event_age_days == 88  # a file of its own
    for patch, key in [({"collector": {"allowed_origins": ["https://shop.example/landing"]}}, "collector.allowed_origins"),
                       ({"collector": {"enabled": True}}, "the collector is its own process now"),
                       ({"collector": {"max_body_bytes": 10}}, "collector.max_body_bytes"),
                       ({"collector": {"client_rate_per_s": 0}}, "collector.client_rate_per_s"),
                       ({"collector": {"client_burst": 0}}, "collector.client_burst"),
                       ({"collector": {"global_rate_per_s": -5}}, "collector.global_rate_per_s"),
                       ({"collector": {"global_burst": "many"}}, "collector.global_burst"),
                       ({"collector": {"proxy_hops": -1}}, "collector.proxy_hops"),
                       ({"collector": {"base_path": "imref/"}}, "collector.base_path"),
                       ({"collector": {"cookie_name": "im ref"}}, "collector.cookie_name"),
                       ({"collector": {"cookie_domains": ["https://shop.example"]}}, "collector.cookie_domains"),
                       ({"collector": {"port": 70000}}, "collector.port"),
                       ({"colector": {}}, "colector")]:
        for model in (parse_settings, lambda d: parse_settings(d, model=CollectorProcessSettings)):
            with pytest.raises(ConfigError, match=key):
                model({**base, **patch})
    bad = tmp_path / "bad.yaml"
    bad.write_text("collector:\n  enabled: true\n")
    done = subprocess.run([sys.executable, "-m", "streams.cli", "collector", "--config", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "collector: Value error, `enabled` is gone" in done.stderr, done.stderr


def test_a_clicks_topic_of_another_partition_count_keeps_the_collector_unready(broker, tmp_path):
    create_topics(broker.bootstrap, ["lopsided.clicks"], 2)
    port = free_port()
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id="lopsided", out_dir=tmp_path / "out",
                       data_dir=tmp_path / "data", collector={"host": "127.0.0.1", "port": port},
                       logging={"format": "json"})
    process = CollectorProcess(cfg, tmp_path / "collector.log", port).start()
    try:
        said = "lopsided.clicks has 2 partitions, topics.partitions says 4: not producing"
        process.wait_for_log(said)
        line = next(orjson.loads(x) for x in process.log_text().splitlines() if said in x)  # logging.format: json
        assert (line["level"], line["logger"], line["message"]) == ("ERROR", "imref.collector", said)
        assert post(process.base, _beacon(im_ref="LOP-1", customer_id="X-1"))[0:2] == (
            503, {"error": "unavailable", "detail": "the broker has not been reached yet"})
        with pytest.raises(urllib.error.HTTPError) as unready:
            urllib.request.urlopen(f"{process.base}/readyz", timeout=30)
        assert unready.value.code == 503
    finally:
        assert process.stop() == 0


def test_clicks_from_the_collector_process_are_attributed_by_the_worker(broker, tmp_path):
    """The two processes from one config file: the worker (which no longer serves /collect) and the
    collector; a browser lands, the collector produces the click, the worker joins an order to it."""
    app_id, out, web_port, port = "split", tmp_path / "out", free_port(), free_port()
    site = Site(port).serve()
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp_path / "data", batch={"max_age_s": 1},
                       web={"enabled": True, "host": "127.0.0.1", "port": web_port},
                       collector={"host": "127.0.0.1", "port": port, "proxy_hops": 1,
                                  "allowed_origins": [site.origin("shop-a")]})
    worker = WorkerProcess(cfg, tmp_path / "worker.log").start()
    collector = None
    try:
        worker.wait_ready()  # it creates the co-partitioned topics
        for path in ("/imref/collect", "/collect", "/imref/imref.js", "/imref.js"):
            with pytest.raises(urllib.error.HTTPError) as gone:
                urllib.request.urlopen(f"http://127.0.0.1:{web_port}{path}", timeout=30)
            assert gone.value.code == 404, path
        collector = CollectorProcess(cfg, tmp_path / "collector.log", port).start()
        collector.wait_ready()
        with chromium() as context:
            page = context.new_page()
            with page.expect_response(lambda r: r.url.endswith("/imref/collect")) as beacon:
                page.goto(f"{site.origin('shop-a')}/landing?im_ref=Qi-SPLIT.9&cid=V-9009")
            assert beacon.value.status == 202
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        item = {"order_id": "O-9009", "customer_id": "V-9009", "occurred_at": now, "currency": "EUR",
                "amount": "19.90", "category": "shoes", "sku": "SKU-1", "quantity": 1}
        produce(broker.bootstrap, f"{app_id}.order-items", [(b"V-9009", orjson.dumps(item))])
        files = wait_for_rows(out, 1, worker=worker)
        rows = [dict(zip(f[0], r)) for f in files.values() for r in f[1:]]
        assert [(r["OrderId"], r["ClickId"], r["CustomerId"]) for r in rows] == [("O-9009", "Qi-SPLIT.9", "V-9009")]
    finally:
        site.close()
        if collector is not None:
            collector.stop()
        worker.stop()
