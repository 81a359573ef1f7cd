"""Test-only hooks for the worker subprocesses the tests start; never part of the product.

Loaded by ``sitecustomize`` when ``IMREF_TEST_HOOKS`` is set:

- ``SIGHUP`` (mode's worker owns USR1 and USR2): the worker's consumer asks its group to rebalance, the code path a member
  joining or leaving takes. Faust rebalances eagerly, so a lone worker revokes all its
  partitions and gets them back: "the same worker loses and regains its partitions".
- ``IMREF_TEST_HOLD=<dir>``: an upload that reaches the fault point ``mid_upload`` (fsspec: the
  temporary file written, not yet renamed) marks itself as ``<dir>/held-<n>`` and waits, in its
  upload thread, until ``<dir>/release`` exists. The event loop, heartbeats included, goes on.
"""
from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
import time
from pathlib import Path

import streams.app
from streams import faults

_apps: list = []
_create_app = streams.app.create_app


def _capture(settings):
    app = _create_app(settings)
    _apps.append(app)
    return app


def _rejoin(signum, frame) -> None:
    thread = _apps[-1].consumer._thread
    coordinator = thread._consumer._coordinator
    thread.thread_loop.call_soon_threadsafe(coordinator.request_rejoin)
    print("test hook: rebalance requested", file=sys.stderr, flush=True)


streams.app.create_app = _capture
signal.signal(signal.SIGHUP, _rejoin)

_hold = os.environ.get("IMREF_TEST_HOLD")
if _hold:
    _gate = Path(_hold)
    _count = itertools.count(1)
    _lock = threading.Lock()
    _point = faults.point

    def _held_point(name: str) -> None:
        if name == "mid_upload":
            with _lock:
                (_gate / f"held-{next(_count)}").touch()
            while not (_gate / "release").exists():
                time.sleep(0.02)
        _point(name)

    faults.point = _held_point
