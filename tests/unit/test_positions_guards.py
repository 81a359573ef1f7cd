"""Each guard of streams/delivery/positions.py is needed by a test of tests/unit/test_positions.py:
with the guard taken out of the source, at least one of those tests fails."""
import inspect
import sys
import types

import pytest

import streams.delivery.positions as positions
from tests.unit import test_positions

# guard -> (source text, what it becomes without the guard)
GUARDS = {
    "a fetch that began during a seek": ("return ticket.seeking or self._seeking > 0 or",
                                         "return self._seeking > 0 or"),
    "a fetch that returned during a seek": ("ticket.seeking or self._seeking > 0 or self.epoch",
                                            "ticket.seeking or self.epoch"),
    "a seek between the fetch's start and end": (" or self.epoch(tp) != ticket.epochs.get(tp, 0)", ""),
    "records handed out across a seek": ("            if p.epoch(tp) != self.epoch:\n                return\n", ""),
    "a stale fetch after a revoke": ("        if not owned:\n            self._stale.add(tp)\n", ""),
    "a seek begun before a revoke": ("return not self._revoked and ticket", "return ticket"),
    "a seek begun in an older assignment": ("return not self._revoked and ticket == self._assignments",
                                            "return not self._revoked"),
    "a dropped fetch moved the position": ("        self._fetch_next.pop(tp, None)\n        if not owned",
                                           "        if not owned"),
    "a seek to an unknown position": ("            self._new_epoch(tp)\n            self._fetch_next.pop(tp, None)\n",
                                      "            self._new_epoch(tp)\n"),
    "a seek that ended": ("            self._seeking -= 1\n", "            pass\n"),
}
TESTS = [f for name, f in vars(test_positions).items() if name.startswith("test_")]


@pytest.mark.parametrize("guard", GUARDS)
def test_removing_the_guard_fails_a_test(guard, monkeypatch):
    source = inspect.getsource(positions)
    text, without = GUARDS[guard]
    assert source.count(text) == 1, "the guard's text changed: update GUARDS"
    mutant = types.ModuleType("positions_without_guard")
    monkeypatch.setitem(sys.modules, mutant.__name__, mutant)  # dataclasses look their module up
    exec(compile(source.replace(text, without), "positions_without_guard", "exec"), mutant.__dict__)
    monkeypatch.setattr(test_positions, "Positions", mutant.Positions)
    failed = []
    for test in TESTS:
        try:
            test()
        except AssertionError:
            failed.append(test.__name__)
    assert failed, f"no test notices without the guard for {guard}"


def test_every_test_passes_with_every_guard():
    for test in TESTS:
        test()
