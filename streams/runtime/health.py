"""What the worker's health endpoints judge: liveness is "this process makes progress" (no internal
stall, no failure stopping it), readiness is "this worker can consume and commit" (a broker
connection, tables recovered). Neither follows the connections: an outage at impact or a
misconfigured connection holds batches and raises an alert, and restarting or unreadying workers
would help neither (deploy/base/prometheusrule.yaml, docs/operations.md)."""
from __future__ import annotations

import asyncio
import logging
from time import monotonic

from connectors import Connection
from connectors.base import configuration_problem

from ..metrics import Metrics
from ..tools.check import connection_fix

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 60.0


def check_connections_at_start(app, connections: list[Connection], metrics: Metrics) -> None:
    """Each connection's ``probe`` (log in, host key or certificate, the folder; a folder impact
    pulls from gets a probe file impact never processes), once, when the worker starts: a
    configuration error shows on the status page and in ``imref_connection_configuration_error``
    before the first batch is held by it. A connection that cannot be reached now is left to its
    uploads, which retry."""

    async def check() -> None:
        await asyncio.gather(*(_check(c) for c in connections))

    async def _check(conn: Connection) -> None:
        started = monotonic()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                detail = await asyncio.to_thread(conn.probe)
        except Exception as exc:
            error, problem = f"{type(exc).__name__}: {exc}", configuration_problem(exc)
            if problem is None:
                log.warning("connection %r: not reachable at start-up (%s); its uploads will retry", conn.name, error)
                return
            h = metrics.health.get(conn.name)
            if h is not None and h.failing_since is None and h.last_success is not None:
                return  # an upload succeeded meanwhile: that is the newer word
            metrics.connection_failed(conn.name, error, problem)
            log.error("connection %r: configuration error at start-up: %s (%s); fix: %s. Its batches are held and "
                      "retried until it is fixed.", conn.name, problem, error, connection_fix(conn.settings, exc))
        else:
            log.info("connection %r checked at start-up in %.1fs: %s", conn.name, monotonic() - started, detail)

    app.task(check)


def internal_stalls(app) -> list[str]:
    """Steps held longer than ``web.stalled_after_s`` beyond the grace an item waits for its click,
    that no failing connection explains."""
    now, after = monotonic(), app.imref.web.stalled_after_s + app.imref.attribution.grace_s
    return app.ledger.stalls(now, after) + [s for flow in getattr(app, "flows", ()) for s in flow.stalls(now, after)]


def liveness(app) -> dict:
    reasons = []
    if app.supervisor.reason is not None:
        reasons.append(f"stopping: {app.supervisor.reason}")
    elif app.crashed:
        reasons.append("crashed")
    reasons += [f"internal stall: {stall}" for stall in internal_stalls(app)]
    return {"ok": not reasons, "reasons": reasons}


def readiness(app) -> dict[str, dict]:
    checks: dict[str, dict] = {}
    connected = app.consumer.open_broker_connections()
    checks["broker"] = {"ok": bool(connected), "detail": f"{connected} broker connection(s) open"}
    recovery = app.tables.recovery
    recovered = recovery.completed.is_set() and not recovery.in_recovery and not app.rebalancing
    checks["recovery"] = {"ok": recovered, "detail": "tables recovered" if recovered else "recovering or rebalancing"}
    return checks
