"""The short form of the chaos suite (CI). Full size: python -m tests.chaos.run"""
import pytest

from tests.chaos import scenarios

pytestmark = pytest.mark.integration


def check(result: scenarios.Result) -> None:
    print(f"\n{result}")
    assert result.expected > 0
    assert (result.lost, result.duplicated) == (0, 0), result
    assert result.delivered == result.expected


def test_kill_9_at_every_injected_point(broker, tmp_path):
    result = scenarios.kill_sweep(broker, tmp_path, kills=5)
    check(result)
    assert result.runs == 5
    assert result.facts["confirmed_pushed_again"] == 0, result.note
    assert result.facts["resent"] > 0, result.note


@pytest.mark.broker(scenarios.REBALANCE_NEEDS[0], reason=scenarios.REBALANCE_NEEDS[1])
def test_rebalance_under_load(broker, tmp_path):
    check(scenarios.rebalance(broker, tmp_path, cycles=3))


def test_the_same_worker_regains_its_partitions_mid_upload(broker, tmp_path):
    check(scenarios.regain_mid_upload(broker, tmp_path, cycles=3))


def test_sigterm_flushes_open_batches_and_commits_within_the_bound(broker, tmp_path):
    result = scenarios.graceful_stop(broker, tmp_path, runs=1)
    check(result)
    assert result.facts["unflushed"] == 0 and result.facts["uncommitted"] == 0, result.note


def test_poison_events_all_reach_the_dead_letter_topic(broker, tmp_path):
    result = scenarios.poison(broker, tmp_path, items=1500, ratio=0.01)
    check(result)
    assert result.facts["dead_lettered"] == result.facts["poisoned"] > 0, result.note
    assert result.facts["audited"] == result.facts["resent"] > 0, result.note


def test_destination_down_and_resets_lose_nothing_and_ack_nothing_early(broker, tmp_path):
    result = scenarios.destination_faults(broker, tmp_path, cycles=2)
    check(result)
    assert result.facts["kills"] == 1 and result.facts["resets"] == 2, result.note


def test_security_negatives_refuse_without_losing_rows_and_leak_no_secret(broker, tmp_path):
    result = scenarios.security_negatives(broker, tmp_path)
    check(result)
    assert result.runs == 4, result.note
