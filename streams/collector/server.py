"""``imref-stream collector``: the click collector as its own stateless process.

``POST {base_path}/collect`` turns a landing page's beacon into a click event, produced to the
clicks topic keyed by customer id and answered 202 only once the broker confirmed it (acks=all);
the answer sets the click id cookie from the server (``streams.collector.beacon.Cookies``).
``GET {base_path}/imref.js`` serves the snippet. ``/healthz``, ``/readyz`` and ``/metrics`` are for
the cluster, outside ``base_path``, so an ingress that routes only ``base_path`` does not publish them.

Beacons come as ``application/json`` or ``text/plain`` (``navigator.sendBeacon`` sends a string
as text/plain, which needs no CORS preflight). Every POST first passes the rate limits
(``streams.collector.ratelimit``): per client and for all clients, else 429. No Faust, no table,
no consumer: any number of these run side by side.
"""
from __future__ import annotations

import asyncio
import logging
import logging.config
import math
import signal
from pathlib import Path

from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from schemas.validation import InvalidEvent

from ..config import CollectorProcessSettings
from ..kafka import client_options
from ..logs import logging_config
from .beacon import Cookies, Refused, check_consent, click_event, parse
from .ratelimit import RateLimits, client_key

log = logging.getLogger("imref.collector")

SNIPPET = Path(__file__).parent / "static" / "imref.js"
ACCEPTED_TYPES = ("application/json", "text/plain")
UTF_8 = ("utf-8", "utf8")  # the body is decoded as UTF-8 whatever the header says: refuse other charsets
PRODUCE_TIMEOUT_S = 10.0
RATE_LIMITED = {"client": "this client", "global": "all clients together"}
STOP_TIMEOUT_S = 10.0


class Collector:
    def __init__(self, settings: CollectorProcessSettings):
        c = self.c = settings.collector
        self.topic = settings.topics.clicks
        self.max_age_days = settings.max_event_age_days
        self.producer: AIOKafkaProducer | None = None  # once the broker was reached: ready from then on
        self.allowed = frozenset(c.allowed_origins)
        self.limits = RateLimits(c.client_rate_per_s, c.client_burst, c.global_rate_per_s, c.global_burst)
        self.cookies = Cookies(c.cookie_name, round(settings.attribution.window_days * 86400), c.cookie_domains)
        self.snippet = SNIPPET.read_bytes()
        self.registry = CollectorRegistry()
        self.answers = Counter("imref_collector_answers", "Beacon answers, by status and reason.",
                               ["status", "reason"], registry=self.registry)

    def routes(self) -> list[web.RouteDef]:
        base = self.c.base_path
        return [web.post(f"{base}/collect", self.collect), web.options(f"{base}/collect", self.preflight),
                web.get(f"{base}/imref.js", self.serve_snippet), web.get("/healthz", self.health),
                web.get("/readyz", self.readiness), web.get("/metrics", self.metrics)]

    def cors(self, request: web.Request) -> tuple[dict, bool]:
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser page (server to server): CORS does not apply
            return {}, True
        if origin.lower() in self.allowed:
            # Credentials: the answer's Set-Cookie is stored only for a request made with them.
            return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true",
                    "Vary": "Origin"}, True
        return {"Vary": "Origin"}, False

    async def preflight(self, request: web.Request) -> web.Response:
        headers, ok = self.cors(request)
        if not ok or "Origin" not in request.headers:
            return web.json_response({"error": "origin_not_allowed"}, status=403, headers=headers)
        return web.Response(status=204, headers={
            **headers, "Access-Control-Allow-Methods": "POST", "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "600"})

    async def collect(self, request: web.Request) -> web.Response:
        headers, ok = self.cors(request)

        def refuse(status: int, error: str, detail: str, retry_after: float = 0) -> web.Response:
            self.answers.labels(str(status), error).inc()
            extra = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else {}
            return web.json_response({"error": error, "detail": detail}, status=status, headers={**headers, **extra})

        # Counted before anything else is looked at: refused requests cost as well.
        limited = self.limits.check(client_key(request.remote, request.headers.getall("X-Forwarded-For", []),
                                               self.c.proxy_hops))
        if limited is not None:
            which, wait = limited
            return refuse(429, "rate_limited", f"too many beacons from {RATE_LIMITED[which]}", retry_after=wait)
        # A simple (text/plain) request reaches us without a preflight, so the Origin is
        # checked here as well, not left to the browser.
        if not ok:
            return refuse(403, "origin_not_allowed", "this origin is not in collector.allowed_origins")
        if "Content-Type" in request.headers and (request.content_type not in ACCEPTED_TYPES
                                                  or (request.charset or "utf-8").lower() not in UTF_8):
            return refuse(415, "unsupported_media_type", "send application/json or text/plain, in UTF-8")
        body = await _read_limited(request, self.c.max_body_bytes)
        if body is None:
            return refuse(413, "body_too_large", f"at most {self.c.max_body_bytes} bytes")
        try:
            beacon = parse(body)
            check_consent(beacon, self.c.require_consent)
            click, value, key = click_event(beacon, self.max_age_days)
        except InvalidEvent as exc:
            return refuse(400, exc.reason, exc.detail)
        except Refused as exc:
            return refuse(403, exc.reason, exc.detail)
        if self.producer is None:
            return refuse(503, "unavailable", "the broker has not been reached yet", retry_after=5)
        try:
            await asyncio.wait_for(self._produce(key, value), PRODUCE_TIMEOUT_S)
        except Exception as exc:
            log.warning("click not confirmed by the broker: %s", type(exc).__name__)
            return refuse(503, "unavailable", "try again", retry_after=5)
        self.answers.labels("202", "").inc()
        response = web.json_response({"accepted": True}, status=202, headers=headers)
        for cookie in self.cookies.for_click(click, request.host):
            response.headers.add("Set-Cookie", cookie)
        return response

    async def _produce(self, key: bytes, value: bytes) -> None:
        # send() queues the record; the future it returns is the broker's ack (acks=all).
        await (await self.producer.send(self.topic, value=value, key=key))

    async def serve_snippet(self, request: web.Request) -> web.Response:
        return web.Response(body=self.snippet, content_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=300"})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})  # answering at all shows the event loop is responsive

    async def readiness(self, request: web.Request) -> web.Response:
        ready = self.producer is not None
        return web.json_response({"ok": ready}, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:  # chunked bodies carry no length: stop reading past the limit
            return None
    return bytes(body)


async def serve(settings: CollectorProcessSettings) -> None:
    """Serve until SIGTERM or SIGINT; then stop taking requests, answer those under way, flush."""
    c = settings.collector
    collector = Collector(settings)
    app = web.Application()
    app.add_routes(collector.routes())
    # No access log: every line would name a visitor's address, and at this rate cost CPU.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_TIMEOUT_S, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, c.host, c.port).start()  # probes answer from here; /readyz is 503 until the broker is
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    producer = None
    try:
        producer = await _connect(settings, stopping)
        if producer is not None:
            collector.producer = producer
            log.info("Collector ready on %s:%s%s, producing to %s", c.host, c.port, c.base_path, collector.topic)
            await stopping.wait()
    finally:
        await runner.cleanup()  # stops listening, lets the answers under way finish
        if producer is not None:
            await producer.stop()  # flushes whatever is still queued
        log.info("Collector stopped")


async def _connect(settings: CollectorProcessSettings, stopping: asyncio.Event) -> AIOKafkaProducer | None:
    """A started producer that knows the clicks topic's partitions; retried while the broker is out
    of reach (a collector that starts before Kafka waits, unready, instead of crash-looping) or the
    topic is not as the config says. None when told to stop first."""
    t, delay = settings.topics, 0.5
    while not stopping.is_set():
        producer = AIOKafkaProducer(**client_options(settings.kafka), acks="all", client_id="imref-collector")
        try:
            await producer.start()
            partitions = len(await producer.partitions_for(t.clicks))
            if partitions == t.partitions:
                return producer
            # Clicks keyed into another partition count than the order items' would never join.
            log.error("%s has %d partitions, topics.partitions says %d: not producing", t.clicks, partitions,
                      t.partitions)
        except Exception as exc:
            log.warning("broker not reached (%s); retrying in %.1fs", type(exc).__name__, delay)
        await producer.stop()
        try:
            await asyncio.wait_for(stopping.wait(), delay)
        except TimeoutError:
            delay = min(delay * 2, 10.0)
    return None


def run(settings: CollectorProcessSettings, loglevel: str) -> int:
    import uvloop

    config = logging_config(settings.logging.format, loglevel)
    if config is None:
        logging.basicConfig(level=loglevel.upper(), format="[%(asctime)s] [%(levelname)s] %(name)s: %(message)s")
    else:
        logging.config.dictConfig(config)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings))
    return 0

