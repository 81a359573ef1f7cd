"""The start-up check of the Faust and aiokafka internals the worker relies on (streams/runtime/internals.py)."""
import re
from pathlib import Path

import pytest

from streams.runtime import internals
from streams.runtime.internals import INTERNALS, Internal

STREAMS = Path(__file__).parents[2] / "streams"


class WithState:
    def __init__(self):
        self._conns: dict = {}


def test_the_installed_faust_and_aiokafka_have_every_internal_the_worker_relies_on():
    assert internals.missing() == []


def test_instance_state_counts_when_a_constructor_assigns_it():
    assert internals.present(Internal(f"{__name__}:WithState", "_conns", "test"))
    assert not internals.present(Internal(f"{__name__}:WithState", "_connections", "test"))
    assert not internals.present(Internal("faust.no_such_module", "_x", "test"))


def test_a_renamed_internal_stops_the_worker_at_start_naming_it_and_what_needs_it(monkeypatch):
    from streams.runtime.app import create_app

    renamed = Internal("aiokafka.client:AIOKafkaClient", "_connections", "readiness")
    monkeypatch.setattr(internals, "INTERNALS", INTERNALS + [renamed])
    with pytest.raises(RuntimeError, match=r"aiokafka\.client\.AIOKafkaClient\._connections \(readiness\)"):
        create_app(settings=None)  # refused before the settings are even read


def test_every_private_name_the_worker_reads_of_another_library_is_listed():
    """A private name (``._x``, ``import _x``, ``getattr(o, "_x")``) that our own code never
    defines belongs to Faust or aiokafka, and must be in the check."""
    ours, used = set(), {}
    for path in STREAMS.rglob("*.py"):
        text = path.read_text()
        ours |= set(re.findall(r"\b(?:def|class) (_\w+)", text)) | set(re.findall(r"^\s*(_\w+)\s*[:=]", text, re.M))
        for targets in re.findall(r"^\s*((?:self\.\w+\s*(?:,|=(?!=))\s*)*self\.\w+)\s*(?::[^=\n]+)?=(?!=)", text, re.M):
            ours |= set(re.findall(r"self\.(_\w+)", targets))
        for names in re.findall(r"\.(_[a-z]\w*)|import (_\w+)|getattr\([^,]+, \"(_\w+)\"", text):
            used.setdefault("".join(names), set()).add(path.relative_to(STREAMS).as_posix())
    unlisted = {name: files for name, files in used.items() if name not in ours | {i.name for i in INTERNALS}}
    assert unlisted == {}
