"""Returns and cancellations: order changes become impact action-modification files.

impact applies a modification to an action it already has, found by OrderId + ActionTrackerId
(the newest action when an OrderId was reported more than once); the file carries the order's
new total and a reason code, and Amount 0 reverses the action. This is impact's order-level
Batch Modifications & Reversals format (the seeds define only the conversion file).

So a change can only be turned into a row for an order this worker reported: the table
``reported-orders`` (order id -> action tracker, currency, items and amounts, report time) is
filled when a conversion batch is confirmed by every connection, before its records are acked,
and rid of an order once impact has locked its action (``modifications.keep_days``, streams.expiry).
A change for an order not (yet) reported goes to the unmatched-changes topic, never into a file.

Batching, recorded cuts, delivery lanes and acks are the conversion pipeline's own: the
modification stream is a ``Pipeline`` with its own topic, cut table, file title and header.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from time import monotonic

from prometheus_client import Counter

from connectors import build_connection
from schemas import CSV_HEADER
from schemas.validation import InvalidEvent, validate_order_change

from . import expiry
from .batching import Batch, Entry
from .config import Settings
from .csvfile import Row, neutralise
from .pipeline import Pipeline, confirmed
from .tablewrites import TableWriter, in_partition

log = logging.getLogger(__name__)

MODIFICATION_HEADER = ("OrderId", "ActionTrackerId", "Amount", "CurrencyCode", "Reason")
ORDER_NOT_REPORTED = "order_not_reported"
NOTHING_TO_CHANGE = "nothing_to_change"
DUPLICATE_CHANGE = "duplicate_change"

_TRACKER, _CURRENCY, _AMOUNT, _SKU, _QUANTITY = (
    CSV_HEADER.index(c) for c in ("ActionTrackerId", "CurrencyCode", "Amount", "Sku", "Quantity"))
_CENT = Decimal("0.01")


# -- the rules, without I/O ---------------------------------------------------------------------
def reported_order(rows: list[Row], file: str, first_offset: int, reported_at: str) -> dict:
    """The ``reported-orders`` value for the rows of one order in one delivered file."""
    items: dict[str, list] = {}
    for row in rows:
        quantity, amount = items.get(row[_SKU], (0, "0"))
        items[row[_SKU]] = [quantity + int(row[_QUANTITY]), str(Decimal(amount) + Decimal(row[_AMOUNT]))]
    return {"action_tracker_id": int(rows[0][_TRACKER]), "currency": rows[0][_CURRENCY], "items": items,
            "file": file, "first_offset": first_offset, "reported_at": reported_at, "applied": {},
            "changes": {}}


def duplicate_of(order: dict, change: dict, offset: int) -> int | None:
    """Offset of an earlier record with this change's change_id. A producer that retries a send
    writes the change again at a new offset; applying it twice would take a return off twice."""
    seen = order.get("changes", {}).get(change["change_id"])
    return None if seen is None or seen == offset else seen


def remaining_items(items: dict, change: dict) -> dict:
    """What is left of the reported items after the change. Keys are the SKU cells as written
    to the conversion file; a returned SKU that was never reported takes nothing off."""
    if change["kind"] != "partial_return":
        return {sku: [0, "0"] for sku in items}
    left = {sku: [quantity, Decimal(amount)] for sku, (quantity, amount) in items.items()}
    for returned in change["items"]:
        held = left.get(neutralise(returned["sku"]))
        if held is None:
            continue
        held[0] = max(held[0] - returned["quantity"], 0)
        # Once every unit is back nothing of the item remains, whatever refund the event states.
        held[1] = Decimal(0) if held[0] == 0 else max(held[1] - Decimal(returned["amount"]), Decimal(0))
    return {sku: [quantity, str(amount)] for sku, (quantity, amount) in left.items()}


def order_amount(items: dict) -> str:
    """impact's Amount for the order: the sum of what remains, 2 decimals; exactly ``0`` reverses."""
    total = sum((Decimal(amount) for _, amount in items.values()), Decimal(0))
    return "0" if total == 0 else str(total.quantize(_CENT, ROUND_HALF_UP))


def modification_row(order_id: str, order: dict, amount: str, reason: str) -> Row:
    # A reversal carries no currency: impact lists none for reversals, and 0 needs none.
    currency = "" if amount == "0" else order["currency"]
    return (neutralise(order_id), str(order["action_tracker_id"]), amount, currency, neutralise(reason))


# -- the stream ---------------------------------------------------------------------------------
class ModificationPipeline(Pipeline):
    def __init__(self, settings: Settings, *, ledger, reported_table, cuts_table, dead_letter, unmatched,
                 connections, metrics=None):
        titled = settings.model_copy(update={"batch": settings.batch.model_copy(
            update={"file_title": settings.modifications.file_title})})
        super().__init__(titled, ledger=ledger, clicks_table=None, cuts_table=cuts_table, dead_letter=dead_letter,
                         unattributed=unmatched, connections=connections, metrics=metrics)
        self.header = MODIFICATION_HEADER
        self.reported = reported_table
        self.conversion_title = settings.batch.file_title
        self.changes_in = self.unmatched_count = None
        if metrics is not None:
            self.changes_in = Counter("imref_order_changes_in", "Order-change events consumed.",
                                      registry=metrics.registry)
            self.unmatched_count = Counter("imref_unmatched_changes", "Order changes sent to the unmatched topic.",
                                           ["reason"], registry=metrics.registry)

    async def record_reported(self, batch: Batch) -> None:
        """Hook of the conversion pipeline: the orders of a delivered file are now reported.
        Awaited before the file's records are acked, so an acked order is always in the table."""
        orders: dict[str, list[Row]] = defaultdict(list)
        for entry in batch.entries:
            if entry.row is not None:
                orders[entry.order_id].append(entry.row)
        if not orders:
            return
        name = batch.file_name(self.conversion_title)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        fresh = {}
        with in_partition(batch.partition):
            for order_id, rows in orders.items():
                known = self.reported.get(order_id)
                # A batch acked again after a restart must not wipe the changes applied since;
                # a later file with the same OrderId is impact's newest action and replaces it.
                if known is not None and known["first_offset"] >= batch.first:
                    continue
                fresh[order_id] = reported_order(rows, name, batch.first, now)
        for fut in self.reported.put(batch.partition, fresh):
            await confirmed(fut)

    async def on_changes(self, tp, records, epoch: int) -> None:
        """One fetch of an order-changes partition, in offset order."""
        sealed, clock = [], monotonic()
        for record in records:
            batcher = self._admit(tp, record.offset, epoch)
            if batcher is None:
                continue
            entry = Entry(record.offset, record.timestamp)
            if not batcher.was_delivered(record.offset):
                with in_partition(tp.partition):  # RocksDB stores write by partition
                    self._apply(entry, record)
            sealed += batcher.add(entry, clock)
        self._publish_counts()
        if sealed:
            await self.submit(sealed)

    def _apply(self, entry: Entry, record) -> None:
        if self.changes_in is not None:
            self.changes_in.inc()
        try:
            change = validate_order_change(record.value, record.key)
        except InvalidEvent as exc:
            entry.confirm = self._send_soon(self.dead_letter, record, exc.reason, exc.detail)
            self._count("dead_letter", exc.reason)
            return
        order_id = entry.order_id = change["order_id"]
        order = self.reported.get(order_id)
        if order is None:
            return self._unmatched(entry, record, ORDER_NOT_REPORTED, "no conversion with this order id was delivered")
        done = order["applied"].get(str(entry.offset))
        if done is None:
            if duplicate_of(order, change, entry.offset) is not None:
                return self._unmatched(entry, record, DUPLICATE_CHANGE, "this change_id was already applied to the order")
            items = remaining_items(order["items"], change)
            done = order_amount(items)
            if done == order_amount(order["items"]):
                return self._unmatched(entry, record, NOTHING_TO_CHANGE, "the reported amount would not change")
            # The new state is confirmed before the row's record is acked: the next change of
            # the order starts from it, and a re-read of this record finds its row in ``applied``
            # (``changed_at`` keeps the order in the table that long: streams.expiry).
            order = {**order, "items": items, "applied": {**order["applied"], str(entry.offset): done},
                     "changes": {**order.get("changes", {}), change["change_id"]: entry.offset},
                     "changed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            entry.confirm, = self.reported.put(record.partition, {order_id: order})
        entry.row = modification_row(order_id, order, done, change["reason"])

    def _unmatched(self, entry: Entry, record, reason: str, detail: str) -> None:
        entry.confirm = self._send_soon(self.unattributed, record, reason, detail)
        if self.unmatched_count is not None:
            self.unmatched_count.labels(reason).inc()
        log.info("order change at partition %d offset %d unmatched: %s", record.partition, record.offset, reason)


def install(app, settings: Settings, *, pipeline: Pipeline, ledger, dead_letter, metrics) -> ModificationPipeline | None:
    """Wire the order-changes agent, only when a connection carries action modifications."""
    from .app import RAW  # app imports this module; by now it is loaded

    connections = [build_connection(c) for c in settings.connections
                   if c.direction == "into_impact" and c.data_type == "action_modifications"]
    if not connections:
        return None
    t = settings.topics
    changes_topic = app.topic(t.order_changes, partitions=t.partitions, **RAW)
    unmatched = app.topic(t.unmatched_changes, partitions=t.partitions, **RAW)
    # Written by the delivery lanes of the conversion pipeline, read by the order-changes agent:
    # both see the same partition, since changes and order items share key and partition count.
    reported = TableWriter(app.Table("reported-orders", partitions=t.partitions, key_type=str))
    expiry.install(app, settings, reported)
    cuts = app.Table("modification-cuts", partitions=t.partitions, key_type=str, store="memory://modification-cuts")
    mods = ModificationPipeline(settings, ledger=ledger, reported_table=reported, cuts_table=cuts, dead_letter=dead_letter,
                                unmatched=unmatched, connections=connections, metrics=metrics)
    pipeline.delivered_hooks.append(mods.record_reported)

    app.topics.add(changes_topic)
    ledger.route(t.order_changes, mods.on_changes)

    app.timer(interval=0.5)(mods.tick)
    app.on_partitions_revoked.connect(
        lambda sender, revoked, **kw: mods.forget({tp.partition for tp in revoked if tp.topic == t.order_changes}))

    return mods
