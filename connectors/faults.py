"""Fault points for the chaos suite, inert unless ``IMREF_FAULTS`` is set.

``IMREF_FAULTS="after_upload@7"`` kills the process with SIGKILL the 7th time the point
``after_upload`` is reached, the way a node dies: no cleanup, no flush, no commit.
Points: before_upload, mid_upload (fsspec: temporary file written, not yet renamed),
after_upload (confirmed, not yet acked), after_ack (acked, not yet committed),
pulled_not_recorded (pull from impact: rows published, the file not yet recorded as fetched).
"""
from __future__ import annotations

import os
import signal

_PLAN = dict(spec.split("@") for spec in os.environ.get("IMREF_FAULTS", "").split(",") if spec)
_seen: dict[str, int] = {}


def point(name: str) -> None:
    if name in _PLAN:
        _seen[name] = _seen.get(name, 0) + 1
        if _seen[name] == int(_PLAN[name]):
            os.kill(os.getpid(), signal.SIGKILL)
