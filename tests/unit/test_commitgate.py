"""The commit gate's ledger: records admitted strictly in order, commits only up to what was delivered."""
from faust.types import TP

from streams.commitgate import Ledger

ITEMS = TP("items", 3)


def ledger():
    counts, seeks = [], []
    g = Ledger({"items"}, count=lambda what, topic: counts.append((what, topic)))
    g.seek = seeks.append
    return g, counts, seeks


def admit_all(g, offsets):
    return [o for o in offsets if g.admit(ITEMS, o) is not None]


def test_admits_in_order_from_the_assigned_offset_and_drops_what_it_already_took():
    g, counts, _ = ledger()
    g.assign(ITEMS, 10)
    assert admit_all(g, [10, 11, 12, 11, 12, 13]) == [10, 11, 12, 13]
    assert counts == [("redelivered", "items"), ("redelivered", "items")]


def test_other_topics_and_unassigned_partitions_are_not_admitted():
    g, _, _ = ledger()
    assert not g.gates(TP("clicks", 3)) and g.gates(ITEMS)
    assert g.admit(ITEMS, 0) is None  # fetched before a revoke, or before the assignment


def test_a_stale_record_past_the_expected_offset_makes_it_read_again_and_is_never_taken():
    # The bug of the issue: records 842.. were dropped at revoke, a stale fetch delivers 875 first.
    g, counts, seeks = ledger()
    part = g.assign(ITEMS, 842)
    assert admit_all(g, [875, 876, 877]) == []
    assert seeks == [part] and part.next == 842  # one seek back to 842, nothing skipped
    g.armed(part)
    assert admit_all(g, range(842, 880)) == list(range(842, 880))
    assert counts == [] and part.skipped == {}


def test_a_jump_is_accepted_only_when_the_read_from_the_expected_offset_starts_there():
    g, counts, seeks = ledger()
    part = g.assign(ITEMS, 100)
    assert g.admit(ITEMS, 105) is None
    assert g.admit(ITEMS, 105) is None  # the seek has not taken effect yet: still stale
    g.armed(part)
    assert g.admit(ITEMS, 105) is part  # 100-104 are not in the log (e.g. retention)
    assert counts == [("resume_beyond_committed", "items")]
    assert len(seeks) == 1
    assert admit_all(g, [106, 107]) == [106, 107]
    assert g.delivered(part, 100, 107) and g.committable(ITEMS) == 108


def test_a_gap_after_the_resume_is_counted_apart_and_skipped_at_a_batch_boundary():
    g, counts, _ = ledger()
    part = g.assign(ITEMS, 0)
    admit_all(g, [0, 1, 2])
    assert g.admit(ITEMS, 4) is None  # offset 3: a transaction marker
    g.armed(part)
    assert g.admit(ITEMS, 4) is part
    assert counts == [("offset_gap", "items")]
    assert g.delivered(part, 0, 2) and g.committable(ITEMS) == 3
    assert g.delivered(part, 4, 4) and g.committable(ITEMS) == 5


def test_commits_follow_contiguous_delivery_only():
    g, _, _ = ledger()
    part = g.assign(ITEMS, 50)
    admit_all(g, range(50, 70))
    assert g.committable(ITEMS) is None  # nothing delivered yet: nothing Faust acked counts
    assert not g.delivered(part, 60, 69)  # out of order: never commit past 50-59
    assert g.committable(ITEMS) is None
    assert g.delivered(part, 50, 59) and g.committable(ITEMS) == 60
    g.committed(ITEMS, 60)
    assert g.committable(ITEMS) is None


def test_a_recorded_batch_that_starts_before_the_resume_point_counts():
    g, _, _ = ledger()
    part = g.assign(ITEMS, 53)  # committed offset inside a recorded cut 50-57
    admit_all(g, range(53, 58))
    assert g.delivered(part, 50, 57) and g.committable(ITEMS) == 58


def test_a_delivery_after_the_revoke_never_reaches_the_next_assignment():
    g, _, _ = ledger()
    old = g.assign(ITEMS, 792)
    admit_all(g, range(792, 875))
    g.revoke([ITEMS])
    new = g.assign(ITEMS, 792)  # the same worker gets the partition back
    assert not g.delivered(old, 792, 841)  # the upload confirmed between revoke and re-assignment
    assert g.committable(ITEMS) is None and new.next == 792
    assert admit_all(g, range(792, 800)) == list(range(792, 800))


def test_a_jump_is_checked_again_from_any_record_that_arrives_after_the_seek():
    # 105 was stale; after the seek the log turns out to start at 103: 103 and 104 must be taken.
    g, counts, seeks = ledger()
    part = g.assign(ITEMS, 100)
    assert g.admit(ITEMS, 105) is None
    g.armed(part)
    assert g.admit(ITEMS, 106) is None and part.probe == 106  # still stale: seek again
    g.armed(part)
    assert g.admit(ITEMS, 103) is None and part.probe == 103
    g.armed(part)
    assert admit_all(g, [103, 104, 105]) == [103, 104, 105]
    assert len(seeks) == 3 and counts == [("resume_beyond_committed", "items")]
