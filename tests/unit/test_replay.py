from streams.tools.replay import DUPLICATE, NEW, TWIN, Delivered, merge_cuts


def test_merge_cuts_keeps_every_recorded_cut_and_the_later_of_two_overlapping():
    # The worker's lists over time: each drops the cuts below the committed offset of its moment;
    # [6, 9] was recorded by a worker that lost the partition, [6, 8] by the one that got it.
    lists = [[[0, 2]], [[0, 2], [3, 5]], [[3, 5], [6, 9]], [[6, 8]], [[6, 8], [9, 12]]]
    assert merge_cuts(lists) == [(0, 2), (3, 5), (6, 8), (9, 12)]


def test_merge_cuts_of_an_empty_changelog():
    assert merge_cuts([]) == []


def test_widen_takes_in_the_whole_of_every_recorded_cut_the_range_touches():
    d = Delivered(committed=20, cuts=[(10, 14), (15, 19)])
    assert d.widen(12, 16) == (10, 19)
    assert d.widen(15, 19) == (15, 19)
    assert d.widen(3, 8) == (3, 8)
    assert d.widen(5, 25) == (5, 25)


def test_unknown_is_what_lies_below_the_committed_offset_outside_the_recorded_cuts():
    d = Delivered(committed=20, cuts=[(10, 14), (15, 19), (20, 23)])
    assert d.unknown(0, 30) == [(0, 9)]
    assert d.unknown(10, 30) == []
    d = Delivered(committed=30, cuts=[(10, 14), (20, 23)])
    assert d.unknown(5, 40) == [(5, 9), (15, 19), (24, 29)]
    assert d.unknown(12, 21) == [(15, 19)]
    assert Delivered(committed=0).unknown(0, 9) == []
    assert Delivered(committed=5).unknown(0, 9) == [(0, 4)]


def test_a_file_is_the_worker_s_twin_a_duplicate_or_new():
    d = Delivered(committed=20, cuts=[(10, 14)])
    assert d.note(10, 14) == TWIN
    assert d.note(10, 12) == DUPLICATE  # inside a cut, but not the cut: another name
    assert d.note(0, 9) == DUPLICATE
    assert d.note(18, 25) == DUPLICATE
    assert d.note(20, 25) == NEW


def test_a_replay_applies_one_order_one_file_from_the_orders_the_worker_recorded():
    # The worker took O1 at offset 0 into its file; checkout re-sent O1 at offset 2 and sent O2.
    # A replay of offsets 0-3 must write O1 once, refuse its copy, and keep O2's record new.
    from types import SimpleNamespace

    import orjson

    from streams.config import parse_settings
    from streams.core.orders import line_identities
    from streams.tools.replay import Summary, _process

    settings = parse_settings({"impact": {"campaign_id": 1, "action_tracker_id": 2},
                               "connections": [{"name": "o", "method": "fsspec", "url": "/tmp/unused"}]})
    item = {"order_id": "O1", "customer_id": "C1", "occurred_at": "2026-12-06T10:00:00+00:00", "currency": "EUR",
            "amount": "1.00", "category": "c", "sku": "-S_1", "quantity": 1, "im_ref": "-Qi_1"}
    values = [orjson.dumps(item), orjson.dumps({**item, "sku": "S2"}), orjson.dumps(item),
              orjson.dumps({**item, "order_id": "O2"})]
    records = [SimpleNamespace(partition=0, offset=n, timestamp=1_796_000_000_000, key=b"C1", value=v)
               for n, v in enumerate(values)]
    taken = {"O1": {"files": ["conversions_x.csv"], "more": False, "at": 0.0,
                    "lines": dict.fromkeys(line_identities([item], values[0]), 0)}}
    files, summary = [], Summary()
    _process(settings, records, {}, summary, SimpleNamespace(update=lambda: None),
             {0: Delivered(committed=0, orders=taken)}, files.append)
    assert [[(r[3], r[9]) for r in b.rows()] for b in files] == [[("O1", "-S_1"), ("O2", "-S_1")]]
    assert summary.refused == {"order_already_reported": 1, "duplicate": 1}
