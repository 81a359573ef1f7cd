"""Cutting one source partition's records into batches: deterministic, order-preserving.

A batch is a contiguous offset range of one order-item partition. It is cut when the next row
would exceed ``max_rows`` (keeping the rows of one order together where the order fits) or,
by the caller's timer, when it is ``max_age_s`` old or when it holds ``max_rows`` rows and its
partition brought no record for a settle time (its last order can no longer grow: the items of
an order are produced together). Every cut is recorded durably by the caller before anything
is uploaded; after a restart the recorded cuts are replayed exactly, so a batch re-formed from
the same records gets the same name and the same rows, whatever the wall clock did.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .csvfile import Row

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Entry:
    """One source record: a row, a pending item waiting for its click, or no row at all
    (dead-lettered or unattributed). ``confirm`` (the side-output send) is awaited before the
    batch holding the entry is delivered."""

    offset: int
    timestamp_ms: int
    order_id: str | None = None
    row: Row | None = None
    pending: bool = False
    confirm: Any = None
    batch: "Batch | None" = None

    @property
    def counts_as_row(self) -> bool:
        return self.row is not None or self.pending


@dataclass(eq=False)
class Batch:
    partition: int
    first: int
    opened_at: float
    entries: list[Entry] = field(default_factory=list)
    last: int = -1
    pending: int = 0
    potential_rows: int = 0
    resolved_event: Any = None  # set by the flow when the batch is submitted
    source: Any = None  # the commit gate's ledger of the partition's assignment it was read in
    delivered: bool = False  # already delivered whole before a restart: ack, never upload
    cut: str = ""  # why it was cut: size, full, age, stop, or recorded (a replayed cut)
    cut_at: float | None = None  # the caller's clock at a size, full or age cut

    def append(self, entry: Entry) -> None:
        entry.batch = self
        self.entries.append(entry)
        self.last = entry.offset
        self.pending += entry.pending
        self.potential_rows += entry.counts_as_row

    @property
    def resolved(self) -> bool:
        return self.pending == 0

    def rows(self) -> list[Row]:
        """Rows in source order, the items of one order kept consecutive."""
        orders: dict[str | None, list[Row]] = {}
        for e in self.entries:
            if e.row is not None:
                orders.setdefault(e.order_id, []).append(e.row)
        return [row for rows in orders.values() for row in rows]

    def file_name(self, title: str) -> str:
        day = datetime.fromtimestamp(self.entries[0].timestamp_ms / 1000, timezone.utc) if self.entries else None
        date = day.strftime("%Y%m%d") if day else "00000000"
        return f"{title}_{date}_p{self.partition:03d}_{self.first:012d}-{self.last:012d}.csv"


class PartitionBatcher:
    def __init__(self, partition: int, max_rows: int, recorded: list[tuple[int, int]] = (), source: Any = None):
        self.partition = partition
        self.source = source
        self.max_rows = max_rows
        self.recorded = sorted(tuple(r) for r in recorded)
        self.open: Batch | None = None
        self.next_offset = -1
        self.delivered_through = -1
        # Monotonic time since which nothing could have added to the open batch's orders: the
        # last record taken, or a moment the caller knows the partition was not being fetched.
        self.quiet_since = 0.0

    def was_delivered(self, offset: int) -> bool:
        """The partition resumed inside a recorded batch, past its first record. A batch is only
        ever acked whole, so the committed offset can only be past its first record if the
        whole batch was delivered; uploading the rest again would overwrite the file with
        fewer rows. Those records are acked without a file."""
        if self.next_offset == -1 and self.recorded and self.recorded[0][0] < offset <= self.recorded[0][1]:
            self.delivered_through = self.recorded[0][1]
        return offset <= self.delivered_through

    def add(self, entry: Entry, now: float) -> list[Batch]:
        """Take the next record of the partition; return the batches this closes."""
        self.next_offset = entry.offset + 1
        self.quiet_since = now
        sealed = self._replay_recorded_before(entry.offset)
        if self.recorded and self.recorded[0][0] <= entry.offset:
            first, last = self.recorded[0]
            if self.open and self.open.first < first:  # its own cut was not recorded: keep it apart
                sealed.append(self._seal(self.open.first, self.open.last, "recorded"))
            self._append(entry, now, first)
            self.open.delivered = entry.offset <= self.delivered_through
            if entry.offset >= last:
                self.recorded.pop(0)
                sealed.append(self._seal(first, last, "recorded"))
            return sealed
        if self.open and entry.counts_as_row and self.open.potential_rows >= self.max_rows:
            sealed.append(self._cut_before_order_of(entry, now))
        self._append(entry, now)
        return sealed

    def seal_if_older(self, now: float, max_age_s: float) -> Batch | None:
        """The age threshold: the caller's timer asks; a replayed recorded cut is never moved."""
        if self.open and not self._in_recorded_range() and now - self.open.opened_at >= max_age_s:
            return self._seal(self.open.first, self.open.last, "age", now)
        return None

    def seal_if_full(self, now: float, settle_s: float) -> Batch | None:
        """The full cut: the timer asks; a batch of ``max_rows`` rows (counting items still waiting
        for their click, as the size cut does) is cut as it is once the partition was quiet for
        ``settle_s``, instead of waiting for the next item to push it out. A replayed recorded
        cut is never moved."""
        batch = self.open
        if (batch is None or batch.potential_rows < self.max_rows or self._in_recorded_range()
                or now - self.quiet_since < settle_s):
            return None
        self._seal(batch.first, batch.last, "full", now)
        self._log_cut(batch, now, f"; full, partition quiet for {now - self.quiet_since:.1f}s")
        return batch

    def seal_open(self) -> Batch | None:
        """Graceful stop: close what is open unless it is a replayed cut not yet complete."""
        if self.open and not self._in_recorded_range():
            return self._seal(self.open.first, self.open.last, "stop")
        return None

    def _in_recorded_range(self) -> bool:
        return bool(self.recorded) and self.open is not None and self.recorded[0][0] <= self.open.last

    def _replay_recorded_before(self, offset: int) -> list[Batch]:
        sealed = []
        while self.recorded and self.recorded[0][1] < offset:
            first, last = self.recorded.pop(0)
            if self.open is not None:  # records missing from the log (e.g. retention); keep the name
                sealed.append(self._seal(first, last, "recorded"))
        return sealed

    def _append(self, entry: Entry, now: float, first: int | None = None) -> None:
        if self.open is None:
            self.open = Batch(self.partition, entry.offset if first is None else first, now, source=self.source)
        self.open.append(entry)

    def _cut_before_order_of(self, entry: Entry, now: float) -> Batch:
        batch = self.open
        start = next((i for i, e in enumerate(batch.entries) if e.order_id == entry.order_id), len(batch.entries))
        if start == 0:  # one order larger than a file: it has to be split
            start = len(batch.entries)
        moved = batch.entries[start:]
        del batch.entries[start:]
        batch.last = batch.entries[-1].offset
        batch.pending -= sum(e.pending for e in moved)
        batch.potential_rows -= sum(e.counts_as_row for e in moved)
        self.open = None
        for e in moved:
            self._append(e, now)
        batch.cut, batch.cut_at = "size", now
        self._log_cut(batch, now)
        return batch

    def _log_cut(self, batch: Batch, now: float, how: str = "") -> None:
        log.info("partition %d offsets %d-%d cut at %d rows (monotonic %.4f)%s",
                 self.partition, batch.first, batch.last, batch.potential_rows, now, how)

    def _seal(self, first: int, last: int, cut: str, now: float | None = None) -> Batch:
        batch, self.open = self.open, None
        batch.first, batch.last, batch.cut, batch.cut_at = first, last, cut, now
        return batch


def resolve(entry: Entry, row: Row | None, confirm: Any = None) -> Batch | None:
    """A pending entry got its answer; returns its batch when that batch became resolved."""
    entry.row, entry.confirm = row, confirm
    entry.pending = False
    batch = entry.batch
    batch.pending -= 1
    if row is None:
        batch.potential_rows -= 1
    return batch if batch.resolved else None
