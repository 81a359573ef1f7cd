"""Every transport against a real server on loopback: the file arrives byte-identical, TLS and
host keys are verified, a reset mid-upload is retried and never leaves a partial file visible."""
from __future__ import annotations

import asyncio

import asyncssh
import pytest
from pydantic import TypeAdapter

from connectors import AnyConnectionSettings, build_connection
from connectors.base import TransportError
from streams.delivery.lanes import RetryPolicy, put_until_confirmed
from tests.support.servers import PASSWORD, USER, Certs, FtpServer, SftpServer, SmtpServer

pytestmark = pytest.mark.integration
NAME = "acme-conversions_20261122_p001_000000000000-000000000999.csv"
DATA = b"CampaignId,ActionTrackerId,EventDate,OrderId,ClickId,CustomerId,CurrencyCode,Amount,Category,Sku,Quantity\r\n" + \
    b"".join(b"1000,4321,2026-11-22T10:00:00+00:00,O%06d,IR%06d,C%06d,USD,42.50,Garden,SKU-%d,1\r\n" % (i, i, i, i)
             for i in range(2000))


@pytest.fixture
def secrets(monkeypatch):
    monkeypatch.setenv("IMREF_TEST_PASSWORD", PASSWORD)
    return {"env": "IMREF_TEST_PASSWORD"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs.make(tmp_path_factory.mktemp("tls"))


def connection(**settings):
    return build_connection(TypeAdapter(AnyConnectionSettings).validate_python({"name": "under test", **settings}))


def ftp_settings(server, secrets, **extra):
    return {"host": "127.0.0.1", "port": server.port, "username": USER, "password": secrets, **extra}


def visible(root):
    return sorted(p.name for p in root.iterdir())


# -- FTP / FTPS -----------------------------------------------------------------------------

def test_ftps_push_is_one_stor_over_verified_tls_without_listing(tmp_path, certs, secrets):
    with FtpServer(tmp_path / "impact", certs) as server:
        connection(method="ftps", **ftp_settings(server, secrets, ca_file=str(certs.ca_file))).put(NAME, DATA)
    assert (tmp_path / "impact" / NAME).read_bytes() == DATA
    assert server.commands.count("STOR") == 1
    assert {"AUTH", "PROT", "EPSV"} <= set(server.commands)
    assert not {"LIST", "NLST", "MLSD", "MLST", "STAT"} & set(server.commands)


def test_ftps_refuses_a_certificate_it_does_not_trust(tmp_path, certs, secrets):
    stranger = Certs.make(tmp_path / "other", "other")
    with FtpServer(tmp_path / "impact", stranger) as server:
        conn = connection(method="ftps", **ftp_settings(server, secrets, ca_file=str(certs.ca_file)))
        with pytest.raises(TransportError, match="login failed: SSLCertVerificationError"):
            conn.put(NAME, DATA)
    assert visible(tmp_path / "impact") == []


def test_plain_ftp_only_when_the_connection_allows_it(tmp_path, secrets):
    with FtpServer(tmp_path / "partner") as server:
        connection(method="ftp", allow_plaintext=True, **ftp_settings(server, secrets)).put(NAME, DATA)
        with pytest.raises(TransportError, match="login failed"):  # an FTPS client never falls back
            connection(method="ftps", **ftp_settings(server, secrets)).put("other.csv", DATA)
    assert visible(tmp_path / "partner") == [NAME]


def test_reset_mid_upload_is_retried_and_no_partial_file_is_ever_final(tmp_path, certs, secrets):
    root = tmp_path / "partner"
    with FtpServer(root, certs, drop_uploads=1) as server:
        conn = connection(method="ftps", methodology="pull_from_3rd_party",
                          **ftp_settings(server, secrets, ca_file=str(certs.ca_file)))
        with pytest.raises(TransportError, match="upload failed"):
            conn.put(NAME, DATA)
        assert NAME not in visible(root)  # what was cut off sits under a temporary name only
        failures = asyncio.run(put_until_confirmed(conn, NAME, DATA, RetryPolicy(first_delay_s=0.01)))
    assert failures == 0
    assert (root / NAME).read_bytes() == DATA
    assert [n for n in visible(root) if not n.startswith(".")] == [NAME]
    assert server.commands.count("RNTO") == 1


def test_delivery_retries_through_a_reset_and_the_whole_file_arrives_once(tmp_path, certs, secrets):
    root = tmp_path / "partner"
    with FtpServer(root, certs, drop_uploads=2) as server:
        conn = connection(method="ftps", methodology="pull_from_3rd_party",
                          **ftp_settings(server, secrets, ca_file=str(certs.ca_file)))
        failures = asyncio.run(put_until_confirmed(conn, NAME, DATA, RetryPolicy(first_delay_s=0.01)))
    assert failures == 2 and (root / NAME).read_bytes() == DATA
    assert server.commands.count("RNTO") == 1


# -- SFTP -----------------------------------------------------------------------------------

@pytest.fixture
def client_key():
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
def sftp(tmp_path, client_key):
    with SftpServer(tmp_path / "sftp-root", tmp_path / "known_hosts", client_key.export_public_key().decode()) as s:
        yield s


def sftp_settings(server, **auth):
    return {"method": "sftp", "host": "127.0.0.1", "port": server.port, "username": USER,
            "known_hosts": str(server.known_hosts), **auth}


def test_sftp_password_auth_file_arrives_byte_identical(sftp, secrets):
    connection(**sftp_settings(sftp, password=secrets)).put(NAME, DATA)
    assert (sftp.root / NAME).read_bytes() == DATA and visible(sftp.root) == [NAME]


def test_sftp_key_auth_and_re_upload_replaces_the_file(sftp, client_key, tmp_path, monkeypatch):
    key_file = tmp_path / "id_ed25519"
    key_file.write_bytes(client_key.export_private_key("openssh"))
    conn = connection(methodology="pull_from_3rd_party", **sftp_settings(sftp, private_key={"file": str(key_file)}))
    conn.put(NAME, b"first version")
    conn.put(NAME, DATA)
    assert (sftp.root / NAME).read_bytes() == DATA and visible(sftp.root) == [NAME]


def test_sftp_refuses_a_changed_host_key(sftp, secrets):
    sftp.pin(asyncssh.generate_private_key("ssh-ed25519"))  # the server is not who we pinned
    with pytest.raises(TransportError, match="connect failed: BadHostKeyException"):
        connection(**sftp_settings(sftp, password=secrets)).put(NAME, DATA)
    assert visible(sftp.root) == []


def test_sftp_refuses_an_unknown_host_key(sftp, secrets):
    sftp.known_hosts.write_text("")
    with pytest.raises(TransportError, match="connect failed: SSHException: Server .* not found in known_hosts"):
        connection(**sftp_settings(sftp, password=secrets)).put(NAME, DATA)


# -- Email ----------------------------------------------------------------------------------

def email_settings(server, certs, secrets, **extra):
    return {"method": "email", "host": "127.0.0.1", "port": server.port, "ca_file": str(certs.ca_file),
            "sender": "conversions@shop.example", "to": "acme-1000@upload.impact.example",
            "username": USER, "password": secrets, **extra}


def test_email_has_one_recipient_and_the_csv_attached(certs, secrets):
    import email

    with SmtpServer(certs) as server:
        connection(**email_settings(server, certs, secrets)).put(NAME, DATA)
    assert len(server.messages) == 1
    envelope = server.messages[0]
    assert envelope.rcpt_tos == ["acme-1000@upload.impact.example"]
    msg = email.message_from_bytes(envelope.content)
    assert msg["To"] == "acme-1000@upload.impact.example" and msg["Cc"] is None
    attachments = [p for p in msg.walk() if p.get_filename()]
    assert [(a.get_filename(), a.get_content_type()) for a in attachments] == [(NAME, "text/csv")]
    assert attachments[0].get_payload(decode=True) == DATA


def test_email_refuses_an_untrusted_server_certificate(tmp_path, certs, secrets):
    stranger = Certs.make(tmp_path / "other", "other")
    with SmtpServer(stranger) as server:
        with pytest.raises(TransportError, match="starttls failed: SSLCertVerificationError"):
            connection(**email_settings(server, certs, secrets)).put(NAME, DATA)
    assert server.messages == []


# -- Secrets --------------------------------------------------------------------------------

def test_secrets_appear_in_no_error_and_no_repr(tmp_path, secrets):
    conn = connection(method="ftps", host="127.0.0.1", port=1, username=USER, password=secrets, timeout_s=2)
    with pytest.raises(TransportError) as exc:
        conn.put(NAME, DATA)
    assert PASSWORD not in str(exc.value) and PASSWORD not in repr(conn.settings)
