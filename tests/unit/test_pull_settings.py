import importlib.util

import pytest

from streams.config import ConfigError, parse_settings

BASE = {"impact": {"campaign_id": 1000, "action_tracker_id": 4321}}
OUTBOX = {"name": "outbox", "method": "fsspec", "url": "/tmp/imref-outbox"}


@pytest.fixture
def pull(monkeypatch, tmp_path):
    monkeypatch.setenv("IMREF_TEST_SECRET", "x")
    (tmp_path / "known_hosts").write_text("")
    return {"name": "impact reports", "direction": "out_of_impact", "data_type": "reports",
            "methodology": "pull_from_impact", "method": "sftp", "host": "sftp.impact.example",
            "username": "u", "password": {"env": "IMREF_TEST_SECRET"}, "known_hosts": str(tmp_path / "known_hosts"),
            "file_pattern": "Performance_Bonus_Detail_*.csv", "target_topic": "impact.reports"}


def error_for(connection: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_settings({**BASE, "connections": [OUTBOX, connection]})
    return str(exc.value)


def test_a_pull_connection_with_a_pattern_and_one_target_is_valid(pull):
    s = parse_settings({**BASE, "connections": [OUTBOX, pull]}).connections[1]
    assert (s.methodology, s.file_pattern, s.target_topic, s.target_url, s.poll_interval_s) == \
        ("pull_from_impact", "Performance_Bonus_Detail_*.csv", "impact.reports", None, 60.0)


def test_a_pull_connection_may_store_files_at_an_fsspec_url_instead(pull):
    target = {k: v for k, v in pull.items() if k != "target_topic"}
    s = parse_settings({**BASE, "connections": [OUTBOX, {**target, "target_url": "file:///var/lib/imref/reports"}]})
    assert s.connections[1].target_url == "file:///var/lib/imref/reports"


def test_storage_options_go_with_target_url_and_only_with_it(pull):
    target = {k: v for k, v in pull.items() if k != "target_topic"}
    options = {"endpoint_url": "https://objects.shop.example", "client_kwargs": {"region_name": "eu-west-1"}}
    s = parse_settings({**BASE, "connections": [OUTBOX, {**target, "target_url": "/var/lib/imref/reports",
                                                         "storage_options": options}]})
    assert s.connections[1].storage_options == options
    assert "storage_options: only with target_url" in error_for({**pull, "storage_options": options})


@pytest.mark.parametrize("options, key", [({"key": "AKIA…", "secret": "…"}, "key"),
                                          ({"client_kwargs": {"aws_secret_access_key": "…"}},
                                           "client_kwargs.aws_secret_access_key"),
                                          ({"account_key": "…"}, "account_key")])
def test_credentials_in_storage_options_are_refused_for_both_fsspec_targets(pull, options, key):
    target = {k: v for k, v in pull.items() if k != "target_topic"}
    message = error_for({**target, "target_url": "/var/lib/imref/reports", "storage_options": options})
    assert f"connections.1.storage_options: Value error, {key}: a credential" in message
    assert f"connections.1.storage_options: Value error, {key}: a credential" in \
        error_for({**OUTBOX, "name": "bucket", "storage_options": options})


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed here")
def test_a_target_whose_fsspec_backend_is_not_installed_stops_start_up_naming_the_key(pull):
    target = {k: v for k, v in pull.items() if k != "target_topic"}
    assert "target_url: s3:// needs a package this installation lacks: Install s3fs" in \
        error_for({**target, "target_url": "s3://shop-reports/impact/"})


def test_without_a_pattern_the_error_names_file_pattern(pull):
    message = error_for({k: v for k, v in pull.items() if k != "file_pattern"})
    assert "connections.1: Value error, file_pattern: required with methodology pull_from_impact" in message


def test_a_pattern_with_a_folder_is_refused(pull):
    assert "file_pattern: a file name pattern" in error_for({**pull, "file_pattern": "reports/*.csv"})


@pytest.mark.parametrize("targets", [{"target_url": "/var/lib/imref/reports"}, {"target_topic": None}])
def test_exactly_one_target(pull, targets):
    assert "target_topic, target_url: give exactly one" in error_for({**pull, **targets})


def test_an_sftp_target_url_is_refused_as_for_method_fsspec(pull):
    target = {k: v for k, v in pull.items() if k != "target_topic"}
    assert "target_url: sftp:// is not allowed here" in error_for({**target, "target_url": "sftp://host/dir"})


@pytest.mark.parametrize("key, value", [("file_pattern", "*.csv"), ("poll_interval_s", 5),
                                        ("target_topic", "t"), ("target_url", "/tmp/x"),
                                        ("storage_options", {"auto_mkdir": True})])
def test_pull_keys_on_a_push_connection_are_refused_by_name(pull, key, value):
    push = {k: v for k, v in pull.items()
            if k not in ("direction", "data_type", "methodology", "file_pattern", "target_topic")}
    assert f"connections.1: Value error, {key}: only for methodology pull_from_impact" in error_for({**push, key: value})


@pytest.mark.parametrize("change, message", [
    ({"direction": "into_impact"}, "direction: out_of_impact goes with methodology pull_from_impact"),
    ({"methodology": "push_to_impact", "file_pattern": None, "target_topic": None},
     "direction: out_of_impact goes with methodology pull_from_impact"),
    ({"data_type": "conversions"}, "data_type: impact offers reports or performance_bonus_detail to pull"),
    ({"poll_interval_s": 0}, "connections.1.poll_interval_s: Input should be greater than 0"),
])
def test_direction_data_type_and_interval_must_fit_impacts_model(pull, change, message):
    connection = {k: v for k, v in {**pull, **change}.items() if v is not None}
    assert message in error_for(connection)


def test_direction_out_of_impact_is_refused_for_a_transport_that_cannot_pull(pull):
    message = error_for({**OUTBOX, "name": "bucket", "direction": "out_of_impact"})
    assert "direction: out_of_impact goes with methodology pull_from_impact" in message
