"""``imref-stream worker``: the Faust worker on uvloop, from validated settings."""
from __future__ import annotations

import mode.loop

from ..config import Settings
from ..logs import logging_config


def run(settings: Settings, loglevel: str) -> int:
    mode.loop.use("uvloop")  # before Faust makes its event loops: the consumer thread's too
    import faust

    from .app import create_app

    worker = faust.Worker(create_app(settings), loglevel=loglevel, quiet=True,
                          logging_config=logging_config(settings.logging.format, loglevel))
    worker.execute_from_commandline()  # returns on SIGTERM/SIGINT after the graceful stop
    return 0
