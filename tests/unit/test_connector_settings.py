import pytest

from streams.config import ConfigError, parse_settings

BASE = {"impact": {"campaign_id": 1000, "action_tracker_id": 4321}}


@pytest.fixture(autouse=True)
def secret(monkeypatch, tmp_path):
    monkeypatch.setenv("IMREF_TEST_SECRET", "x")
    (tmp_path / "known_hosts").write_text("")
    return tmp_path


def error_for(*connections) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_settings({**BASE, "connections": list(connections)})
    return str(exc.value)


FTPS = {"name": "impact ftp", "method": "ftps", "username": "u", "password": {"env": "IMREF_TEST_SECRET"}}


def test_impact_ftps_defaults_to_batch_impact_com():
    s = parse_settings({**BASE, "connections": [FTPS]})
    ftp = s.connections[0]
    assert (ftp.host, ftp.port, ftp.methodology) == ("batch.impact.com", 21, "push_to_impact")


@pytest.mark.parametrize("connection, message", [
    ({**FTPS, "password": {"env": "IMREF_TEST_MISSING"}}, "connections.0.password: Value error, environment variable IMREF_TEST_MISSING is not set"),
    ({k: v for k, v in FTPS.items() if k != "password"}, "connections.0.password: Field required"),
    ({**FTPS, "password": {"file": "/nonexistent/secret"}}, "secret file /nonexistent/secret does not exist"),
    ({**FTPS, "password": "plain-text-in-config"}, "connections.0.password"),
    ({**FTPS, "method": "ftp"}, "method ftp sends the password in clear text"),
    ({**FTPS, "allow_plaintext": True}, "allow_plaintext contradicts method ftps"),
    ({**FTPS, "method": "telnet"}, "connections.0: Input tag 'telnet'"),
    ({**FTPS, "methodology": "pull_from_impact"}, "connections.0.methodology"),
    ({"name": "s", "method": "sftp", "host": "h", "username": "u", "known_hosts": "KH"}, "give password or private_key"),
    ({"name": "s", "method": "sftp", "host": "h", "username": "u", "password": {"env": "IMREF_TEST_SECRET"},
      "known_hosts": "/nonexistent/known_hosts"}, "known_hosts file /nonexistent/known_hosts does not exist"),
    ({"name": "m", "method": "email", "host": "smtp", "sender": "a@shop.example",
      "to": "one@impact.example, two@impact.example"}, "give exactly one address"),
    ({"name": "m", "method": "email", "host": "smtp", "sender": "a@shop.example", "to": "one@impact.example",
      "username": "u"}, "username and password go together"),
    ({"name": "m", "method": "email", "host": "smtp", "sender": "a@shop.example", "to": "one@impact.example",
      "tls": "none"}, "connections.0.tls"),
])
def test_invalid_connections_stop_start_up_with_the_key(connection, message, secret):
    if connection.get("known_hosts") == "KH":
        connection = {**connection, "known_hosts": str(secret / "known_hosts")}
    assert message in error_for(connection)
