"""Who sees a failure: every task the worker starts has an owner, and a failure that retrying
cannot help stops the worker, loudly.

A step that can succeed on a later attempt (an upload) retries with ``RetryPolicy`` where it runs.
Anything else that fails -- a record the broker refuses (the Kafka producer has already retried
what it could), a table write, a seek, a bug -- is handed to ``stop``: the worker logs what failed
and why, stops with a non-zero exit, Kubernetes restarts it, and its partitions are read again
from their committed offsets (nothing past a failed step was committed). A failure that nobody
awaits would otherwise end its task in silence and hold its partition forever.
"""
from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Awaitable, Callable

log = logging.getLogger(__name__)

# ``stop(what, exc)``: ``what`` failed with ``exc`` and the worker must stop (streams.runtime.supervision).
Stop = Callable[[str, BaseException], None]

_running: set[asyncio.Future] = set()  # the event loop holds its tasks weakly: these are held here


def log_only(what: str, exc: BaseException) -> None:
    """For code run outside a worker (tests, tools): the failure is logged, nothing stops."""
    log.error("%s failed: %s: %s", what, type(exc).__name__, exc, exc_info=exc)


def owned(awaitable: Awaitable, what: str, stop: Stop) -> asyncio.Future:
    """``awaitable`` as a task (or the future it is) whose failure reaches ``stop``, whether or not
    anyone awaits it; a cancel is no failure (a revoked partition's work is cancelled)."""
    task = asyncio.ensure_future(awaitable)
    _running.add(task)
    task.add_done_callback(partial(_seen, what, stop))
    return task


def _seen(what: str, stop: Stop, task: asyncio.Future) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        stop(what, exc)
