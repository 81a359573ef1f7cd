"""``imref-stream worker``: the Faust worker on uvloop, from validated settings."""
from __future__ import annotations

import gc

import mode.loop

from ..config import Settings
from ..logs import logging_config


# The worker's objects die by reference counting: in a run of 200 000 items the cyclic collector
# found no garbage, yet its passes cost a quarter of the worker's CPU, because every entry waiting
# in an open batch (alive until its file is delivered) was scanned again at each pass. So the
# allocation-driven collector is off, and a full collection runs on a timer instead: cycles left by
# rarer paths (an error's traceback, a reconnect) are still collected, within GC_INTERVAL_S.
GC_INTERVAL_S = 10.0


def tune_gc() -> None:
    """The worker's collector settings (also applied by the benchmarks that time its code)."""
    gc.freeze()  # what start-up built (modules, the app) lives as long as the process: never scanned
    gc.disable()


async def collect_garbage() -> None:
    gc.collect()


def run(settings: Settings, loglevel: str) -> int:
    mode.loop.use("uvloop")  # before Faust makes its event loops: the consumer thread's too
    import faust

    from .app import create_app

    from .supervision import EXIT_STATUS

    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True,
                          logging_config=logging_config(settings.logging.format, loglevel))
    app.timer(interval=GC_INTERVAL_S, name="garbage collection")(collect_garbage)
    tune_gc()
    try:
        worker.execute_from_commandline()  # exits on SIGTERM/SIGINT after the graceful stop
    except SystemExit as exc:
        if app.supervisor.reason is not None and not exc.code:
            raise SystemExit(EXIT_STATUS) from None
        raise
    return 0
