"""``imref-stream check`` against the real broker and the real FTP/FTPS, SFTP and SMTP servers:
every check passes on a good setup without leaving a file, and each check has a failure case
whose line says ✗ with a fix."""
from __future__ import annotations

import subprocess
import sys

import asyncssh
import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streams.config import parse_settings
from streams.tools import check
from streams.tools.devbroker import create_topics, free_port
from tests.support.harness import ROOT
from tests.support.servers import PASSWORD, USER, Certs, FtpServer, SftpServer, SmtpServer

pytestmark = pytest.mark.integration
IMPACT = {"campaign_id": 1000, "action_tracker_id": 4321}


@pytest.fixture(autouse=True)
def secrets(monkeypatch):
    monkeypatch.setenv("IMREF_TEST_PASSWORD", PASSWORD)
    monkeypatch.setenv("IMREF_TEST_WRONG_PASSWORD", "not-the-password")
    monkeypatch.setattr(check, "TIMEOUT_MS", 2000)  # the failure cases wait for timeouts


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs.make(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def client_key():
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
def sftp(tmp_path, client_key):
    with SftpServer(tmp_path / "sftp-root", tmp_path / "known_hosts", client_key.export_public_key().decode()) as s:
        yield s


def config(broker_or_port, app_id: str, connections: list[dict], **sections) -> dict:
    brokers = [f"kafka://127.0.0.1:{broker_or_port}" if isinstance(broker_or_port, int)
               else f"kafka://{broker_or_port.bootstrap}"]
    return {"app_id": app_id, "kafka": {"brokers": brokers},
            "topics": {"clicks": f"{app_id}.clicks", "order_items": f"{app_id}.order-items",
                       "dead_letter": f"{app_id}.dead-letter", "unattributed": f"{app_id}.unattributed"},
            "impact": IMPACT, "connections": connections, **sections}


def outbox(tmp_path) -> dict:
    return {"name": "outbox", "method": "fsspec", "url": str(tmp_path / "outbox")}


def run(tmp_path, data: dict) -> tuple[int, list[str]]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    lines: list[str] = []
    return check.run(str(path), out=lines.append), lines


def line(lines: list[str], what: str) -> str:
    [found] = [x for x in lines if x[2:].startswith(what)]
    return found


def connection_line(data: dict) -> str:
    """The line of the first connection."""
    return str(next(check.connection_checks(parse_settings(data))))


def test_a_good_setup_passes_every_check_and_leaves_no_file(tmp_path, broker, app_id, certs, sftp):
    create_topics(broker.bootstrap, [f"{app_id}.clicks", f"{app_id}.order-items"], 4)
    smtp_cfg = {"name": "impact e-mail", "method": "email", "host": "127.0.0.1", "sender": "shop@shop.example",
                "to": "conversions@impact.example", "username": USER, "password": {"env": "IMREF_TEST_PASSWORD"},
                "ca_file": str(certs.ca_file)}
    with FtpServer(tmp_path / "impact", certs) as impact, FtpServer(tmp_path / "partner", certs) as partner, \
            SmtpServer(certs) as smtp:
        ftps = {"host": "127.0.0.1", "username": USER, "password": {"env": "IMREF_TEST_PASSWORD"},
                "ca_file": str(certs.ca_file), "method": "ftps"}
        code, lines = run(tmp_path, config(broker, app_id, [
            outbox(tmp_path),
            {"name": "impact FTPS", "port": impact.port, **ftps},
            {"name": "partner FTPS", "port": partner.port, "methodology": "pull_from_3rd_party", **ftps},
            {"name": "partner SFTP", "method": "sftp", "methodology": "pull_from_3rd_party", "host": "127.0.0.1",
             "port": sftp.port, "username": USER, "password": {"env": "IMREF_TEST_PASSWORD"},
             "known_hosts": str(sftp.known_hosts)},
            {**smtp_cfg, "port": smtp.port}]))
    assert code == 0, "\n".join(lines)
    assert all(x.startswith("✓ ") for x in lines)
    assert "4 partitions each" in line(lines, "co-partitioning")
    assert "no committed offsets" in line(lines, f"consumer group {app_id}")
    assert "written, renamed and removed" in line(lines, "connection 'partner SFTP'")
    assert "no mail sent" in line(lines, "connection 'impact e-mail'")
    # nothing at all where impact processes files, no probe left where it pulls from
    for folder in ("impact", "partner", "outbox", "sftp-root"):
        assert list((tmp_path / folder).iterdir()) == [], folder
    assert "STOR" not in impact.commands and partner.commands.count("STOR") == 1
    assert smtp.messages == []


def test_the_command_line_prints_the_lines_and_exits_non_zero_on_a_cross(tmp_path, broker, app_id):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config(broker, app_id, [outbox(tmp_path)])))  # topics not created
    done = subprocess.run([sys.executable, "-m", "streams.cli", "check", "--config", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"✗ topic {app_id}.clicks: does not exist" in done.stdout and "→ fix: create it with 4 partitions" in done.stdout
    assert "✓ connection 'outbox'" in done.stdout


def test_an_invalid_config_is_a_cross_with_exit_2(tmp_path, broker, app_id):
    code, lines = run(tmp_path, config(broker, app_id, [outbox(tmp_path)], batch={"max_rows": 50_000}))
    assert code == 2 and lines[0].startswith("✗ config:") and "batch.max_rows" in lines[0]


def test_kafka_unreachable(tmp_path, app_id):
    code, lines = run(tmp_path, config(free_port(), app_id, [outbox(tmp_path)]))
    assert code == 1
    assert line(lines, "kafka").startswith("✗ kafka: cannot connect") and "kafka.brokers" in line(lines, "kafka")
    assert line(lines, "connection 'outbox'").startswith("✓")  # the connections are checked all the same


def test_kafka_with_tls_against_a_plaintext_listener(tmp_path, broker, app_id):
    data = config(broker, app_id, [outbox(tmp_path)])
    data["kafka"]["security_protocol"] = "SSL"
    code, lines = run(tmp_path, data)
    # Tansu leaves the TLS handshake unanswered ("no answer"); noida-db, like Kafka, closes the
    # connection on it ("cannot connect"): either way the fix names security_protocol.
    assert code == 1 and line(lines, "kafka").startswith("✗ kafka: ") and "security_protocol" in lines[1]


def test_partition_counts_that_differ_break_co_partitioning(tmp_path, broker, app_id):
    create_topics(broker.bootstrap, [f"{app_id}.clicks"], 4)
    create_topics(broker.bootstrap, [f"{app_id}.order-items"], 2)
    code, lines = run(tmp_path, config(broker, app_id, [outbox(tmp_path)]))
    assert code == 1
    assert line(lines, "co-partitioning").startswith(f"✗ co-partitioning: {app_id}.order-items has 2")


def test_a_committed_offset_beyond_the_log_end(tmp_path, broker, app_id):
    create_topics(broker.bootstrap, [f"{app_id}.clicks", f"{app_id}.order-items"], 4)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=app_id, enable_auto_commit=False)
    consumer.commit({TopicPartition(f"{app_id}.order-items", 1): OffsetAndMetadata(50, "", -1)})
    consumer.close()
    code, lines = run(tmp_path, config(broker, app_id, [outbox(tmp_path)]))
    group = line(lines, f"consumer group {app_id}")
    assert code == 1 and group.startswith(f"✗ consumer group {app_id}: committed offset 50 of {app_id}.order-items[1]")
    assert "--reset-offsets" in group


# -- one failure per connection check ----------------------------------------------------------

def ftps(server, certs, **extra) -> dict:
    return {"name": "c", "method": "ftps", "host": "127.0.0.1", "port": server.port, "username": USER,
            "password": {"env": "IMREF_TEST_PASSWORD"}, "ca_file": str(certs.ca_file), **extra}


def alone(connection: dict) -> dict:
    return {"impact": IMPACT, "connections": [connection] + ([] if connection.get("methodology") != "pull_from_impact"
                                                             else [{"name": "o", "method": "fsspec", "url": "/unused"}])}


def test_ftps_certificate_not_trusted(tmp_path, certs):
    with FtpServer(tmp_path / "impact", Certs.make(tmp_path / "other", "other")) as server:
        result = connection_line(alone(ftps(server, certs)))
    assert result.startswith("✗ connection 'c'") and "SSLCertVerificationError" in result and "set ca_file" in result


def test_ftps_login_refused(tmp_path, certs):
    with FtpServer(tmp_path / "impact", certs) as server:
        result = connection_line(alone(ftps(server, certs, password={"env": "IMREF_TEST_WRONG_PASSWORD"})))
    assert result.startswith("✗") and "login failed" in result and "check username and the password" in result


def test_partner_ftp_folder_not_writable(tmp_path, certs):
    with FtpServer(tmp_path / "partner", certs, perm="elr") as server:
        result = connection_line(alone(ftps(server, certs, methodology="pull_from_3rd_party")))
    assert result.startswith("✗") and "write probe file failed" in result and "write and rename" in result
    assert list((tmp_path / "partner").iterdir()) == []


def sftp_cfg(server, **extra) -> dict:
    return {"name": "c", "method": "sftp", "host": "127.0.0.1", "port": server.port, "username": USER,
            "password": {"env": "IMREF_TEST_PASSWORD"}, "known_hosts": str(server.known_hosts), **extra}


def test_sftp_host_key_not_pinned(sftp):
    sftp.pin(asyncssh.generate_private_key("ssh-ed25519"))  # known_hosts holds another server's key
    result = connection_line(alone(sftp_cfg(sftp)))
    assert result.startswith("✗") and "ssh-keyscan" in result and str(sftp.known_hosts) in result


def test_partner_sftp_folder_not_writable(sftp):
    result = connection_line(alone(sftp_cfg(sftp, methodology="pull_from_3rd_party", directory="/missing")))
    assert result.startswith("✗") and "write probe file failed" in result


def test_sftp_pull_from_impact_lists_and_fails_on_a_missing_folder(sftp):
    (sftp.root / "Performance_Bonus_Detail_1.csv").write_text("a\n1\n")
    pull = sftp_cfg(sftp, direction="out_of_impact", data_type="performance_bonus_detail",
                    methodology="pull_from_impact", file_pattern="Performance_Bonus_Detail_*.csv", target_topic="t")
    assert connection_line(alone(pull)).endswith("1 file(s) in . match Performance_Bonus_Detail_*.csv")
    result = connection_line(alone({**pull, "directory": "/missing"}))
    assert result.startswith("✗") and "list failed" in result and "'/missing' does not exist" in result


def test_email_login_refused(certs):
    with SmtpServer(certs) as smtp:
        result = connection_line(alone({
            "name": "c", "method": "email", "host": "127.0.0.1", "port": smtp.port, "sender": "shop@shop.example",
            "to": "conversions@impact.example", "username": USER, "password": {"env": "IMREF_TEST_WRONG_PASSWORD"},
            "ca_file": str(certs.ca_file)}))
    assert result.startswith("✗") and "login failed" in result and smtp.messages == []


def test_folder_that_cannot_be_made(tmp_path):
    (tmp_path / "a-file").write_text("")
    result = connection_line(alone({"name": "c", "method": "fsspec", "url": str(tmp_path / "a-file" / "outbox")}))
    assert result.startswith("✗ connection 'c'") and "must be able to create, write and rename" in result
