"""One order, one file, once: the rules of streams.core.orders, without I/O."""
import orjson

from streams.core.batching import Entry
from streams.core.orders import DUPLICATE, ORDER_ALREADY_REPORTED, PartitionOrders, line_identities, taken_lines

ITEM = {"order_id": "O1", "customer_id": "C1", "occurred_at": "2026-12-01T10:00:00+00:00", "currency": "USD",
        "amount": "10.00", "category": "Garden", "sku": "S1", "quantity": 1}


def orders(store=None, wait_s=60.0):
    return PartitionOrders({} if store is None else store, wait_s)


def ids(*items):
    return line_identities(list(items))


def test_a_line_is_its_line_id_or_its_exact_content():
    raw = orjson.dumps(ITEM)
    assert line_identities([ITEM], raw) == line_identities([orjson.loads(raw)], raw)  # a re-send: the same bytes
    assert line_identities([ITEM], raw) != line_identities([ITEM], orjson.dumps({**ITEM, "sent_at": "retry 2"}))
    assert ids(ITEM) != ids({**ITEM, "quantity": 2})  # an order event's lines: their JSON
    with_id = {**ITEM, "line_id": "7"}
    assert line_identities([with_id], orjson.dumps(with_id)) == ids({**ITEM, "line_id": "7", "quantity": 2})
    assert ids({**ITEM, "line_id": "7"}) != ids({**ITEM, "line_id": "8"})


def test_a_cut_batch_records_each_taken_line_at_its_offset_and_nothing_else():
    entries = [Entry(10, 0, "O1", ["a"]), Entry(11, 0), Entry(12, 0, "O2", ["b", "c"]), Entry(13, 0, "O1", ["d"]),
               Entry(14, 0, "O2", ["e", "f"])]  # 11: refused or a dead letter, not taken
    assert taken_lines(entries) == {"O1": {"a": 10, "d": 13}, "O2": {"b": 12, "c": 12, "e": 14, "f": 14}}


def test_a_re_sent_line_in_the_open_batch_is_a_duplicate_and_a_new_one_joins_its_order():
    o = orders()
    assert o.take("O1", ids(ITEM), 0, now=0.0) is None
    refusal = o.take("O1", ids(ITEM), 5, now=1.0)
    assert refusal.reason == DUPLICATE and refusal.files is None
    assert refusal.detail == "1 line(s) already taken (in the open batch)"
    assert o.take("O1", ids({**ITEM, "sku": "S2"}), 6, now=1.0) is None


def test_an_order_event_is_complete_a_second_one_is_refused_whole():
    o = orders()
    lines = ids(ITEM, {**ITEM, "sku": "S2"})
    assert o.take("O1", lines, 0, now=0.0, whole=True) is None
    again = o.take("O1", lines, 3, now=0.0, whole=True)
    assert (again.reason, again.detail) == (DUPLICATE, "2 line(s) already taken (in the open batch)")
    changed = ids(ITEM, {**ITEM, "sku": "S3"})  # one line known, one new: a changed order
    assert o.take("O1", changed, 4, now=0.0, whole=True).reason == ORDER_ALREADY_REPORTED
    assert o.take("O1", ids({**ITEM, "sku": "S9"}), 5, now=0.0).reason == ORDER_ALREADY_REPORTED


def test_an_order_with_its_count_reached_takes_no_more_lines():
    o = orders()
    assert o.take("O1", ids(ITEM), 0, now=0.0, expected=2) is None
    assert o.growing("O1", now=1.0, quiet_s=0.0)
    assert o.take("O1", ids({**ITEM, "sku": "S2"}), 1, now=1.0, expected=2) is None
    assert not o.growing("O1", now=1.0, quiet_s=10.0)
    assert o.take("O1", ids({**ITEM, "sku": "S3"}), 2, now=1.0, expected=2).reason == ORDER_ALREADY_REPORTED


def test_growing_is_bounded_by_the_wait_and_without_a_count_by_the_quiet_time():
    o = orders(wait_s=60.0)
    o.take("COUNTED", ids(ITEM), 0, now=0.0, expected=3)
    o.take("UNCOUNTED", ids({**ITEM, "order_id": "UNCOUNTED"}), 1, now=10.0)
    assert o.growing("COUNTED", now=59.0, quiet_s=0.0) and not o.growing("COUNTED", now=60.0, quiet_s=0.0)
    assert o.growing("UNCOUNTED", now=11.0, quiet_s=2.0)
    assert not o.growing("UNCOUNTED", now=12.0, quiet_s=2.0) and not o.growing("UNCOUNTED", now=11.0, quiet_s=0.0)
    assert not o.growing("UNKNOWN", now=0.0, quiet_s=2.0)


def test_once_its_batch_is_cut_an_order_is_recorded_and_takes_nothing_more_anywhere():
    store = {}
    o = orders(store)
    lines = ids(ITEM)
    o.take("O1", lines, 7, now=0.0)
    store.update(o.seal({"O1": dict.fromkeys(lines, 7)}, "f_1.csv", None, at=100.0))
    assert store["O1"] == {"files": ["f_1.csv"], "lines": {lines[0]: 7}, "more": False, "at": 100.0}
    assert "O1" not in o.open
    dup = o.take("O1", lines, 20, now=5.0)
    assert (dup.reason, dup.files) == (DUPLICATE, ("f_1.csv",)) and "f_1.csv" in dup.detail
    new = o.take("O1", ids({**ITEM, "sku": "S2"}), 21, now=5.0)
    assert (new.reason, new.files) == (ORDER_ALREADY_REPORTED, ("f_1.csv",))
    # Another worker, or this one after a restart: the same answers from the record alone.
    other = orders(store)
    assert other.take("O1", lines, 20, now=0.0).reason == DUPLICATE
    assert other.take("O1", lines, 7, now=0.0) is None  # a re-read of the record the file holds


def test_a_batch_read_again_writes_the_same_record_or_nothing():
    store = {}
    o = orders(store)
    lines = ids(ITEM)
    o.take("O1", lines, 7, now=0.0)
    store.update(o.seal({"O1": dict.fromkeys(lines, 7)}, "f_1.csv", None, at=100.0))
    again = orders(store)
    assert again.take("O1", lines, 7, now=9.0) is None
    assert again.seal({"O1": dict.fromkeys(lines, 7)}, "f_1.csv", None, at=200.0) == {}


def test_an_order_larger_than_a_file_goes_on_into_the_next_one_only():
    store = {}
    o = orders(store)
    first, second = ids(ITEM), ids({**ITEM, "sku": "S2"})
    o.take("BIG", first, 0, now=0.0)
    store.update(o.seal({"BIG": dict.fromkeys(first, 0)}, "f_0.csv", "BIG", at=1.0))
    assert store["BIG"]["more"] and "BIG" in o.open
    assert o.take("BIG", second, 1, now=0.0) is None
    store.update(o.seal({"BIG": dict.fromkeys(second, 1)}, "f_1.csv", None, at=2.0))
    assert store["BIG"]["files"] == ["f_0.csv", "f_1.csv"] and not store["BIG"]["more"]
    assert set(store["BIG"]["lines"]) == {*first, *second}
    assert o.take("BIG", ids({**ITEM, "sku": "S3"}), 2, now=0.0).reason == ORDER_ALREADY_REPORTED


def test_after_a_restart_the_next_part_of_a_split_order_is_still_taken():
    store = {}
    o = orders(store)
    first = ids(ITEM)
    o.take("BIG", first, 0, now=0.0)
    store.update(o.seal({"BIG": dict.fromkeys(first, 0)}, "f_0.csv", "BIG", at=1.0))
    restarted = orders(store)
    assert restarted.take("BIG", ids({**ITEM, "sku": "S2"}), 1, now=0.0) is None


def test_lines_unattributed_after_all_leave_the_record_so_they_can_be_produced_again():
    store = {}
    o = orders(store)
    a, b = ids(ITEM), ids({**ITEM, "sku": "S2"})
    o.take("O1", a, 0, now=0.0)
    o.take("O1", b, 1, now=0.0)
    o.take("O2", ids({**ITEM, "order_id": "O2"}), 2, now=0.0)
    store.update(o.seal({"O1": {a[0]: 0, b[0]: 1}, "O2": dict.fromkeys(ids({**ITEM, "order_id": "O2"}), 2)},
                        "f.csv", None, at=1.0))
    put, delete = o.without({"O1": set(b), "O2": set(ids({**ITEM, "order_id": "O2"}))})
    assert put == {"O1": {**store["O1"], "lines": {a[0]: 0}}} and delete == ["O2"]
