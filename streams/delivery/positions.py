"""Where the fetch of each gated partition stands, and which fetched records may still be handed
out: the consumer-side half of the commit gate, free of any consumer library.

A consumer fetches in the background while seeks, revokes and assignments happen on the event
loop, so a fetched batch can come from a position that no longer holds. Four sequences are
guarded here, each by one piece of state:

- **a seek during a fetch** (``_seeking``, and the epochs taken when the fetch began): a fetch
  that overlapped a seek may come from before it or from after it (then the position has moved
  past records nobody will process): the whole batch is dropped and the partition positioned
  again (``overlapped``).
- **records handed out across a seek** (``_epochs``): a batch that was handed out is iterated
  across awaits; once its partition is sought, the rest of it is cut off (``Fetched``).
- **a stale fetch after a revoke** (``_stale``): a batch dropped while its partition had no
  ledger (revoked, not yet re-assigned) still moved the fetch position; the partition must be
  positioned again once it is assigned (``take_stale``).
- **a seek begun in an older assignment** (``_assignments``, ``_revoked``): the consumer's
  assignment goes on listing revoked partitions until the next one, and a seek that began before
  a revoke or a newer assignment must not hand ledgers to partitions that are not, or no longer,
  this worker's (``current``).

``_fetch_next`` is the offset the fetch of the current epoch has reached: a record beyond it is
a jump the fetch itself showed (offsets missing from the log), reported to ``on_gap``.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

TP = Any  # a (topic, partition) named tuple of the consumer library
# (tp, epoch, expected offset, offset fetched, whether the jump is between two records of one fetch)
GapReport = Callable[[TP, int, int, int, bool], None]


@dataclass(frozen=True)
class FetchTicket:
    """Taken as a fetch begins: the epochs and whether a seek was running then."""
    epochs: dict
    seeking: bool


class Positions:
    def __init__(self) -> None:
        self._epochs: dict[TP, int] = {}
        self._fetch_next: dict[TP, int] = {}
        self._seeking = 0  # seeks in progress (a consumer runs them in its own thread)
        self._stale: set[TP] = set()
        self._assignments, self._revoked = 0, False

    def epoch(self, tp: TP) -> int:
        return self._epochs.get(tp, 0)

    def _new_epoch(self, tp: TP) -> int:
        epoch = self._epochs[tp] = self.epoch(tp) + 1
        return epoch

    # -- seeks --------------------------------------------------------------------------------
    @contextmanager
    def seeking(self, tps: Iterable[TP]) -> Iterator[None]:
        """Around a seek of ``tps``: a new epoch as it begins, so that what was fetched before
        is cut off, and where the fetch stands is unknown until ``positioned``."""
        for tp in tps:
            self._new_epoch(tp)
            self._fetch_next.pop(tp, None)
        self._seeking += 1
        try:
            yield
        finally:
            self._seeking -= 1

    def positioned(self, offsets: dict[TP, int]) -> dict[TP, int]:
        """The seek to ``offsets`` is done: the fetch starts there, in a new epoch (returned per
        partition), so a fetch that began before it is told apart from one that follows it."""
        epochs = {}
        for tp, offset in offsets.items():
            self._fetch_next[tp] = offset
            epochs[tp] = self._new_epoch(tp)
        return epochs

    # -- fetches ------------------------------------------------------------------------------
    def before_fetch(self) -> FetchTicket:
        return FetchTicket(dict(self._epochs), self._seeking > 0)

    def overlapped(self, ticket: FetchTicket, tp: TP) -> bool:
        """Whether a seek ran at any time between ``ticket`` and now for this fetch of ``tp``."""
        return ticket.seeking or self._seeking > 0 or self.epoch(tp) != ticket.epochs.get(tp, 0)

    def dropped(self, tp: TP, owned: bool) -> None:
        """An overlapped batch of ``tp`` was dropped: handing it out moved the fetch position past
        it. ``owned``: the partition has a ledger, and the caller positions it again now;
        otherwise it is positioned again once assigned (``take_stale``)."""
        self._fetch_next.pop(tp, None)
        if not owned:
            self._stale.add(tp)

    def take_stale(self, tps: Iterable[TP]) -> set[TP]:
        """Those of ``tps`` whose fetch moved without a ledger; forgotten once taken."""
        stale = self._stale.intersection(tps)
        self._stale -= stale
        return stale

    def fetched(self, tp: TP, records: Iterable, on_gap: GapReport) -> "Fetched":
        return Fetched(self, tp, records, on_gap)

    # -- assignments --------------------------------------------------------------------------
    def assigned(self) -> None:
        self._assignments, self._revoked = self._assignments + 1, False

    def revoked(self) -> None:
        self._revoked = True

    def assignment(self) -> int:
        """A ticket for ``current``: taken as a seek begins."""
        return self._assignments

    def current(self, ticket: int) -> bool:
        """Whether the assignment of ``ticket`` is still this worker's: neither revoked nor replaced."""
        return not self._revoked and ticket == self._assignments


class Fetched:
    """The records of one fetch of a gated partition, in the epoch they were fetched in, cut off
    as soon as the partition is sought: a consumer goes on handing out a fetched batch record by
    record across awaits. Jumps in the offsets fetched are reported: only those are offsets
    missing from the log."""

    def __init__(self, positions: Positions, tp: TP, records: Iterable, on_gap: GapReport):
        self.positions, self.tp, self.records, self.on_gap = positions, tp, records, on_gap
        self.epoch = positions.epoch(tp)

    def __iter__(self):
        p, tp = self.positions, self.tp
        within_fetch = False
        for record in self.records:
            if p.epoch(tp) != self.epoch:
                return
            expected = p._fetch_next.get(tp)
            if expected is not None and record.offset > expected:
                self.on_gap(tp, self.epoch, expected, record.offset, within_fetch)
            p._fetch_next[tp] = record.offset + 1
            within_fetch = True
            yield record
