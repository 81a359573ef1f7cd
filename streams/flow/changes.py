"""Order changes (returns, cancellations): impact action-modification files, a fetch at a time.

The ``reported-orders`` table (order id -> action tracker, currency, items and amounts, report
time) is filled when a conversion batch is confirmed by every connection, before its records are
acked (``record_reported``, a delivered hook of the conversions' flow), so an acked order is
always in the table. A change for an order not (yet) reported goes to the unmatched-changes
topic, never into a file. The rules are ``streams.core.changes``.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timezone
from time import monotonic

from prometheus_client import Counter

from schemas.validation import InvalidEvent, validate_order_change

from ..core.batching import Batch, Entry

UNKNOWN_REASON_CODE = "unknown_reason_code"
from ..core.changes import apply_change, reported_files, reported_order
from ..core.csvfile import Row
from .flow import Flow, Outputs, confirmed

log = logging.getLogger(__name__)


class Changes:
    def __init__(self, *, flow: Flow, reported, dead_letter, unmatched, outputs: Outputs, conversion_title: str,
                 reasons: frozenset[str]):
        """``reported``: the reported-orders table (``get``, ``put``, ``reading``); ``dead_letter``,
        ``unmatched``: topics (``send_soon``); ``conversion_title``: the conversion files' title,
        for the file name kept with a reported order; ``reasons``: the reason codes impact takes
        (``ModificationSettings.reasons``)."""
        self.flow, self.reported, self.outputs, self.reasons = flow, reported, outputs, reasons
        self.dead_letter, self.unmatched = dead_letter, unmatched
        self.conversion_title = conversion_title
        self.changes_in = self.unmatched_count = None
        metrics = outputs.metrics
        if metrics is not None:
            self.changes_in = Counter("imref_order_changes_in", "Order-change events consumed.",
                                      registry=metrics.registry)
            self.unmatched_count = Counter("imref_unmatched_changes", "Order changes sent to the unmatched topic.",
                                           ["reason"], registry=metrics.registry)

    async def record_reported(self, batch: Batch) -> None:
        """The orders of a delivered conversion file are now reported. Awaited before the file's
        records are acked, so an acked order is always in the table."""
        orders: dict[str, list[Row]] = defaultdict(list)
        for entry in batch.entries:
            if entry.rows:
                orders[entry.order_id].extend(entry.rows)
        if not orders:
            return
        name = batch.file_name(self.conversion_title)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        fresh = {}
        with self.reported.reading(batch.partition):
            for order_id, rows in orders.items():
                known = self.reported.get(order_id)
                # A batch acked again after a restart must not wipe the changes applied since. An
                # order is in one file (streams.core.orders), but for an order larger than a file,
                # whose next part adds to it.
                if known is not None and (name in reported_files(known) or known["first_offset"] >= batch.first):
                    continue
                fresh[order_id] = reported_order(rows, name, batch.first, now, known)
        for fut in self.reported.put(batch.partition, fresh):
            await confirmed(fut)

    async def on_changes(self, tp, records, epoch: int) -> None:
        """One fetch of an order-changes partition, in offset order."""
        sealed, clock = [], monotonic()
        with self.reported.reading(tp.partition):
            for record in records:
                batcher = self.flow.admit(tp, record.offset, epoch)
                if batcher is None:
                    continue
                entry = Entry(record.offset, record.timestamp)
                if not batcher.was_delivered(record.offset):
                    self._apply(entry, record)
                sealed += batcher.add(entry, clock)
        self.outputs.publish()
        if sealed:
            await self.flow.submit(sealed)

    def _apply(self, entry: Entry, record) -> None:
        if self.changes_in is not None:
            self.changes_in.inc()
        try:
            change = validate_order_change(record.value, record.key)
            if change["reason"] not in self.reasons:
                raise InvalidEvent(UNKNOWN_REASON_CODE, "reason is not one of impact's reason codes nor in "
                                                        "modifications.custom_reasons")
        except InvalidEvent as exc:
            entry.confirm = self.outputs.send(self.dead_letter, record, exc.reason, exc.detail)
            self.outputs.count("dead_letter", exc.reason)
            return
        order_id = entry.order_id = change["order_id"]
        outcome = apply_change(self.reported.get(order_id), change, entry.offset)
        if outcome.unmatched is not None:
            entry.confirm = self.outputs.send(self.unmatched, record, outcome.unmatched, outcome.detail)
            if self.unmatched_count is not None:
                self.unmatched_count.labels(outcome.unmatched).inc()
            log.info("order change at partition %d offset %d unmatched: %s", record.partition, record.offset,
                     outcome.unmatched)
            return
        if outcome.order is not None:
            # Confirmed before the row's record is acked: the next change of the order starts from
            # it, and a re-read of this record finds its row in ``applied``.
            entry.confirm, = self.reported.put(record.partition, {order_id: outcome.order})
        entry.rows = (outcome.row,) if outcome.row is not None else None

    async def tick(self) -> None:
        self.outputs.publish()
        await self.flow.tick()

    def forget(self, partitions: set[int]) -> None:
        self.flow.forget(partitions)
