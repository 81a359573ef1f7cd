from streams.core.batching import Entry, PartitionBatcher, resolve


def row(order):
    return (order,)


def feed(batcher, items, now=0.0):
    """items: (offset, order_id or None, kind) with kind 'row' | 'pending' | 'none'"""
    sealed = []
    for offset, order, kind in items:
        e = Entry(offset, 1_700_000_000_000, order_id=order, rows=(row(order),) if kind == "row" else None,
                  pending=kind == "pending", expect=1 if kind == "pending" else 0)
        sealed += batcher.add(e, now)
    return sealed


def test_size_cut_keeps_an_order_together():
    b = PartitionBatcher(0, max_rows=4)
    sealed = feed(b, [(0, "A", "row"), (1, "A", "row"), (2, "B", "row"), (3, "B", "row"), (4, "B", "row"),
                      (5, "C", "row")])
    assert [(s.first, s.last) for s in sealed] == [(0, 1)]
    assert [e.order_id for e in b.open.entries] == ["B", "B", "B", "C"]


def test_an_order_larger_than_a_file_is_split_at_max_rows():
    b = PartitionBatcher(0, max_rows=3)
    sealed = feed(b, [(i, "BIG", "row") for i in range(7)])
    assert [(s.first, s.last, len(s.rows())) for s in sealed] == [(0, 2, 3), (3, 5, 3)]


def test_rows_never_exceed_max_and_records_without_rows_do_not_count():
    b = PartitionBatcher(0, max_rows=2)
    sealed = feed(b, [(0, "A", "row"), (1, None, "none"), (2, "B", "row"), (3, None, "none"), (4, "C", "row")])
    assert [(s.first, s.last) for s in sealed] == [(0, 3)]
    assert len(sealed[0].rows()) == 2


def test_items_of_an_order_are_grouped_in_the_file():
    b = PartitionBatcher(0, max_rows=10)
    feed(b, [(0, "A", "row"), (1, "B", "row"), (2, "A", "row"), (3, "C", "row"), (4, "B", "row")])
    assert [r[0] for r in b.open.rows()] == ["A", "A", "B", "B", "C"]


def test_recorded_cuts_are_replayed_exactly_whatever_the_size_rule():
    # Before a crash the timer cut at 0-2 and 3-3; replay must reproduce those ranges.
    b = PartitionBatcher(0, max_rows=100, recorded=[(0, 2), (3, 3)])
    sealed = feed(b, [(0, "A", "row"), (1, "B", "row"), (2, "C", "row"), (3, "D", "row"), (4, "E", "row")])
    assert [(s.first, s.last) for s in sealed] == [(0, 2), (3, 3)]
    assert b.open.first == 4


def test_recorded_cut_is_not_moved_by_the_timer():
    b = PartitionBatcher(0, max_rows=100, recorded=[(0, 5)])
    feed(b, [(0, "A", "row"), (1, "B", "row")], now=0.0)
    assert b.seal_if_older(now=999.0, max_age_s=1) is None
    assert b.seal_open() is None


def test_recorded_cut_whose_last_record_is_gone_keeps_its_name():
    b = PartitionBatcher(0, max_rows=100, recorded=[(10, 13)])
    sealed = feed(b, [(10, "A", "row"), (11, "B", "row"), (20, "C", "row")])
    assert [(s.first, s.last) for s in sealed] == [(10, 13)]


def test_timer_seals_only_old_batches():
    b = PartitionBatcher(0, max_rows=100)
    feed(b, [(0, "A", "row")], now=10.0)
    assert b.seal_if_older(now=10.5, max_age_s=1) is None
    batch = b.seal_if_older(now=11.0, max_age_s=1)
    assert (batch.first, batch.last) == (0, 0) and b.open is None


def test_pending_items_count_towards_the_size_and_resolve_the_batch():
    b = PartitionBatcher(0, max_rows=2)
    feed(b, [(0, "A", "pending"), (1, "B", "row")])
    pending = b.open.entries[0]
    batch = feed(b, [(2, "C", "row")])[0]
    assert not batch.resolved
    assert resolve(pending, None, confirm="sent") is batch
    assert batch.resolved and batch.rows() == [row("B")]


def test_file_name_is_deterministic_and_from_the_source():
    b = PartitionBatcher(7, max_rows=1)
    batch = feed(b, [(41, "A", "row"), (42, "B", "row")])[0]
    assert batch.file_name("acme") == "acme_20231114_p007_000000000041-000000000041.csv"


def test_resuming_inside_a_recorded_batch_acks_its_rest_without_a_file():
    # Committed offset 53 lies inside recorded batch 50-57: that batch was delivered whole.
    b = PartitionBatcher(3, max_rows=100, recorded=[(50, 57), (58, 60)])
    assert b.was_delivered(53)
    sealed = feed(b, [(o, f"O{o}", "row") for o in range(53, 58)])
    assert [(s.first, s.last, s.delivered) for s in sealed] == [(50, 57, True)]
    assert not b.was_delivered(58)
    sealed = feed(b, [(o, f"O{o}", "row") for o in range(58, 61)])
    assert [(s.first, s.last, s.delivered) for s in sealed] == [(58, 60, False)]


def test_resuming_at_the_first_record_of_a_recorded_batch_re_forms_it_whole():
    b = PartitionBatcher(3, max_rows=100, recorded=[(50, 57)])
    assert not b.was_delivered(50)
    sealed = feed(b, [(o, f"O{o}", "row") for o in range(50, 58)])
    assert [(s.first, s.last, s.delivered, len(s.rows())) for s in sealed] == [(50, 57, False, 8)]


def test_the_timer_cuts_a_full_batch_once_its_partition_is_quiet_not_before():
    b = PartitionBatcher(0, max_rows=4)
    feed(b, [(0, "A", "row"), (1, "A", "row"), (2, "B", "row")], now=10.0)
    assert b.seal_if_full(now=100.0, settle_s=2) is None  # 3 of 4 rows: only the age can cut it
    feed(b, [(3, "B", "pending")], now=10.5)  # an item waiting for its click is a row to come
    assert b.seal_if_full(now=12.4, settle_s=2) is None
    batch = b.seal_if_full(now=12.5, settle_s=2)
    assert (batch.first, batch.last, batch.potential_rows) == (0, 3, 4) and b.open is None
    assert feed(b, [(4, "C", "row")], now=13.0) == [] and b.open.first == 4


def test_an_order_still_arriving_keeps_a_full_batch_open():
    b = PartitionBatcher(0, max_rows=4)
    feed(b, [(0, "A", "row"), (1, "A", "row"), (2, "B", "row")], now=10.0)
    feed(b, [(3, "B", "row")], now=11.0)
    assert b.seal_if_full(now=12.9, settle_s=2) is None
    sealed = feed(b, [(4, "B", "row")], now=12.9)  # B grew: it goes whole into the next batch
    assert [(s.first, s.last) for s in sealed] == [(0, 1)]
    assert [e.order_id for e in b.open.entries] == ["B", "B", "B"]
    assert b.seal_if_full(now=99.0, settle_s=2) is None


def test_the_full_cut_never_moves_a_replayed_recorded_cut():
    # Recorded before a restart with a larger max_rows: 0-5 holds more rows than a file now may.
    b = PartitionBatcher(0, max_rows=3, recorded=[(0, 5)])
    feed(b, [(o, f"O{o}", "row") for o in range(4)], now=0.0)
    assert b.seal_if_full(now=999.0, settle_s=1) is None
    sealed = feed(b, [(4, "O4", "row"), (5, "O5", "row")], now=1000.0)
    assert [(s.first, s.last, len(s.rows())) for s in sealed] == [(0, 5, 6)]


class Growing:
    """The partition's orders as the batcher asks them: which may still grow."""

    def __init__(self, **until):
        self.until = until  # order id -> the time up to which it may grow

    def growing(self, order_id, now, quiet_s):
        return now < self.until.get(order_id, -1)


def test_the_age_cut_leaves_an_order_that_may_still_grow_for_the_next_batch():
    b = PartitionBatcher(0, max_rows=100, orders=Growing(B=20.0))
    feed(b, [(0, "A", "row"), (1, "A", "row"), (2, "B", "row"), (3, None, "none"), (4, "B", "row")], now=0.0)
    batch = b.seal_if_older(now=10.0, max_age_s=5, settle_s=2)
    assert (batch.first, batch.last, batch.cut) == (0, 1, "age")
    assert [e.offset for e in b.open.entries] == [2, 3, 4] and b.open.first == 2


def test_a_batch_that_starts_with_a_growing_order_waits_for_it():
    b = PartitionBatcher(0, max_rows=100, orders=Growing(A=20.0))
    feed(b, [(0, "A", "row"), (1, "B", "row")], now=0.0)
    assert b.seal_if_older(now=10.0, max_age_s=5) is None
    assert b.seal_if_full(now=10.0, settle_s=0) is None and b.seal_open(now=10.0) is None
    batch = b.seal_if_older(now=20.0, max_age_s=5)  # the wait is bounded: then it goes as it is
    assert (batch.first, batch.last) == (0, 1)


def test_the_size_cut_also_leaves_a_growing_order_out():
    b = PartitionBatcher(0, max_rows=3, orders=Growing(B=99.0))
    sealed = feed(b, [(0, "A", "row"), (1, "B", "row"), (2, "C", "row"), (3, "D", "row")])
    assert [(s.first, s.last) for s in sealed] == [(0, 0)]
    assert [e.order_id for e in b.open.entries] == ["B", "C", "D"]


def test_an_order_event_counts_its_lines_and_never_overfills_a_file():
    b = PartitionBatcher(0, max_rows=5)
    whole = Entry(1, 0, order_id="W", rows=(("W",),) * 4)
    assert b.add(Entry(0, 0, order_id="A", rows=(("A",), ("A",))), 0.0) == []
    sealed = b.add(whole, 0.0)  # 2 + 4 > 5: cut before the order event
    assert [(s.first, s.last, len(s.rows())) for s in sealed] == [(0, 0, 2)] and b.open.potential_rows == 4
    pending = Entry(2, 0, order_id="P", pending=True, expect=3)
    sealed = b.add(pending, 0.0)  # 4 + 3 rows to come > 5
    assert [(s.first, s.last) for s in sealed] == [(1, 1)] and b.open.potential_rows == 3
    assert resolve(pending, (("P",), ("P",), ("P",))) is b.open and b.open.potential_rows == 3


def test_only_an_order_larger_than_a_file_is_split_and_the_cut_says_which():
    b = PartitionBatcher(0, max_rows=2)
    sealed = feed(b, [(0, "BIG", "row"), (1, "BIG", "row"), (2, "BIG", "row")])
    assert [(s.first, s.last, s.split) for s in sealed] == [(0, 1, "BIG")]
    sealed = feed(b, [(3, "A", "row"), (4, "B", "row")])
    assert [(s.first, s.last, s.split) for s in sealed] == [(2, 3, None)]
