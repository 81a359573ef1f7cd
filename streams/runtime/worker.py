"""``imref-stream worker``: the Faust worker on uvloop, from validated settings."""
from __future__ import annotations

import mode.loop

from ..config import Settings
from ..logs import logging_config


def run(settings: Settings, loglevel: str) -> int:
    mode.loop.use("uvloop")  # before Faust makes its event loops: the consumer thread's too
    import faust

    from .app import create_app

    from .supervision import EXIT_STATUS

    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True,
                          logging_config=logging_config(settings.logging.format, loglevel))
    try:
        worker.execute_from_commandline()  # exits on SIGTERM/SIGINT after the graceful stop
    except SystemExit as exc:
        if app.supervisor.reason is not None and not exc.code:
            raise SystemExit(EXIT_STATUS) from None
        raise
    return 0
