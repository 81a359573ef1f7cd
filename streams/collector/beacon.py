"""What a beacon stands for: the click event it becomes, whether it may be taken at all (consent),
and the cookies its answer sets. Pure functions; the server in ``streams.collector.server``.

A beacon is ``{"im_ref", "customer_id", "occurred_at"?, "landing_url"?, "domain"?, "consent"?}``.
"""
from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import quote, urlsplit, urlunsplit

import orjson

from schemas.validation import InvalidEvent, MALFORMED_JSON, SCHEMA_VIOLATION, check_event_age, event_time, validate_click

FIELDS = ("customer_id", "im_ref", "occurred_at", "landing_url", "domain")
NO_CONSENT = "consent_not_given"


class Refused(Exception):
    """A well-formed beacon the collector must not take (403)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def parse(body: bytes) -> dict:
    try:
        beacon = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(MALFORMED_JSON, str(exc)) from None
    if not isinstance(beacon, dict):
        raise InvalidEvent(SCHEMA_VIOLATION, "the body must be a JSON object")
    return beacon


def check_consent(beacon: dict, required: bool) -> None:
    """A beacon may say whether the visitor consented (the snippet says so when the page asks for
    consent); one that says no is refused, and so is one that says nothing when ``required``."""
    consent = beacon.get("consent")
    if consent is not None and not isinstance(consent, bool):
        raise InvalidEvent(SCHEMA_VIOLATION, "consent must be true or false")
    if consent is False:
        raise Refused(NO_CONSENT, "the beacon says the visitor did not consent")
    if consent is None and required:
        raise Refused(NO_CONSENT, 'this collector takes only beacons that say "consent": true')


def click_event(beacon: dict, max_age_days: int, now: datetime | None = None) -> tuple[dict, bytes, bytes]:
    """The click a beacon stands for: (click, value, key); ``InvalidEvent`` when it is not one."""
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
    return click, orjson.dumps(click), click["customer_id"].encode()


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


class Cookies:
    """The ``Set-Cookie`` values of an accepted beacon's answer: the click id, and the snippet's
    marker that this click was reported for this customer (so that the marker lives as long as the
    click id: a marker gone first would make the snippet report the click again, as a new one)."""

    def __init__(self, name: str, max_age_s: int, domains: list[str]):
        self.name, self.domains = name, domains
        self.attributes = f"Max-Age={max_age_s}; Path=/; Secure; SameSite=Lax"

    def for_click(self, click: dict, host: str | None) -> list[str]:
        attributes = self.attributes
        domain = self.domain_for(host)
        if domain:
            attributes += f"; Domain={domain}"
        ref = click["im_ref"]
        return [f"{self.name}={_uri_component(ref)}; {attributes}",
                f"{self.name}_sent={sent_marker(ref, click['customer_id'])}; {attributes}"]

    def domain_for(self, host: str | None) -> str | None:
        """The configured domain the request's host is under (the longest); None: host-only."""
        try:
            name = (urlsplit(f"//{host}").hostname or "").rstrip(".") if host else ""
        except ValueError:  # a Host header that is no host[:port]
            return None
        under = [d for d in self.domains if name == d or name.endswith("." + d)]
        return max(under, key=len, default=None)


def _uri_component(text: str) -> str:
    """As the snippet's ``encodeURIComponent`` writes it, so that either may read the other's cookie."""
    return quote(text, safe="!*'()")


def sent_marker(ref: str, customer_id: str) -> str:
    """The snippet's ``hash(ref + "\\n" + customerId)``: djb2 with xor over UTF-16 code units, in base 36."""
    units = (ref + "\n" + customer_id).encode("utf-16-le")
    h = 5381
    for i in range(0, len(units), 2):
        h = ((h * 33) ^ int.from_bytes(units[i:i + 2], "little")) & 0xFFFFFFFF
    digits = ""
    while True:
        h, d = divmod(h, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + digits
        if not h:
            return digits
