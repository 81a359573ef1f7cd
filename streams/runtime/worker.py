"""``imref-stream worker``: the Faust worker on uvloop, from validated settings."""
from __future__ import annotations

import gc

import mode.loop

from ..config import Settings
from ..logs import logging_config


# Python's default runs a young collection every 700 container allocations: a few records' worth
# (parsed events, rows, batch entries), about 2 µs per record with the worker's live heap
# (bench/orders_check.py measures it). Cycles are rare here; a larger young generation finds
# them as well.
GC_THRESHOLD = (20_000, 10, 10)


def tune_gc() -> None:
    """The worker's collector settings (also applied by the benchmarks that time its code)."""
    gc.set_threshold(*GC_THRESHOLD)
    gc.freeze()  # what start-up built (modules, the app) lives as long as the process: never scanned


def run(settings: Settings, loglevel: str) -> int:
    mode.loop.use("uvloop")  # before Faust makes its event loops: the consumer thread's too
    import faust

    from .app import create_app

    from .supervision import EXIT_STATUS

    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True,
                          logging_config=logging_config(settings.logging.format, loglevel))
    tune_gc()
    try:
        worker.execute_from_commandline()  # exits on SIGTERM/SIGINT after the graceful stop
    except SystemExit as exc:
        if app.supervisor.reason is not None and not exc.code:
            raise SystemExit(EXIT_STATUS) from None
        raise
    return 0
