"""The sequences the positions of the commit gate guard, one test each (streams/delivery/positions.py).
Each was seen on a real consumer before its guard existed (README: Reliability; issue #11)."""
from collections import namedtuple
from types import SimpleNamespace

from streams.delivery.positions import Positions

TP = namedtuple("TP", "topic partition")
ITEMS, OTHER = TP("items", 0), TP("items", 1)


def records(*offsets):
    return [SimpleNamespace(offset=o) for o in offsets]


def handed_out(positions, tp, batch, gaps=None):
    report = (lambda *gap: gaps.append(gap)) if gaps is not None else (lambda *gap: None)
    return [r.offset for r in positions.fetched(tp, batch, report)]


def test_a_fetch_that_began_before_a_seek_and_returned_after_it_is_dropped():
    p = Positions()
    ticket = p.before_fetch()
    with p.seeking([ITEMS]):
        pass
    p.positioned({ITEMS: 10})
    assert p.overlapped(ticket, ITEMS)
    assert not p.overlapped(ticket, OTHER)  # nobody sought that one


def test_a_fetch_that_returns_while_a_seek_runs_is_dropped():
    p = Positions()
    ticket = p.before_fetch()
    with p.seeking([OTHER]):  # epochs of ITEMS unchanged, but a seek runs in the consumer thread
        assert p.overlapped(ticket, ITEMS)


def test_a_fetch_that_began_while_a_seek_ran_is_dropped_even_after_it():
    p = Positions()
    with p.seeking([OTHER]):
        ticket = p.before_fetch()
    assert p.overlapped(ticket, ITEMS)
    assert not p.overlapped(p.before_fetch(), ITEMS)


def test_records_handed_out_across_a_seek_are_cut_off_at_the_seek():
    p = Positions()
    p.positioned({ITEMS: 0})
    fetched = p.fetched(ITEMS, records(0, 1, 2, 3), lambda *gap: None)
    taken = []
    for record in fetched:
        taken.append(record.offset)
        if record.offset == 1:  # the handler awaited, and the partition was sought meanwhile
            with p.seeking([ITEMS]):
                pass
    assert taken == [0, 1]
    assert fetched.epoch < p.epoch(ITEMS)


def test_a_jump_is_reported_with_whether_it_is_inside_one_fetch():
    p = Positions()
    epoch = p.positioned({ITEMS: 5})[ITEMS]
    gaps = []
    assert handed_out(p, ITEMS, records(7, 8, 11), gaps) == [7, 8, 11]
    assert gaps == [(ITEMS, epoch, 5, 7, False), (ITEMS, epoch, 9, 11, True)]
    assert handed_out(p, ITEMS, records(12, 13), gaps) == [12, 13] and len(gaps) == 2


def test_after_a_dropped_fetch_the_next_one_is_not_taken_for_a_jump():
    # The dropped batch moved the fetch position: where the next fetch starts is no evidence of
    # offsets missing from the log.
    p = Positions()
    p.positioned({ITEMS: 5})
    p.dropped(ITEMS, owned=True)
    gaps = []
    assert handed_out(p, ITEMS, records(40, 41), gaps) == [40, 41] and gaps == []


def test_a_stale_fetch_after_a_revoke_positions_the_partition_again_once_assigned():
    p = Positions()
    p.revoked()
    ticket = p.before_fetch()
    with p.seeking([ITEMS]):
        pass
    assert p.overlapped(ticket, ITEMS)
    p.dropped(ITEMS, owned=False)  # no ledger: nobody can seek it back now
    p.assigned()
    assert p.take_stale([OTHER]) == set()
    assert p.take_stale([ITEMS, OTHER]) == {ITEMS}
    assert p.take_stale([ITEMS]) == set()  # once


def test_a_seek_begun_in_an_older_assignment_does_not_count_for_the_next():
    p = Positions()
    p.assigned()
    ticket = p.assignment()
    assert p.current(ticket)
    p.revoked()
    assert not p.current(ticket)  # revoked meanwhile
    p.assigned()
    assert not p.current(ticket)  # and assigned again: still not the seek's assignment
    assert p.current(p.assignment())


def test_a_seek_begun_before_a_revoke_is_not_current_even_before_the_next_assignment():
    p = Positions()
    p.assigned()
    ticket = p.assignment()
    p.revoked()
    assert not p.current(ticket) and not p.current(p.assignment())


def test_after_a_seek_to_an_unknown_position_the_next_fetch_is_not_taken_for_a_jump():
    # Faust's own seek to the committed offsets: where it puts the fetch is not known here.
    p = Positions()
    p.positioned({ITEMS: 5})
    assert handed_out(p, ITEMS, records(5, 6)) == [5, 6]
    with p.seeking([ITEMS]):
        pass
    gaps = []
    assert handed_out(p, ITEMS, records(20, 21), gaps) == [20, 21] and gaps == []
