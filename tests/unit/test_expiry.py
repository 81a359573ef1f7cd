"""The expiry rules of the table sweep: what the attribution window and impact's locking period
can still use stays, the rest goes."""
from datetime import datetime, timedelta, timezone

from streams.core.attribution import attribute
from streams.config import parse_settings
from streams.core.expiry import DAY, click_rule, order_rule

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
T = NOW.timestamp()
WINDOW_S, GRACE_S, LATE_S = 30 * DAY, 30.0, 1 * DAY
clicks = click_rule(WINDOW_S, GRACE_S, LATE_S)


def test_a_history_inside_the_window_is_kept_as_it_is():
    history = [[T - 29 * DAY, "A"], [T - DAY, "B"], [T + 5, "C"]]
    assert clicks(history, T) is history


def test_clicks_past_window_grace_and_late_margin_are_dropped_the_rest_kept():
    edge = T - WINDOW_S - GRACE_S - LATE_S
    history = [[edge - 1, "OLD"], [edge, "EDGE"], [T - DAY, "NEW"]]
    assert clicks(history, T) == [[edge, "EDGE"], [T - DAY, "NEW"]]


def test_a_history_with_only_expired_clicks_is_deleted():
    assert clicks([[T - 40 * DAY, "A"], [T - 32 * DAY, "B"]], T) is None


def test_an_item_that_occurs_now_or_a_day_late_attributes_as_before_the_sweep():
    # What the sweep keeps is all attribute() can use for an item up to keep_late_days old.
    history = [[T - 40 * DAY, "A"], [T - 31 * DAY + 60, "B"], [T - 10 * DAY, "C"]]
    kept = clicks(history, T)
    for item_at in (T, T - DAY / 2, T - DAY):
        assert attribute(kept, item_at, WINDOW_S, GRACE_S) == attribute(history, item_at, WINDOW_S, GRACE_S)


def order(reported: datetime, changed: datetime | None = None) -> dict:
    value = {"reported_at": reported.isoformat(timespec="seconds"), "items": {}, "applied": {}}
    if changed is not None:
        value["changed_at"] = changed.isoformat(timespec="seconds")
    return value


def test_an_order_is_kept_until_keep_days_after_it_was_reported():
    keep = order_rule(90 * DAY)
    young = order(NOW - timedelta(days=89, hours=23))
    assert keep(young, T) is young
    assert keep(order(NOW - timedelta(days=90, seconds=1)), T) is None


def test_a_recent_change_keeps_an_old_order():
    keep = order_rule(90 * DAY)
    changed = order(NOW - timedelta(days=120), changed=NOW - timedelta(days=1))
    assert keep(changed, T) is changed
    assert keep(order(NOW - timedelta(days=120), changed=NOW - timedelta(days=91)), T) is None


def test_report_times_with_other_zones_compare_as_instants():
    keep = order_rule(DAY)
    value = {"reported_at": (NOW - timedelta(hours=23)).astimezone(timezone(timedelta(hours=-8))).isoformat()}
    assert keep(value, T) is value


def test_default_keep_days_covers_impacts_longest_month_based_lock_of_1_month_27_days():
    s = parse_settings({"impact": {"campaign_id": 1, "action_tracker_id": 1},
                        "connections": [{"name": "o", "method": "fsspec", "url": "/tmp/o"}]})
    # An action of 1 December locks 1 month and 27 days after the end of December: 28 February.
    event = datetime(2026, 12, 1, tzinfo=timezone.utc)
    locks = datetime(2027, 2, 28, tzinfo=timezone.utc)
    assert (locks - event).days <= s.modifications.keep_days
    assert s.sweep_interval_s == 3600 and s.attribution.keep_late_days == 1
