"""The worker's own HTTP endpoints on Faust's web server: /metrics, /healthz, /readyz, the
status page at / and the /status.json it refreshes from."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..metrics import Metrics

PAGE = Path(__file__).parent / "static" / "status.html"


def readiness(app, metrics: Metrics) -> dict[str, dict]:
    checks: dict[str, dict] = {}
    connected = app.consumer.open_broker_connections()
    checks["broker"] = {"ok": bool(connected), "detail": f"{connected} broker connection(s) open"}
    recovery = app.tables.recovery
    recovered = recovery.completed.is_set() and not recovery.in_recovery and not app.rebalancing
    checks["recovery"] = {"ok": recovered, "detail": "tables recovered" if recovered else "recovering or rebalancing"}
    # A connection failing this long holds its batches: the operator should see it before the lag does.
    failing = metrics.failing_connections(app.imref.web.unready_after_failing_s)
    checks["connections"] = {"ok": not failing, "detail": "; ".join(f"{n}: {e}" for n, e in failing.items())
                             or "no connection failing"}
    return checks


def update_lag(app, metrics: Metrics) -> None:
    """Per partition of the gated topics this worker owns: the log end minus what is committed."""
    consumer = app.consumer
    for tp in app.ledger.partitions():
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # no fetch for this partition yet
            continue
        if highwater is not None:
            committed = max(app.ledger.get(tp).committed, 0)
            metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - committed))


def status(app, metrics: Metrics) -> dict:
    checks = readiness(app, metrics)
    held = sum(flow.held() for flow in getattr(app, "flows", ()))
    metrics.batches_held.set(held)
    return {
        "worker": app.imref.kafka.instance_id or app.conf.id,
        "ready": all(c["ok"] for c in checks.values()),
        "checks": checks,
        "files": [asdict(f) for f in reversed(metrics.recent.values())],
        "dead_letter": metrics.counts["dead_letter"],
        "unattributed": metrics.counts["unattributed"],
        "refused": metrics.counts["refused"],
        "connections": [{"name": name, "ok": h.failing_since is None, "last_error": h.last_error,
                         "last_success": h.last_success} for name, h in sorted(metrics.health.items())],
        "batches_held": held,
        "partitions": app.ledger.snapshot(),
    }


def install(app, metrics: Metrics) -> None:
    page = PAGE.read_bytes()

    @app.page("/metrics", name="metrics")
    class Prometheus(View):
        async def get(self, request: Request) -> Response:
            update_lag(app, metrics)
            status(app, metrics)
            return self.bytes(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz", name="healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            # Answering at all shows the event loop is responsive; a crashed app must be restarted.
            crashed = app.crashed
            return self.json({"ok": not crashed}, status=503 if crashed else 200)

    @app.page("/readyz", name="readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            checks = readiness(app, metrics)
            ok = all(c["ok"] for c in checks.values())
            return self.json({"ok": ok, "checks": checks}, status=200 if ok else 503)

    @app.page("/status.json", name="status")
    class Status(View):
        async def get(self, request: Request) -> Response:
            return self.json(status(app, metrics), headers={"Cache-Control": "no-store"})

    @app.page("/", name="index")
    class Index(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(page, content_type="text/html", headers={
                "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline' 'self'; "
                                           "style-src 'unsafe-inline'"})
