"""Cutting one source partition's records into batches: deterministic, order-preserving.

A batch is a contiguous offset range of one order-item partition. It is cut when the next record
would take it over ``max_rows`` rows, or, by the caller's timer, when it is ``max_age_s`` old or
when it holds ``max_rows`` rows and its partition brought no record for a settle time. No cut
splits an order that may still grow (``PartitionBatcher.orders`` says which: an order whose count
of lines is not reached yet, or, for a time cut, one whose last line came within the settle
time): the cut goes before the order's first record, and a batch that starts with such an order
waits. Only an order larger than a whole file is split. Every cut is recorded durably by the
caller before anything is uploaded; after a restart the recorded cuts are replayed exactly, so a
batch re-formed from the same records gets the same name and the same rows, whatever the wall
clock did.
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
    """One source record: its rows (one per line of the order it carries), its lines waiting for
    their click (``pending``, ``expect`` rows to come), or no row at all (refused, dead-lettered
    or unattributed). ``confirm`` (the side-output send) is awaited before the batch holding the
    entry is delivered; ``later`` makes that send once the batch is sealed, when a refusal can
    name the file its order went into."""

    offset: int
    timestamp_ms: int
    order_id: str | None = None  # set for the records of an order taken into the batch
    lines: list[str] | None = None  # the taken record's line identities (streams.core.orders)
    rows: tuple[Row, ...] | None = None
    pending: bool = False
    expect: int = 0  # rows a pending entry will hold once its click is known
    confirm: Any = None
    later: Any = None
    batch: "Batch | None" = None

    @property
    def weight(self) -> int:
        """Rows it holds, or will hold when its click comes."""
        return self.expect if self.pending else len(self.rows) if self.rows else 0


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
    orders: Any = None  # the partition's orders (PartitionBatcher.orders) when it was read
    delivered: bool = False  # already delivered whole before a restart: ack, never upload
    cut: str = ""  # why it was cut: size, full, age, stop, or recorded (a replayed cut)
    cut_at: float | None = None  # the caller's clock at a size, full or age cut
    split: str | None = None  # an order larger than a file, cut in two at this batch's end

    def append(self, entry: Entry) -> None:
        entry.batch = self
        self.entries.append(entry)
        self.last = entry.offset
        self.pending += entry.pending
        self.potential_rows += entry.weight

    @property
    def resolved(self) -> bool:
        return self.pending == 0

    def rows(self) -> list[Row]:
        """Rows in source order, the items of one order kept consecutive."""
        orders: dict[str | None, list[Row]] = {}
        for e in self.entries:
            if e.rows:
                orders.setdefault(e.order_id, []).extend(e.rows)
        return [row for rows in orders.values() for row in rows]

    def file_name(self, title: str) -> str:
        day = datetime.fromtimestamp(self.entries[0].timestamp_ms / 1000, timezone.utc) if self.entries else None
        date = day.strftime("%Y%m%d") if day else "00000000"
        return f"{title}_{date}_p{self.partition:03d}_{self.first:012d}-{self.last:012d}.csv"


class PartitionBatcher:
    def __init__(self, partition: int, max_rows: int, recorded: list[tuple[int, int]] = (), source: Any = None,
                 orders: Any = None):
        """``orders``: what the partition's open orders are (``growing(order_id, now, quiet_s)``,
        ``streams.core.orders.PartitionOrders``); without it no order is ever growing."""
        self.partition = partition
        self.source = source
        self.orders = orders
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
        weight = entry.weight
        if self.open and weight and self.open.potential_rows + weight > self.max_rows:
            sealed.append(self._size_cut(entry, now))
        self._append(entry, now)
        return sealed

    def seal_if_older(self, now: float, max_age_s: float, settle_s: float = 0.0) -> Batch | None:
        """The age threshold: the caller's timer asks. The cut goes before the first order that may
        still grow (a line came within ``settle_s``, or its count of lines is not reached); a
        batch that starts with one waits for it. A replayed recorded cut is never moved."""
        if self.open and not self._in_recorded_range() and now - self.open.opened_at >= max_age_s:
            return self._time_cut(now, settle_s, "age")
        return None

    def seal_if_full(self, now: float, settle_s: float) -> Batch | None:
        """The full cut: the timer asks; a batch of ``max_rows`` rows (counting items still waiting
        for their click, as the size cut does) is cut once the partition was quiet for
        ``settle_s``, instead of waiting for the next item to push it out; an order whose count of
        lines is not reached yet stays out of it. A replayed recorded cut is never moved."""
        batch = self.open
        if (batch is None or batch.potential_rows < self.max_rows or self._in_recorded_range()
                or now - self.quiet_since < settle_s):
            return None
        quiet = now - self.quiet_since
        cut = self._time_cut(now, 0.0, "full")
        if cut is not None:
            self._log_cut(cut, now, f"; full, partition quiet for {quiet:.1f}s")
        return cut

    def seal_open(self, now: float = 0.0) -> Batch | None:
        """Graceful stop: close what is open unless it is a replayed cut not yet complete; an order
        whose count of lines is not reached stays out (not acked: read again after the restart)."""
        if self.open and not self._in_recorded_range():
            return self._time_cut(now, 0.0, "stop")
        return None

    def _growing_from(self, now: float, quiet_s: float) -> int:
        """Index of the first entry of the first order that may still grow; len(entries) if none."""
        entries = self.open.entries
        if self.orders is not None:
            growing, seen = self.orders.growing, set()
            for i, e in enumerate(entries):
                if e.order_id is not None and e.order_id not in seen:
                    seen.add(e.order_id)
                    if growing(e.order_id, now, quiet_s):
                        return i
        return len(entries)

    def _time_cut(self, now: float, quiet_s: float, cut: str) -> Batch | None:
        at = self._growing_from(now, quiet_s)
        if at == 0:
            return None
        if at < len(self.open.entries):
            return self._cut_at(at, now, cut)
        return self._seal(self.open.first, self.open.last, cut, now)
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
            self.open = Batch(self.partition, entry.offset if first is None else first, now, source=self.source,
                              orders=self.orders)
        self.open.append(entry)

    def _size_cut(self, entry: Entry, now: float) -> Batch:
        """Before the incoming record's order, or an earlier one whose count of lines is not
        reached yet; an order that fills the file from its start is split (larger than a file)."""
        entries = self.open.entries
        own = next((i for i, e in enumerate(entries) if e.order_id is not None and e.order_id == entry.order_id),
                   len(entries))
        start = min(own, self._growing_from(now, 0.0)) or own or len(entries)
        batch = self._cut_at(start, now, "size")
        if own == 0:
            batch.split = entry.order_id
        self._log_cut(batch, now)
        return batch

    def _cut_at(self, start: int, now: float, cut: str) -> Batch:
        """Seal the open batch's entries before ``start``; the rest open the next batch."""
        batch = self.open
        moved = batch.entries[start:]
        del batch.entries[start:]
        batch.last = batch.entries[-1].offset
        batch.pending -= sum(e.pending for e in moved)
        batch.potential_rows -= sum(e.weight for e in moved)
        self.open = None
        for e in moved:
            self._append(e, now)
        batch.cut, batch.cut_at = cut, now
        return batch

    def _log_cut(self, batch: Batch, now: float, how: str = "") -> None:
        log.info("partition %d offsets %d-%d cut at %d rows (monotonic %.4f)%s",
                 self.partition, batch.first, batch.last, batch.potential_rows, now, how)

    def _seal(self, first: int, last: int, cut: str, now: float | None = None) -> Batch:
        batch, self.open = self.open, None
        batch.first, batch.last, batch.cut, batch.cut_at = first, last, cut, now
        return batch


def resolve(entry: Entry, rows: tuple[Row, ...] | None, confirm: Any = None) -> Batch | None:
    """A pending entry got its answer; returns its batch when that batch became resolved."""
    entry.rows, entry.confirm = rows, confirm
    entry.pending = False
    batch = entry.batch
    batch.pending -= 1
    batch.potential_rows += (len(rows) if rows else 0) - entry.expect
    return batch if batch.resolved else None
