"""The click collector: ``POST /collect`` turns a landing page's beacon into a click event,
and ``GET /imref.js`` serves the snippet that sends it.

A beacon is ``{"im_ref", "customer_id", "occurred_at"?, "landing_url"?, "domain"?}`` as
``application/json`` or ``text/plain`` (``navigator.sendBeacon`` sends a string as text/plain,
which needs no CORS preflight). It is checked by the same click validation the worker applies,
produced to the clicks topic keyed by customer id, and answered 202 only once the broker
confirmed it; an invalid beacon gets 400 with the reason and nothing is produced. Every POST
first passes the rate limits (``streams.ratelimit``): per client and for all clients, else 429.
"""
from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
from faust.web import Request, Response, View

from schemas.validation import InvalidEvent, MALFORMED_JSON, SCHEMA_VIOLATION, check_event_age, event_time, validate_click

from ..config import Settings
from .ratelimit import RateLimits, client_key

log = logging.getLogger(__name__)

SNIPPET = Path(__file__).parent / "static" / "imref.js"
FIELDS = ("customer_id", "im_ref", "occurred_at", "landing_url", "domain")
ACCEPTED_TYPES = ("application/json", "text/plain")
UTF_8 = ("utf-8", "utf8")  # the body is decoded as UTF-8 whatever the header says: refuse other charsets
PRODUCE_TIMEOUT_S = 10.0
RATE_LIMITED = {"client": "this client", "global": "all clients together"}


def install(app, settings: Settings) -> None:
    """Add the collector's routes to the app's web server (when ``collector.enabled``)."""
    c = settings.collector
    if not c.enabled:
        return
    clicks = app.topic(settings.topics.clicks, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    allowed = frozenset(c.allowed_origins)
    max_age_days = settings.impact.max_event_age_days
    snippet = SNIPPET.read_bytes()
    limits = RateLimits(c.client_rate_per_s, c.client_burst, c.global_rate_per_s, c.global_burst)

    def cors(request: Request) -> tuple[dict, bool]:
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser page (server to server): CORS does not apply
            return {}, True
        if origin.lower() in allowed:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}, True
        return {"Vary": "Origin"}, False

    @app.page("/collect", name="collect")
    class Collect(View):
        async def options(self, request: Request) -> Response:
            headers, ok = cors(request)
            if not ok or "Origin" not in request.headers:
                return self.json({"error": "origin_not_allowed"}, status=403, headers=headers)
            return self.bytes(b"", status=204, headers={
                **headers, "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "600"})

        async def post(self, request: Request) -> Response:
            headers, ok = cors(request)

            def refuse(status: int, error: str, detail: str, retry_after: float = 0) -> Response:
                extra = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else {}
                return self.json({"error": error, "detail": detail}, status=status, headers={**headers, **extra})

            # Counted before anything else is looked at: refused requests cost as well.
            limited = limits.check(client_key(request.remote, request.headers.getall("X-Forwarded-For", []),
                                              c.proxy_hops))
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
            body = await _read_limited(request, c.max_body_bytes)
            if body is None:
                return refuse(413, "body_too_large", f"at most {c.max_body_bytes} bytes")
            try:
                raw, key = click_event(body, max_age_days)
            except InvalidEvent as exc:
                return refuse(400, exc.reason, exc.detail)
            try:
                await asyncio.wait_for(_produce(clicks, key, raw), PRODUCE_TIMEOUT_S)
            except Exception as exc:
                log.warning("collector: click not confirmed by the broker: %s", type(exc).__name__)
                return refuse(503, "unavailable", "try again", retry_after=5)
            return self.json({"accepted": True}, status=202, headers=headers)

    @app.page("/imref.js", name="imref-js")
    class Snippet(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(snippet, content_type="text/javascript", headers={
                "Cache-Control": "public, max-age=300"})


def click_event(body: bytes, max_age_days: int, now: datetime | None = None) -> tuple[bytes, bytes]:
    """The click event (value, key) a beacon stands for; ``InvalidEvent`` when it is not one."""
    try:
        beacon = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(MALFORMED_JSON, str(exc)) from None
    if not isinstance(beacon, dict):
        raise InvalidEvent(SCHEMA_VIOLATION, "the body must be a JSON object")
    now = now or datetime.now(timezone.utc)
    # Only the contract's fields go on: a page cannot smuggle anything else into the topic.
    event = {k: beacon[k] for k in FIELDS if k in beacon}
    event.setdefault("occurred_at", now.isoformat(timespec="seconds"))
    click = validate_click(orjson.dumps(event))
    check_event_age(event_time(click), now, max_age_days)
    for name, value in click.items():
        # Control, invisible (zero-width, bidi override) and unassigned characters make ids that
        # look alike but differ, and have no place in an id, a URL or a host name.
        if not value.isprintable():
            raise InvalidEvent(SCHEMA_VIOLATION, f"{name} holds a control, invisible or unassigned character")
    if "landing_url" in click:
        click["landing_url"] = _page_address(click["landing_url"])
    return orjson.dumps(click), click["customer_id"].encode()


def _page_address(url: str) -> str:
    """scheme://host/path of an http(s) URL: the query, fragment and any user:password@ may hold
    personal data, and the snippet never sends them; this holds for every other sender too."""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed [IPv6 literal
        valid = False
    if not valid:
        raise InvalidEvent(SCHEMA_VIOLATION, "landing_url must be an http or https URL")
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


async def _read_limited(request: Request, limit: int) -> bytes | None:
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:  # chunked bodies carry no length: stop reading past the limit
            return None
    return bytes(body)


async def _produce(topic, key: bytes, value: bytes) -> None:
    # send() hands the record to the producer; the future it returns is the broker's ack.
    await (await topic.send(key=key, value=value))
