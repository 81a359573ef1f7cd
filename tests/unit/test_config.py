import subprocess
import sys

import pytest

from streams.config import ConfigError, load_settings, parse_settings

BASE = {"impact": {"campaign_id": 1000, "action_tracker_id": 4321},
        "connections": [{"name": "outbox", "method": "fsspec", "url": "/tmp/imref-outbox"}]}


def error_for(data) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_settings(data)
    return str(exc.value)


def test_minimal_config_gets_safe_defaults():
    s = parse_settings(BASE)
    assert s.batch.max_rows == 9_999 and s.impact.max_event_age_days == 88


@pytest.mark.parametrize("patch, key", [
    ({"batch": {"max_rows": 10_001}}, "batch.max_rows"),
    ({"batch": {"max_rows": 0}}, "batch.max_rows"),
    ({"batch": {"file_title": "receipt_daily"}}, "batch.file_title"),
    ({"batch": {"file_title": "../etc"}}, "batch.file_title"),
    ({"impact": {"campaign_id": 1000}}, "impact.action_tracker_id"),
    ({"impact": {"campaign_id": "abc", "action_tracker_id": 1}}, "impact.campaign_id"),
    ({"attribution": {"grace_s": -1}}, "attribution.grace_s"),
    ({"kafka": {"security_protocol": "SASL_SSL"}}, "kafka"),
    ({"kafka": {"session_timeout_s": 6, "heartbeat_interval_s": 6}}, "kafka"),
    ({"kafka": {"password": {"env": "IMREF_TEST_UNSET_VARIABLE"}}}, "kafka.password"),
    ({"store": "redis://"}, "store"),
    ({"batch": {"max_rowz": 5}}, "batch.max_rowz"),
    ({"connections": []}, "connections"),
    ({"connections": [{"name": "x", "method": "carrier-pigeon"}]}, "connections.0"),
    ({"connections": [{"name": "x", "method": "fsspec"}]}, "connections.0.url"),
    ({"connections": [{"name": "x", "method": "fsspec", "url": "sftp://h/x"}]}, "connections.0.url"),
    ({"connections": [{"name": "a", "method": "fsspec", "url": "/tmp/a"},
                      {"name": "a", "method": "fsspec", "url": "/tmp/b"}]}, "connection names must be unique"),
])
def test_invalid_values_name_the_key(patch, key):
    assert key in error_for({**BASE, **patch})


def test_a_negative_standby_count_is_refused_with_its_bound():
    assert "standby_replicas: Input should be greater than or equal to 0" in error_for({**BASE, "standby_replicas": -1})


@pytest.mark.parametrize("patch, standbys", [({}, 1), ({"standby_replicas": 0}, 0), ({"standby_replicas": 2}, 2)])
def test_standby_replicas_reach_the_faust_app(tmp_path, patch, standbys):
    from streams.runtime.app import create_app

    # Built, never started: nothing connects to a broker.
    app = create_app(parse_settings({**BASE, "data_dir": str(tmp_path), **patch}))
    assert app.conf.table_standby_replicas == standbys


def test_unreadable_and_non_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("impact: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)


def test_worker_refuses_to_start_and_names_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("impact: {campaign_id: 1, action_tracker_id: 2}\nbatch: {max_rows: 50000}\n"
                   "connections: [{name: o, method: fsspec, url: /tmp/x}]\n")
    run = subprocess.run([sys.executable, "-m", "streams.cli", "worker", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "batch.max_rows" in run.stderr and "9999" in run.stderr
