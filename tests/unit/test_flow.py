"""The flow and its two sources, in-process: the commit gate's ledger is real, the topics and
tables are recorders (the broker-backed proof is tests/integration/test_pipeline.py and
test_modifications.py)."""
import asyncio
import time
from contextlib import nullcontext
from time import monotonic
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import orjson
from faust.types import TP

from connectors.base import Connection, ConnectionSettings
from streams.config import parse_settings
from streams.core.batching import Batch, Entry
from streams.core.changes import MODIFICATION_HEADER, reported_order
from streams.core.csvfile import conversion_row
from streams.delivery.lanes import RetryPolicy
from streams.delivery.ledger import Ledger
from streams.flow.changes import Changes
from streams.flow.conversions import Conversions
from streams.flow.flow import Flow, Outputs, confirmed

ITEMS, CLICKS, CHANGES = TP("items", 2), TP("clicks", 2), TP("changes", 2)
AT = (datetime.now(timezone.utc) - timedelta(minutes=5)).replace(microsecond=0)


class Recorder:
    """A topic or a table: what was sent or written."""

    def __init__(self):
        self.sent, self.data = [], {}

    def send_soon(self, key, value, headers):
        self.sent.append((key, dict(headers)))
        return done()

    def get(self, key):
        return self.data.get(key)

    def put(self, partition, items):
        self.data.update(items)
        return [done() for _ in items]

    def delete(self, partition, keys):
        for key in keys:
            self.data.pop(key, None)
        return [done() for _ in keys]

    def reading(self, partition):
        return nullcontext()


def done():
    fut = asyncio.get_event_loop().create_future()
    fut.set_result(None)
    return fut


def record(tp, offset, value: dict | bytes):
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    key = value.get("customer_id", "").encode() if isinstance(value, dict) else b"C1"
    return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset, key=key, value=raw,
                           timestamp=int(AT.timestamp() * 1000))


def item(order, customer, **extra):
    return {"order_id": order, "customer_id": customer, "occurred_at": AT.isoformat(), "currency": "USD",
            "amount": "10.00", "category": "Garden", "sku": "S1", "quantity": 1, **extra}


def settings(max_rows=100, settle_s=2.0):
    return parse_settings({"impact": {"campaign_id": 1000, "action_tracker_id": 4321},
                           "batch": {"max_rows": max_rows, "order_settle_s": settle_s},
                           "attribution": {"grace_s": 60}, "topics": {"clicks": CLICKS.topic, "order_items": ITEMS.topic},
                           "connections": [{"name": "outbox", "method": "fsspec", "url": "/tmp/unused"}]})


def pipeline(max_rows=100, settle_s=2.0, clicks_end=None):
    s = settings(max_rows, settle_s)
    ledger = Ledger()
    topics = SimpleNamespace(dead=Recorder(), unattributed=Recorder(), clicks=Recorder(), orders=Recorder(),
                             audit=Recorder())
    flow = Flow(s.batch, title="conversions", header=s.impact.csv_header, ledger=ledger, cuts=Recorder(),
                connections=[])
    p = Conversions(s, flow=flow, ledger=ledger, clicks=topics.clicks, orders=topics.orders, dead_letter=topics.dead,
                    unattributed=topics.unattributed, audit=topics.audit, outputs=Outputs(), clicks_end=clicks_end)
    ledger.route("items", p.on_items)
    ledger.route("clicks", p.on_clicks)
    ledger.assign(ITEMS, 0, epoch=1)
    ledger.assign(CLICKS, 0, epoch=1)
    return p, ledger, topics


def open_rows(p):
    return [(e.offset, e.rows and e.rows[0][4], e.pending) for e in p.flow.open_batch(ITEMS.partition).entries]


def test_a_fetch_of_items_joins_waits_and_dead_letters_in_offset_order():
    async def run():
        p, ledger, topics = pipeline()
        await p.on_clicks(CLICKS, [record(CLICKS, 0, {"customer_id": "C1", "im_ref": "REF-C1",
                                                       "occurred_at": (AT - timedelta(hours=1)).isoformat()})], 1)
        await p.on_items(ITEMS, [record(ITEMS, 0, item("O1", "C1")),           # joined through the table
                                 record(ITEMS, 1, item("O2", "C2")),           # no click yet: waits
                                 record(ITEMS, 2, b"{not json"),               # dead letter
                                 record(ITEMS, 3, item("O3", "C3", im_ref="OWN"))], 1)
        assert open_rows(p) == [(0, "REF-C1", False), (1, None, True), (2, None, False), (3, "OWN", False)]
        assert [(k, h["imref.reason"], h["imref.source.offset"]) for k, h in topics.dead.sent] == \
            [(b"C1", b"malformed_json", b"2")]
        # C2's click arrives in a later fetch of the clicks partition: the waiting item gets it.
        await p.on_clicks(CLICKS, [record(CLICKS, 1, {"customer_id": "C2", "im_ref": "REF-C2",
                                                       "occurred_at": (AT - timedelta(minutes=1)).isoformat()})], 1)
        assert open_rows(p)[1] == (1, "REF-C2", False)
        assert topics.clicks.data["C2"] == [((AT - timedelta(minutes=1)).timestamp(), "REF-C2")]
        # Clicks are done once handled: committable; items only once their file is delivered.
        # (the clicks' changelog writes are confirmed beside the fetch loop, not in it)
        await p._clicks_done[CLICKS.partition]
        assert ledger.committable(CLICKS) == 2 and ledger.committable(ITEMS) is None

    asyncio.run(run())


def click(customer, ref):
    return {"customer_id": customer, "im_ref": ref, "occurred_at": (AT - timedelta(hours=1)).isoformat()}


def test_an_item_past_its_grace_waits_until_its_clicks_partition_is_read_as_far_as_it_went():
    """A worker catching up a backlog reads items ahead of their clicks: the grace alone sent them
    to the unattributed topic although their clicks were in the topic."""
    async def run():
        fetched = {}  # the clicks partition's end as last fetched, and when (epoch ms)
        p, ledger, topics = pipeline(clicks_end=fetched.get)
        fetched[CLICKS.partition] = (0, time.time() * 1000 - 1000)  # a fetch before the items came
        await p.on_items(ITEMS, [record(ITEMS, 0, item("O1", "C1")), record(ITEMS, 1, item("O2", "C2"))], 1)
        after_grace = monotonic() + 61
        p.expire_waiting(after_grace)  # the clicks partition read as far as that fetch went: not enough
        assert [pending for _, _, pending in open_rows(p)] == [True, True] and topics.unattributed.sent == []
        fetched[CLICKS.partition] = (3, time.time() * 1000 + 1000)  # a fetch after: 3 clicks
        p.expire_waiting(after_grace)
        assert [pending for _, _, pending in open_rows(p)] == [True, True] and topics.unattributed.sent == []
        await p.on_clicks(CLICKS, [record(CLICKS, 0, click("C1", "REF-C1")), record(CLICKS, 1, click("C9", "X"))], 1)
        p.expire_waiting(after_grace)
        assert open_rows(p) == [(0, "REF-C1", False), (1, None, True)] and topics.unattributed.sent == []
        await p.on_clicks(CLICKS, [record(CLICKS, 2, click("C8", "Y"))], 1)  # read as far as it went
        p.expire_waiting(after_grace)
        assert [(k, h["imref.reason"]) for k, h in topics.unattributed.sent] == [(b"C2", b"no_click")]

    asyncio.run(run())


def test_without_the_clicks_end_the_grace_is_the_wall_clock():
    async def run():
        p, ledger, topics = pipeline()
        await p.on_items(ITEMS, [record(ITEMS, 0, item("O1", "C1"))], 1)
        p.expire_waiting(monotonic() + 59)
        assert topics.unattributed.sent == []
        p.expire_waiting(monotonic() + 61)
        assert [(k, h["imref.reason"]) for k, h in topics.unattributed.sent] == [(b"C1", b"no_click")]

    asyncio.run(run())


def test_records_of_an_older_position_or_out_of_order_are_not_admitted():
    async def run():
        p, ledger, _ = pipeline()
        await p.on_items(ITEMS, [record(ITEMS, 0, item("O1", "C1", im_ref="R"))], epoch=0)  # before the seek
        assert p.flow.open_batch(ITEMS.partition) is None
        await p.on_items(ITEMS, [record(ITEMS, 0, item("O1", "C1", im_ref="R")),
                                 record(ITEMS, 0, item("O1", "C1", im_ref="R"))], epoch=1)  # read twice
        assert [e.offset for e in p.flow.open_batch(ITEMS.partition).entries] == [0]

    asyncio.run(run())


def test_a_revoke_cancelling_the_waiter_leaves_faust_send_to_faust():
    async def scenario():
        sent = asyncio.get_running_loop().create_future()
        waiter = asyncio.ensure_future(confirmed(sent))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert waiter.cancelled() and not sent.cancelled()
        sent.set_result("published")  # what Faust does when the broker answers

    asyncio.run(scenario())


def test_a_cut_read_again_after_a_rebalance_is_recorded_once():
    async def run():
        p, ledger, _ = pipeline(max_rows=2)
        fetch = [record(ITEMS, n, item(f"O{n}", "C1", im_ref="R")) for n in range(3)]
        await p.on_items(ITEMS, fetch, 1)  # offset 2 closes the cut 0-1
        # Revoked before the next commit and given back: the same records, read again.
        ledger.revoke([ITEMS])
        p.forget({ITEMS.partition})
        ledger.assign(ITEMS, 0, epoch=2)
        await p.on_items(ITEMS, fetch, 2)
        assert p.flow.cuts.data[str(ITEMS.partition)] == [[0, 1, {}]]

    asyncio.run(run())


def test_the_timer_cuts_a_full_batch_of_a_quiet_partition_but_not_of_a_paused_one():
    async def run():
        p, _, _ = pipeline(max_rows=2, settle_s=0.05)
        cuts = p.flow.cuts.data
        await p.on_items(ITEMS, [record(ITEMS, 0, item("O1", "C1", im_ref="R", sku="A")),
                                 record(ITEMS, 1, item("O1", "C1", im_ref="R", sku="B"))], 1)
        await p.tick()
        assert p.flow.held() == 0  # full, but just fetched: O1 may still grow
        await asyncio.sleep(0.1)
        await p.tick()  # the max_age_s of 60 s is far: this is the full cut, recorded like any cut
        assert cuts["2"] == [[0, 1, {}]] and p.flow.open_batch(ITEMS.partition) is None
        # Three size cuts more fill the partition's lanes (nothing confirms here): fetching stops,
        # so the next full batch's quiet is no sign that its order is complete.
        await p.on_items(ITEMS, [record(ITEMS, o, item(f"O{o // 2 + 1}", "C1", im_ref="R", sku=f"S{o}"))
                                 for o in range(2, 10)], 1)
        assert [c[:2] for c in cuts["2"][1:]] == [[2, 3], [4, 5], [6, 7]] and p.flow.held() == 4  # max_in_flight
        await asyncio.sleep(0.1)
        await p.tick()
        assert len(cuts["2"]) == 4 and p.flow.open_batch(ITEMS.partition).potential_rows == 2

    asyncio.run(run())


# -- the order-changes source on its own flow --------------------------------------------------
def changes_source():
    s = settings()
    ledger = Ledger()
    topics = SimpleNamespace(dead=Recorder(), unmatched=Recorder(), reported=Recorder())
    flow = Flow(s.batch, title="modifications", header=MODIFICATION_HEADER, ledger=ledger, cuts=Recorder(),
                connections=[])
    c = Changes(flow=flow, reported=topics.reported, dead_letter=topics.dead, unmatched=topics.unmatched,
                outputs=Outputs(), conversion_title="conversions", reasons=s.modifications.reasons)
    ledger.route("changes", c.on_changes)
    ledger.assign(CHANGES, 0, epoch=1)
    return c, ledger, topics


def change(change_id, order, **extra):
    return {"change_id": change_id, "order_id": order, "customer_id": "C1", "occurred_at": AT.isoformat(),
            "kind": "partial_return", "reason": "ITEM_RETURNED", "items": [{"sku": "S1", "quantity": 1, "amount": "10.00"}],
            **extra}


def delivered_conversions(orders: list[tuple[str, int]]):
    """A conversion batch as the conversions' flow hands it to its delivered hooks."""
    batch = Batch(partition=2, first=0, opened_at=0.0)
    for offset, (order, quantity) in enumerate(orders):
        row = conversion_row(1000, 4321, {**item(order, "C1", im_ref="R"), "quantity": quantity, "amount": "20.00"},
                             AT, "R")
        batch.append(Entry(offset, 0, order_id=order, rows=(row,)))
    return batch


def test_changes_of_reported_orders_become_rows_the_rest_go_to_their_topics():
    async def run():
        c, ledger, topics = changes_source()
        await c.record_reported(delivered_conversions([("O1", 2)]))
        assert topics.reported.data["O1"]["items"] == {"S1": [2, "20.00"]}
        await c.on_changes(CHANGES, [record(CHANGES, 0, change("X1", "O1")),      # one of two units back
                                     record(CHANGES, 1, change("X2", "O9")),      # never reported
                                     record(CHANGES, 2, change("X1", "O1")),      # a producer's retry
                                     record(CHANGES, 3, b"{not json")], 1)
        rows = [(e.offset, e.rows and e.rows[0]) for e in c.flow.open_batch(CHANGES.partition).entries]
        assert rows == [(0, ("O1", "4321", "10.00", "USD", "ITEM_RETURNED")), (1, None), (2, None), (3, None)]
        assert [h["imref.reason"] for _, h in topics.unmatched.sent] == [b"order_not_reported", b"duplicate_change"]
        assert [h["imref.reason"] for _, h in topics.dead.sent] == [b"malformed_json"]
        assert topics.reported.data["O1"]["applied"] == {"0": "10.00"}
        # Nothing is committable before the modification file is delivered.
        assert ledger.committable(CHANGES) is None

    asyncio.run(run())


def test_a_change_read_again_gives_the_same_row_and_a_batch_acked_again_keeps_the_changes():
    async def run():
        c, ledger, topics = changes_source()
        await c.record_reported(delivered_conversions([("O1", 2)]))
        fetch = [record(CHANGES, 0, change("X1", "O1"))]
        await c.on_changes(CHANGES, fetch, 1)
        # Revoked before delivery and given back: the same record read again.
        ledger.revoke([CHANGES])
        c.forget({CHANGES.partition})
        ledger.assign(CHANGES, 0, epoch=2)
        await c.on_changes(CHANGES, fetch, 2)
        assert [e.rows[0][2] for e in c.flow.open_batch(CHANGES.partition).entries] == ["10.00"]  # not 0: applied once
        # The conversion file acked again after a restart must not wipe the change.
        await c.record_reported(delivered_conversions([("O1", 2)]))
        assert topics.reported.data["O1"]["items"] == {"S1": [1, "10.00"]}

    asyncio.run(run())


# -- one order, one file, once -----------------------------------------------------------------
class Uploads(Connection):
    """A push connection: every put is a submission impact processes."""

    def __init__(self):
        super().__init__(ConnectionSettings(name="impact ftp", methodology="push_to_impact"))
        self.puts: list[tuple[str, bytes]] = []

    def put(self, name, data):
        self.puts.append((name, data))


def delivering_pipeline(conn, max_rows=100):
    p, ledger, topics = pipeline(max_rows=max_rows)
    p.flow.connections = [conn]
    p.flow.retry = RetryPolicy(first_delay_s=0.001, max_delay_s=0.01)
    return p, ledger, topics


async def drained(p):
    await asyncio.wait_for(asyncio.gather(*(lane.wait_idle() for lane in p.flow._lanes.values())), 5)


def test_a_re_sent_order_is_written_once_and_its_copies_name_the_file_they_duplicate():
    async def run():
        conn = Uploads()
        p, ledger, topics = delivering_pipeline(conn, max_rows=3)
        a, b = item("O1", "C1", im_ref="R", sku="A"), item("O1", "C1", im_ref="R", sku="B")
        await p.on_items(ITEMS, [record(ITEMS, 0, a), record(ITEMS, 1, b),
                                 record(ITEMS, 2, a),                       # re-sent in the open batch
                                 record(ITEMS, 3, item("O2", "C1", im_ref="R")),
                                 record(ITEMS, 4, item("O3", "C1", im_ref="R"))], 1)  # cuts 0-3
        await drained(p)
        (name, data), = conn.puts
        assert data.count(b",O1,") == 2 and b",O2," in data
        # the copy went to the audit topic once its batch was sealed, naming the file
        (key, headers), = topics.audit.sent
        assert (headers["imref.reason"], headers["imref.file"], headers["imref.source.offset"]) == \
            (b"duplicate", name.encode(), b"2")
        # a later copy, and a new line of an order already in a file: refused at once
        await p.on_items(ITEMS, [record(ITEMS, 5, b), record(ITEMS, 6, item("O1", "C1", im_ref="R", sku="C"))], 1)
        assert [(h["imref.reason"], h["imref.file"]) for _, h in topics.audit.sent[1:]] == \
            [(b"duplicate", name.encode()), (b"order_already_reported", name.encode())]
        assert topics.orders.data["O1"]["files"] == [name] and len(topics.orders.data["O1"]["lines"]) == 2
        assert ledger.committable(ITEMS) == 4

    asyncio.run(run())


def test_a_file_a_connection_confirmed_is_never_sent_to_it_again():
    async def run():
        conn = Uploads()
        p, ledger, _ = delivering_pipeline(conn, max_rows=2)
        fetch = [record(ITEMS, n, item(f"O{n}", "C1", im_ref="R")) for n in range(3)]
        await p.on_items(ITEMS, fetch, 1)  # offset 2 closes the cut 0-1
        await drained(p)
        (name, data), = conn.puts
        digest = p.flow.cuts.data["2"][0][2]["impact ftp"]
        assert p.flow.cuts.data["2"][0][:2] == [0, 1] and len(digest) == 32
        # Revoked before the commit and given back (or restarted): the batch is formed again.
        ledger.revoke([ITEMS])
        p.forget({ITEMS.partition})
        ledger.assign(ITEMS, 0, epoch=2)
        await p.on_items(ITEMS, fetch, 2)
        await drained(p)
        assert conn.puts == [(name, data)] and ledger.committable(ITEMS) == 2
        # Formed again with other content (a changed config, state recovered differently): the
        # delivered file stands.
        ledger.revoke([ITEMS])
        p.forget({ITEMS.partition})
        ledger.assign(ITEMS, 0, epoch=3)
        p._row_fields = (1000, 9999)
        await p.on_items(ITEMS, fetch, 3)
        await drained(p)
        assert conn.puts == [(name, data)] and ledger.committable(ITEMS) == 2

    asyncio.run(run())


def test_a_time_cut_never_splits_an_order_whose_count_of_lines_is_not_reached():
    async def run():
        p, _, _ = pipeline()
        counted = [item("O1", "C1", im_ref="R", sku=f"S{n}", items_in_order=3) for n in range(3)]
        await p.on_items(ITEMS, [record(ITEMS, 0, item("O0", "C1", im_ref="R")), record(ITEMS, 1, counted[0]),
                                 record(ITEMS, 2, counted[1])], 1)
        # past max_age_s (60 s), inside order_wait_s (300 s): O0 goes, O1 stays whole for the next batch
        await p.flow.tick(now=monotonic() + 61)
        assert p.flow.cuts.data["2"] == [[0, 0, {}]]
        await p.on_items(ITEMS, [record(ITEMS, 3, counted[2])], 1)
        assert [e.offset for e in p.flow.open_batch(ITEMS.partition).entries] == [1, 2, 3]
        await p.flow.tick(now=monotonic() + 121)  # complete now: the age cut takes it whole
        assert p.flow.cuts.data["2"][1][:2] == [1, 3]

    asyncio.run(run())


def test_an_order_event_is_one_record_with_all_its_rows():
    async def run():
        p, _, topics = pipeline()
        head = {k: v for k, v in item("O1", "C1").items() if k not in ("amount", "category", "sku", "quantity")}
        order = {**head, "items": [{"sku": "A", "category": "Tools", "amount": "1.50", "quantity": 2},
                                   {"sku": "B", "category": "Tools", "amount": "2.00", "quantity": 1}]}
        await p.on_clicks(CLICKS, [record(CLICKS, 0, {"customer_id": "C1", "im_ref": "-Qi_x",
                                                       "occurred_at": (AT - timedelta(hours=1)).isoformat()})], 1)
        await p.on_items(ITEMS, [record(ITEMS, 0, order), record(ITEMS, 1, order)], 1)
        batch = p.flow.open_batch(ITEMS.partition)
        assert [(r[3], r[4], r[7], r[9]) for r in batch.rows()] == [("O1", "-Qi_x", "1.50", "A"),
                                                                     ("O1", "-Qi_x", "2.00", "B")]
        assert batch.potential_rows == 2 and [h["imref.reason"] for _, h in topics.audit.sent] == []
        assert batch.entries[1].later is not None  # the copy: sent once the file is named

    asyncio.run(run())
