from streams.core.attribution import attribute, remember

DAY = 86400.0


def test_latest_click_before_the_item_wins():
    h = remember(None, 100.0, "A", 4, 30 * DAY)
    h = remember(h, 200.0, "B", 4, 30 * DAY)
    assert attribute(h, 250.0, 30 * DAY, 10) == "B"
    assert attribute(h, 150.0, 30 * DAY, 10) == "A"


def test_a_click_after_the_order_does_not_take_it_over():
    h = remember(remember(None, 100.0, "A", 4, DAY), 500.0, "LATER", 4, DAY)
    assert attribute(h, 300.0, DAY, 30) == "A"


def test_click_slightly_after_the_item_counts_within_skew_only():
    h = remember(None, 105.0, "A", 4, DAY)
    assert attribute(h, 100.0, DAY, 10) == "A"
    assert attribute(h, 100.0, DAY, 4) is None


def test_click_older_than_the_window_does_not_attribute():
    h = remember(None, 0.0, "OLD", 4, 30 * DAY)
    assert attribute(h, 30 * DAY + 1, 30 * DAY, 10) is None
    assert attribute(h, 30 * DAY, 30 * DAY, 10) == "OLD"


def test_history_is_bounded_and_deduplicated():
    h = None
    for t in range(10):
        h = remember(h, float(t), f"R{t}", 3, DAY)
    h = remember(h, 9.0, "R9", 3, DAY)
    assert [r for _, r in h] == ["R7", "R8", "R9"]
    h = remember(h, 9.0 + 2 * DAY, "NEW", 3, DAY)
    assert [r for _, r in h] == ["NEW"]


def test_history_survives_json_round_trip_as_lists():
    h = [[100.0, "A"], [200.0, "B"]]
    assert attribute(h, 150.0, DAY, 0) == "A"
    assert remember(h, 300.0, "C", 4, DAY)[-1] == (300.0, "C")
