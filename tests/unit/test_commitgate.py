"""The commit gate's ledger: records admitted strictly in order from the partition's position,
only from its current position epoch; commits only up to what was delivered."""
from types import SimpleNamespace

import pytest
from faust.types import TP

from streams.delivery.ledger import Ledger

ITEMS = TP("items", 3)


def ledger(seeks=None):
    counts = []
    g = Ledger(count=lambda what, topic: counts.append((what, topic)))
    g.route("items", handler=None)
    if seeks is not None:
        g.attach(SimpleNamespace(seek_back=seeks.append))
    return g, counts


def admit_all(g, offsets, epoch=1):
    return [o for o in offsets if g.admit(ITEMS, o, epoch) is not None]


def test_admits_in_order_from_the_assigned_offset_and_drops_what_it_already_took():
    g, counts = ledger()
    g.assign(ITEMS, 10, epoch=1)
    assert admit_all(g, [10, 11, 12, 11, 12, 13]) == [10, 11, 12, 13]
    assert counts == [("redelivered", "items"), ("redelivered", "items")]


def test_other_topics_and_unassigned_partitions_are_not_admitted():
    g, _ = ledger()
    assert not g.gates(TP("clicks", 3)) and g.gates(ITEMS)
    assert g.admit(ITEMS, 0, 0) is None  # fetched before a revoke, or before the assignment


def test_records_fetched_before_the_assignment_seek_are_dropped_and_read_again():
    # The bug of the issue: 842.. dropped at revoke; records from the old position (875..) arrive
    # first after the partition comes back. They were fetched in an older position epoch.
    g, counts = ledger()
    part = g.assign(ITEMS, 842, epoch=7)
    assert admit_all(g, [875, 876, 877], epoch=6) == []
    assert part.next == 842 and part.skipped == {}
    assert admit_all(g, range(842, 880), epoch=7) == list(range(842, 880))
    assert counts == []


def test_a_fetch_starting_past_its_position_is_trusted_only_when_a_second_read_agrees():
    # CI run of 2026-12-03: a fresh worker's first fetch was handed out while it was being
    # sought, so its position moved to 414 unseen; the next fetch "started" at 414 and the gate
    # took 99-413 as missing from the log. A start-of-fetch jump now needs a second read.
    seeks = []
    g, counts = ledger(seeks)
    part = g.assign(ITEMS, 99, epoch=1)
    g.fetched_gap(ITEMS, 1, 99, 414, within_fetch=False)
    assert g.admit(ITEMS, 414, 1) is None and seeks == [part]  # read again from 99
    g.positioned(ITEMS, 99, epoch=2)
    assert admit_all(g, range(99, 420), epoch=2) == list(range(99, 420))  # they were there
    assert counts == [] and part.skipped == {}

    g, counts = ledger(seeks)
    part = g.assign(ITEMS, 100, epoch=1)
    g.fetched_gap(ITEMS, 1, 100, 105, within_fetch=False)  # the read from 100 starts at 105 (retention)
    assert g.admit(ITEMS, 105, 1) is None
    g.positioned(ITEMS, 100, epoch=2)
    g.fetched_gap(ITEMS, 2, 100, 105, within_fetch=False)  # and again: the offsets are gone
    assert g.admit(ITEMS, 105, 2) is part
    assert counts == [("resume_beyond_committed", "items")]
    assert admit_all(g, [106, 107], epoch=2) == [106, 107]
    assert g.delivered(part, 100, 107) and g.committable(ITEMS) == 108


def test_a_gap_after_the_resume_is_counted_apart_and_skipped_at_a_batch_boundary():
    g, counts = ledger()
    part = g.assign(ITEMS, 0, epoch=1)
    g.fetched_gap(ITEMS, 1, 3, 4)  # offset 3: a transaction marker
    admit_all(g, [0, 1, 2, 4])
    assert counts == [("offset_gap", "items")]
    assert g.delivered(part, 0, 2) and g.committable(ITEMS) == 3
    assert g.delivered(part, 4, 4) and g.committable(ITEMS) == 5


def test_records_fetched_but_lost_on_the_way_are_read_again_never_skipped():
    # The CI failure of this fix's first version: Faust skipped 10-34 (its flow control was
    # suspended) after they were fetched; 35 arrived next in the same epoch.
    seeks = []
    g, counts = ledger(seeks)
    part = g.assign(ITEMS, 10, epoch=1)
    assert admit_all(g, [35, 36, 37]) == []
    assert seeks == [part] and part.next == 10 and part.skipped == {}  # one seek back, no more
    g.positioned(ITEMS, 10, epoch=2)
    assert admit_all(g, range(10, 38), epoch=2) == list(range(10, 38))
    assert counts == []


def test_a_seek_back_starts_a_new_epoch_and_never_moves_past_the_next_record():
    g, _ = ledger()
    part = g.assign(ITEMS, 0, epoch=1)
    admit_all(g, range(0, 10))
    g.positioned(ITEMS, 10, epoch=2)
    assert admit_all(g, [10, 11], epoch=1) == []  # fetched before the seek
    assert admit_all(g, [10, 11], epoch=2) == [10, 11]
    g.positioned(ITEMS, 0, epoch=3)  # Faust back to the committed offset: duplicates, then on
    assert admit_all(g, range(0, 14), epoch=3) == [12, 13]
    with pytest.raises(RuntimeError):
        g.positioned(ITEMS, 20, epoch=4)  # 14-19 would be read by nobody
    assert part.next == 14


def test_commits_follow_contiguous_delivery_only():
    g, _ = ledger()
    part = g.assign(ITEMS, 50, epoch=1)
    admit_all(g, range(50, 70))
    assert g.committable(ITEMS) is None  # nothing delivered yet: nothing Faust acked counts
    assert not g.delivered(part, 60, 69)  # out of order: never commit past 50-59
    assert g.committable(ITEMS) is None
    assert g.delivered(part, 50, 59) and g.committable(ITEMS) == 60
    g.committed(ITEMS, 60)
    assert g.committable(ITEMS) is None


def test_a_recorded_batch_that_starts_before_the_resume_point_counts():
    g, _ = ledger()
    part = g.assign(ITEMS, 53, epoch=1)  # committed offset inside a recorded cut 50-57
    admit_all(g, range(53, 58))
    assert g.delivered(part, 50, 57) and g.committable(ITEMS) == 58


def test_a_delivery_after_the_revoke_never_reaches_the_next_assignment():
    g, _ = ledger()
    old = g.assign(ITEMS, 792, epoch=1)
    admit_all(g, range(792, 875))
    g.revoke([ITEMS])
    new = g.assign(ITEMS, 792, epoch=2)  # the same worker gets the partition back
    assert not g.delivered(old, 792, 841)  # the upload confirmed between revoke and re-assignment
    assert g.committable(ITEMS) is None and new.next == 792
    assert admit_all(g, range(792, 800), epoch=2) == list(range(792, 800))
