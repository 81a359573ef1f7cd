"""One order, one file, once: which records of an order may still go into a file.

impact identifies a conversion by its OrderId within the event type (ActionTrackerId) it is
reported under, and applies a later modification to the newest action with that OrderId; a second
copy of an order is a second action (commission paid twice) and a return then reverses only one
of them. Checkout producers are at-least-once, so the same lines arrive again at later offsets.

An order is *taken* when its first record goes into a batch. From then on, within
``modifications.keep_days``, no record of it goes into any other batch:

- a record whose lines were all taken already (into the open batch or a file) is a ``duplicate``;
- a record with new lines for an order that can no longer grow (its batch is cut, or it came whole
  as an order event, or its count of lines was reached) is ``order_already_reported``;
- a re-read of the very record a file holds (same line, same offset: a restart, a rebalance) is
  not a duplicate: it re-forms the same file.

A line is identified by the item's ``line_id`` when the producer gives one, else by its exact
content (``line_identities``). The record of a taken order (the ``orders`` table, one key per
OrderId in the partition of its customer) is written before its file is uploaded and names the
file and each line's offset; only lines that went into the file are kept there, so a line that was
unattributed may be produced again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
# Identities are compared within one order only, and checkout is not an adversary: a 128-bit
# non-cryptographic digest is enough, at a third of SHA-1's cost per record.
from xxhash import xxh3_128_hexdigest

DUPLICATE = "duplicate"
ORDER_ALREADY_REPORTED = "order_already_reported"

Record = dict  # {"files": [name, ...], "lines": {line: offset}, "more": bool, "at": epoch seconds}


def line_identities(items: list[dict], raw: bytes | None = None) -> list[str]:
    """The identity of each line of one record: its ``line_id``, else its exact content -- the
    record's bytes for an item event (``raw``), the line's JSON for an order event. A re-send
    (a retry, an outbox relay, a replayed topic) carries the same bytes; a producer that changes
    anything on a re-send (a send time) gives line ids."""
    if raw is not None and len(items) == 1 and "line_id" not in items[0]:
        return ["C" + xxh3_128_hexdigest(raw)]
    return ["L" + item["line_id"] if "line_id" in item else "C" + xxh3_128_hexdigest(orjson.dumps(item))
            for item in items]


def taken_lines(entries) -> dict[str, dict[str, int]]:
    """Order id -> line -> offset of the taken records among a cut batch's ``entries`` (anything
    with ``order_id``, ``lines`` (None: not taken) and ``offset``): what ``seal`` records."""
    taken: dict[str, dict[str, int]] = {}
    for e in entries:
        lines = e.lines
        if lines is None:
            continue
        order = taken.get(e.order_id)
        if order is None:
            taken[e.order_id] = {lines[0]: e.offset} if len(lines) == 1 else dict.fromkeys(lines, e.offset)
        elif len(lines) == 1:
            order[lines[0]] = e.offset
        else:
            order.update(dict.fromkeys(lines, e.offset))
    return taken


class Refusal(NamedTuple):
    reason: str
    detail: str
    files: tuple[str, ...] | None  # None: the order is in the open batch, its file not named yet


@dataclass(slots=True)
class OpenOrder:
    """An order taken into the open batch."""

    lines: dict[str, int]  # identity -> offset
    expected: int | None  # the order's count of lines (items_in_order), when the producer said it
    whole: bool  # came whole, as an order event
    first_seen: float
    last_seen: float

    def complete(self) -> bool:
        return self.whole or (self.expected is not None and len(self.lines) >= self.expected)


class PartitionOrders:
    """The orders of one order-item partition for one assignment of it: the records of taken
    orders (``store``: ``get``, the ``orders`` table) and the orders of the open batch."""

    def __init__(self, store: Any, wait_s: float):
        """``wait_s``: how long a batch holds an order whose count of lines is not reached."""
        self.store, self.wait_s = store, wait_s
        self.open: dict[str, OpenOrder] = {}

    def take(self, order_id: str, lines: list[str], offset: int, now: float, expected: int | None = None,
             whole: bool = False) -> Refusal | None:
        """None: the record's lines go into the open batch; else why they may not."""
        order = self.open.get(order_id)
        if order is None:
            recorded = self.store.get(order_id)
            if recorded is not None:
                return self._recorded(order_id, recorded, lines, offset, now, expected, whole)
            taken = {lines[0]: offset} if len(lines) == 1 else dict.fromkeys(lines, offset)
            self.open[order_id] = OpenOrder(taken, expected, whole, now, now)
            return None
        taken = order.lines
        if len(lines) == 1:  # an item event: most records, the same rules as below without a loop
            if lines[0] in taken:
                return Refusal(DUPLICATE, _detail(1, "already taken", None), None)
            if order.whole or (order.expected is not None and len(taken) >= order.expected):
                return Refusal(ORDER_ALREADY_REPORTED, _detail(1, "new for an order already complete", None), None)
            taken[lines[0]] = offset
            order.last_seen = now
            return None
        known = sum(line in taken for line in lines)
        if known == len(lines):
            return Refusal(DUPLICATE, _detail(len(lines), "already taken", None), None)
        if known or order.complete():
            return Refusal(ORDER_ALREADY_REPORTED, _detail(len(lines) - known, "new for an order already complete",
                                                           None), None)
        taken.update(dict.fromkeys(lines, offset))
        order.last_seen = now
        return None

    def _recorded(self, order_id: str, recorded: Record, lines: list[str], offset: int, now: float,
                  expected: int | None, whole: bool) -> Refusal | None:
        known = recorded["lines"]
        if all(known.get(line) == offset for line in lines):
            return None  # a re-read of what the order's file holds
        files = tuple(recorded["files"])
        if all(line in known for line in lines):
            return Refusal(DUPLICATE, _detail(len(lines), "already reported", files), files)
        if recorded["more"] and offset > max(known.values()) and not any(line in known for line in lines):
            # The next part of an order larger than a file, read again after a restart.
            self.open[order_id] = OpenOrder({**known, **dict.fromkeys(lines, offset)}, expected, whole, now, now)
            return None
        return Refusal(ORDER_ALREADY_REPORTED, _detail(len(lines), "new for an order already reported", files), files)

    def growing(self, order_id: str, now: float, quiet_s: float) -> bool:
        """May the order still get lines? Yes while its count of lines is not reached (for
        ``wait_s`` at most), or, without a count, while its last line came less than ``quiet_s``
        ago (0: never)."""
        order = self.open.get(order_id)
        if order is None or order.complete():
            return False
        if order.expected is not None:
            return now - order.first_seen < self.wait_s
        return now - order.last_seen < quiet_s

    def seal(self, taken: dict[str, dict[str, int]], file: str, split: str | None, at: float) -> dict[str, Record]:
        """The batch holding ``taken`` (order id -> line -> offset) was cut under ``file``: the
        records to write before the file is uploaded. Its orders can no longer grow, except
        ``split``, an order larger than a file: its next lines go on into the next batch."""
        out = {}
        for order_id, lines in taken.items():
            prior = self.store.get(order_id)
            if prior is None:
                record = {"files": [file], "lines": lines, "more": False, "at": at}
            elif file in prior["files"]:  # read again: the same file
                record = {**prior, "lines": {**prior["lines"], **lines}}
            elif prior["more"] and min(lines.values()) > max(prior["lines"].values()):  # the next part
                record = {"files": [*prior["files"], file], "lines": {**prior["lines"], **lines}, "more": False,
                          "at": at}
            else:  # re-formed under another name before its file was ever uploaded
                record = {"files": [file], "lines": lines, "more": False, "at": at}
            if order_id == split:
                record["more"] = True
            else:
                self.open.pop(order_id, None)
            if record != prior:
                out[order_id] = record
        return out

    def without(self, dropped: dict[str, set[str]]) -> tuple[dict[str, Record], list[str]]:
        """Lines that went into no file after all (unattributed once the grace ran out) leave
        their orders' records, so that the retailer can produce them again: the records to
        rewrite, and the orders left with no line to delete."""
        put, delete = {}, []
        for order_id, lines in dropped.items():
            prior = self.store.get(order_id)
            if prior is None:
                continue
            kept = {line: offset for line, offset in prior["lines"].items() if line not in lines}
            if kept:
                put[order_id] = {**prior, "lines": kept}
            else:
                delete.append(order_id)
        return put, delete


def _detail(n: int, what: str, files: tuple[str, ...] | None) -> str:
    where = f"in {', '.join(files)}" if files else "in the open batch"
    return f"{n} line(s) {what} ({where})"
