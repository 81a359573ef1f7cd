"""Rate limits of the click collector: a token bucket per client and one for all clients.

A bucket holds at most ``burst`` tokens and gains ``rate`` a second; a request takes one. A client
over its own limit is refused without touching the global bucket, so one noisy address cannot use
up everyone's share. Written here rather than taken from a library (``limits``, ``aiolimiter``):
it is a few lines, runs inside the event loop without locks or a storage backend, gives the exact
wait for ``Retry-After``, and its memory is bounded by the global limit (see ``RateLimits._sweep``).
"""
from __future__ import annotations

import ipaddress
import time


class _Bucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, float(burst), now

    def wait(self, now: float) -> float:
        """Refill up to ``now``; 0 when a token is there, else the seconds until there is one."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        self.wait(now)
        return self.tokens >= self.burst


class RateLimits:
    def __init__(self, client_rate: float, client_burst: int, global_rate: float, global_burst: int,
                 clock=time.monotonic):
        self._clock = clock
        self._client = (client_rate, client_burst)
        self._all = _Bucket(global_rate, global_burst, clock())
        self._clients: dict[str, _Bucket] = {}
        self._idle_s = client_burst / client_rate  # an untouched bucket is full again after this
        self._swept_at = clock()

    def check(self, client: str) -> tuple[str, float] | None:
        """None when the request may go on (it took a token), else (``client`` or ``global``,
        seconds until a request would be let through)."""
        now = self._clock()
        bucket = self._clients.get(client)
        if bucket is not None and (wait := bucket.wait(now)):
            return "client", wait
        if wait := self._all.wait(now):
            return "global", wait
        if bucket is None:
            bucket = self._clients[client] = _Bucket(*self._client, now)
        bucket.tokens -= 1
        self._all.tokens -= 1
        self._sweep(now)
        return None

    def _sweep(self, now: float) -> None:
        # A bucket that is full again is the same as none, so forgetting it changes nothing. A
        # bucket is made, or kept from being full, only by a request the global bucket let
        # through: between two sweeps at most 2 * (global burst + global rate * idle_s) buckets
        # exist, however many addresses a flood comes from.
        if now - self._swept_at < self._idle_s:
            return
        self._clients = {k: b for k, b in self._clients.items() if not b.full(now)}
        self._swept_at = now

    def __len__(self) -> int:
        return len(self._clients)


def client_key(peer: str | None, forwarded_for: list[str], proxy_hops: int) -> str:
    """The client a request is counted against.

    Each of ``proxy_hops`` trusted reverse proxies appends the address it got the request from to
    ``X-Forwarded-For``, so the client is the ``proxy_hops``-th entry from the right; entries
    further left were written by the client and may be forged. With no trusted proxy, or fewer
    entries than hops (the request did not come through them), the header is ignored."""
    entries = [e.strip() for header in forwarded_for for e in header.split(",") if e.strip()]
    address = entries[-proxy_hops] if 0 < proxy_hops <= len(entries) else (peer or "")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # not an address (a proxy's "unknown", a unix socket): still one client
        return address
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        # One subscriber gets a whole /64: counted per address, they would have 2^64 buckets.
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
