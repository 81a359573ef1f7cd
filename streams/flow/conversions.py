"""Conversions: order items joined to the customer's click, a fetch at a time.

The commit gate hands over one fetch of a partition (``on_clicks``, ``on_items``); the work per
record is synchronous (no ``await`` per record, counts published per fetch). A record of the
order-items topic (an item event, or an order event with all its lines) is taken into the open
batch, or refused because its order is in a batch already (``streams.core.orders``: to the audit
topic, with the file). A taken record with no click yet waits up to ``attribution.grace_s`` for
one, then goes to the unattributed topic -- and only once the clicks partition of the same number
has been read up to where it ended when the item was read (``clicks_end``: the end offset of a
fetch made after the item was read, so at least that): a worker catching up a backlog can read
items further ahead of their clicks than the grace, and a wall clock alone then sends items whose
clicks are in the topic to the unattributed topic (a partner not paid).
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from time import monotonic
from typing import Callable

from schemas.validation import InvalidEvent, event_time, validate_click

from ..config import Settings
from ..core.attribution import attribute, remember
from ..core.batching import Batch, Entry, resolve
from ..core.csvfile import conversion_row
from ..core.join import parse_record, unattributed_reason
from ..core.orders import PartitionOrders, Refusal, line_identities, taken_lines
from ..delivery.failures import owned
from ..delivery.ledger import Ledger
from .flow import Flow, Outputs, confirmed

@dataclass(slots=True)
class Deadline:
    """An item waiting for its click: when its grace ends (monotonic), whose click it waits for,
    when it was read (epoch ms), and the clicks partition's end offset to reach (once a fetch made
    after the read has told it)."""

    at: float
    customer: str
    waiting: tuple
    read_ms: float
    clicks_end: int | None = None


class Conversions:
    def __init__(self, settings: Settings, *, flow: Flow, ledger: Ledger, clicks, orders, dead_letter, unattributed,
                 audit, outputs: Outputs, clicks_end: Callable[[int], tuple[int, int] | None] | None = None):
        """``clicks``: the click-history table, ``orders``: the taken orders' records (``get``,
        ``put``, ``delete``); ``dead_letter``, ``unattributed``, ``audit``: topics (``send_soon``);
        ``clicks_end``: a clicks partition's end offset as last fetched and when that fetch was
        (epoch ms), None before its first fetch; without it the grace is the wall clock alone."""
        self.flow, self.ledger, self.clicks, self.orders = flow, ledger, clicks, orders
        self.dead_letter, self.unattributed, self.audit, self.outputs = dead_letter, unattributed, audit, outputs
        a, impact = settings.attribution, settings.impact
        self.window_s, self.grace_s, self.keep = a.window_days * 86400, a.grace_s, a.clicks_per_customer
        self._row_fields = (impact.campaign_id, impact.action_tracker_id)
        self._extra_fields, self._max_age_days = impact.extra_fields, settings.max_event_age_days
        self._max_lines, self._title = settings.batch.max_rows, settings.batch.file_title
        wait_s = settings.batch.order_wait_s
        flow.new_orders = lambda partition: PartitionOrders(orders, wait_s)
        flow.sealed_hooks.append(self._sealed)
        flow.resolved_hooks.append(self._resolved)
        self._waiting: dict[tuple[int, str], list] = {}  # (partition, customer) -> items waiting for a click
        self._clicks_done: dict[int, asyncio.Future] = {}  # partition -> its last fetch's confirmation
        self._clicks_topic, self._clicks_end = settings.topics.clicks, clicks_end
        self._deadlines: dict[int, deque[Deadline]] = {}  # per partition, in read order
        self._items_in = self._joined = 0  # the per-item counts, kept apart: the cheapest increment

    # -- clicks ---------------------------------------------------------------------------
    async def on_clicks(self, tp, records, epoch: int) -> None:
        """One fetch of a clicks partition: the newest history per customer into the table, the
        items waiting for those customers attributed. Committable once its changelog writes are
        confirmed: Faust's flush before a commit gives up on a busy buffer after 0.1 s
        (``ProducerBuffer.flush_atmost``), and a click committed but not in the changelog is
        gone from the table after a restart (the chaos kill sweep lost whole partitions' clicks
        so once the orders table's writes filled the buffer). The confirmation is waited for
        beside the fetch loop, not in it: a fetch handler that waits for the producer holds every
        partition's fetches, Faust's table recovery included (on noida-db, where a group re-forms
        at once, the regain scenario's recovery then waited for ever half the time)."""
        histories, dead, part, first, last, taken = {}, [], None, -1, -1, 0
        keep, window_s, partition = self.keep, self.window_s, tp.partition
        for record in records:
            source = self.ledger.admit(tp, record.offset, epoch)
            if source is None:
                continue
            part, last = source, record.offset
            first = last if first < 0 else first
            try:
                click = validate_click(record.value, record.key)
            except InvalidEvent as exc:
                dead.append(self.outputs.send(self.dead_letter, record, exc.reason, exc.detail))
                self.outputs.count("dead_letter", exc.reason)
                continue
            taken += 1
            key = click["customer_id"]
            history = histories[key] = remember(histories.get(key) or self.clicks.get(key),
                                                event_time(click).timestamp(), click["im_ref"], keep, window_s)
            for waiting in self._waiting.pop((partition, key), ()):
                if waiting[0].pending and not self._try_attribute(waiting, history):
                    self._waiting.setdefault((partition, key), []).append(waiting)
        if part is None:
            return
        sends = self.clicks.put(partition, histories) + dead
        self.outputs.count("clicks_in", n=taken)
        self._publish_counts()
        # Chained per partition: the ledger hears of the fetches in their order.
        before = self._clicks_done.get(partition)
        self._clicks_done[partition] = owned(self._clicks_delivered(before, sends, part, first, last),
                                             f"recording clicks {tp.topic} partition {partition}", self.flow.stop)

    async def _clicks_delivered(self, before, sends, part, first: int, last: int) -> None:
        if before is not None:
            await asyncio.shield(before)
        for fut in sends:  # confirmed before the offsets are: never lost
            await confirmed(fut)
        self.ledger.delivered(part, first, last)

    # -- order items ----------------------------------------------------------------------
    async def on_items(self, tp, records, epoch: int) -> None:
        """One fetch of an order-items partition, in offset order."""
        sealed, now, clock = [], datetime.now(timezone.utc), monotonic()
        with self.orders.reading(tp.partition):  # RocksDB looks up in this partition's database only
            for record in records:
                sealed += self._item(tp, record, epoch, now, clock)
        self._publish_counts()
        if sealed:
            await self.flow.submit(sealed)

    def _item(self, tp, record, epoch: int, now: datetime, clock: float) -> list[Batch]:
        batcher = self.flow.admit(tp, record.offset, epoch)
        if batcher is None:
            return []
        entry = Entry(record.offset, record.timestamp)
        if batcher.was_delivered(record.offset):
            return batcher.add(entry, clock)
        self._items_in += 1
        try:
            items, whole, occurred = parse_record(record.value, record.key, self._max_age_days, now, self._max_lines)
        except InvalidEvent as exc:
            entry.confirm = self.outputs.send(self.dead_letter, record, exc.reason, exc.detail)
            self.outputs.count("dead_letter", exc.reason)
            return batcher.add(entry, clock)
        first = items[0]
        order_id, lines = first["order_id"], line_identities(items, record.value)
        refusal = batcher.orders.take(order_id, lines, record.offset, clock, first.get("items_in_order"), whole)
        if refusal is not None:
            self._refuse(entry, record, refusal, order_id)
            return batcher.add(entry, clock)
        entry.order_id, entry.lines = order_id, lines
        waiting = (entry, items, occurred, record)
        click_id = first.get("im_ref")
        if click_id:
            entry.rows = self._rows(items, occurred, click_id)
        elif not self._try_attribute(waiting, self.clicks.get(first["customer_id"])):
            entry.pending, entry.expect = True, len(items)
            self._waiting.setdefault((tp.partition, first["customer_id"]), []).append(waiting)
            self._deadlines.setdefault(tp.partition, deque()).append(
                Deadline(clock + self.grace_s, first["customer_id"], waiting, now.timestamp() * 1000))
        return batcher.add(entry, clock)

    def _refuse(self, entry: Entry, record, refusal: Refusal, order_id: str) -> None:
        """To the audit topic, naming the file the order is in: at once when it is named, else
        once the open batch holding the order is sealed (``Flow.submit`` calls ``later``)."""
        self.outputs.count("refused", refusal.reason)
        if refusal.files is not None:
            entry.confirm = self.outputs.send(self.audit, record, refusal.reason, refusal.detail, refusal.files)
            return

        def later():
            with self.orders.reading(record.partition):
                held = self.orders.get(order_id)
            files = tuple(held["files"]) if held else ()
            detail = refusal.detail.replace("in the open batch", f"in {', '.join(files)}" if files else
                                            "in a batch whose lines were all unattributed")
            return self.outputs.send(self.audit, record, refusal.reason, detail, files)

        entry.later = later

    def _rows(self, items: list[dict], occurred: datetime, click_id: str) -> tuple:
        self._joined += len(items)
        fields, extra = self._row_fields, self._extra_fields
        if len(items) == 1:  # an item event: no generator for the common case
            return (conversion_row(*fields, items[0], occurred, click_id, extra),)
        return tuple(conversion_row(*fields, item, occurred, click_id, extra) for item in items)

    def _try_attribute(self, waiting, history) -> bool:
        entry, items, occurred, _ = waiting
        click_id = attribute(history, occurred.timestamp(), self.window_s, self.grace_s)
        if click_id is None:
            return False
        rows = self._rows(items, occurred, click_id)
        if entry.pending:
            self.flow.resolved(resolve(entry, rows))
        else:
            entry.rows = rows
        return True

    # -- the orders' records ---------------------------------------------------------------
    def _sealed(self, batch: Batch) -> list:
        """The batch is cut: its orders' records are written before its file is uploaded."""
        taken = taken_lines(batch.entries)
        if not taken:
            return []
        with self.orders.reading(batch.partition):
            records = batch.orders.seal(taken, batch.file_name(self._title), batch.split, time.time())
        return self.orders.put(batch.partition, records) if records else []

    async def _resolved(self, batch: Batch) -> None:
        """Lines unattributed after all leave their orders' records before the file is uploaded."""
        dropped: dict[str, set[str]] = defaultdict(set)
        for e in batch.entries:
            if e.lines is not None and not e.rows:
                dropped[e.order_id].update(e.lines)
        if not dropped:
            return
        with self.orders.reading(batch.partition):
            put, delete = batch.orders.without(dropped)
        for sent in (self.orders.put(batch.partition, put) if put else []) + self.orders.delete(batch.partition, delete):
            await confirmed(sent)

    def expire_waiting(self, now: float) -> None:
        """Items whose grace ran out, their clicks partition read as far as it went when they were
        read, go to the unattributed topic, never into a file."""
        for partition, deadlines in self._deadlines.items():
            # Deadlines and clicks ends only grow along a partition's items: the first that must
            # still wait holds the rest. An item attributed meanwhile (most, in a backlog read
            # ahead of its clicks) is only dropped: asking for its clicks end cost as much as
            # the rest of its way through the worker.
            while deadlines and deadlines[0].at <= now:
                due = deadlines[0]
                if due.waiting[0].pending:
                    if not self._clicks_read(partition, due):
                        break
                    self._expire(partition, due.customer, due.waiting)
                deadlines.popleft()

    def _clicks_read(self, partition: int, deadline: "Deadline") -> bool:
        if self._clicks_end is None:
            return True
        if deadline.clicks_end is None:
            # The end as last fetched can be older than the item (a large fetch still being
            # read): only a fetch made after the item was read says how far its clicks go.
            end = self._clicks_end(partition)
            if end is None or end[1] < deadline.read_ms:
                return False
            deadline.clicks_end = end[0]
        part = self.ledger.get((self._clicks_topic, partition))
        return part is not None and part.next >= deadline.clicks_end

    def _expire(self, partition: int, key: str, waiting) -> None:
        entry, _, _, record = waiting
        if not entry.pending or entry.batch is None:
            return
        reason = unattributed_reason(self.clicks.get(key))
        fut = self.outputs.send(self.unattributed, record, reason, f"no click within {self.grace_s:g}s grace")
        self.outputs.count("unattributed", reason)
        queue = self._waiting.get((partition, key), [])
        if waiting in queue:
            queue.remove(waiting)
        if not queue:
            self._waiting.pop((partition, key), None)
        self.flow.resolved(resolve(entry, None, fut))

    # -- timer and rebalance --------------------------------------------------------------
    async def tick(self) -> None:
        now = monotonic()
        self.expire_waiting(now)
        self._publish_counts()
        await self.flow.tick(now)

    async def settle(self, timeout: float) -> None:
        """Graceful stop: the clicks read so far recorded (their changelog writes confirmed) within
        ``timeout``, so that the final commit covers them."""
        pending = [asyncio.shield(done) for done in self._clicks_done.values()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked: their waiting items go with their batches to the new owner."""
        self.flow.forget(partitions)
        self._waiting = {k: v for k, v in self._waiting.items() if k[0] not in partitions}
        for partition in partitions:  # the next owner reads what was not committed again
            done = self._clicks_done.pop(partition, None)
            if done is not None:
                done.cancel()
        for partition in partitions:
            self._deadlines.pop(partition, None)

    def _publish_counts(self) -> None:
        self.outputs.count("items_in", n=self._items_in)
        self.outputs.count("joined", n=self._joined)
        self._items_in = self._joined = 0
        self.outputs.publish()
