"""Pull from impact against a real asyncssh SFTP server (pinned host key) and the session's real
broker: each new matching file is fetched once, also across restarts, only once it is stable;
its rows arrive in the topic, or the file itself at an fsspec URL, byte-identical."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time

import asyncssh
import orjson
import pytest
from pydantic import TypeAdapter

from connectors import AnyConnectionSettings
from streams.delivery.lanes import RetryPolicy
from streams.runtime.reports import PullError, ReportPoller
from tests.support.harness import ROOT, WorkerProcess, read_topic, write_config
from tests.support.servers import PASSWORD, USER, SftpServer

pytestmark = pytest.mark.integration

HEADER = b"CampaignId,MediaPartnerId,PartnerName,BonusType,Amount,Currency\r\n"


def report(*rows: tuple) -> bytes:
    return HEADER + b"".join(b"1000,%d,Partner %d,Tier,%d.50,USD\r\n" % (r, r, r) for r in rows)


@pytest.fixture
def secrets(monkeypatch):
    monkeypatch.setenv("IMREF_TEST_PASSWORD", PASSWORD)
    return {"env": "IMREF_TEST_PASSWORD"}


@pytest.fixture
def sftp(tmp_path):
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    with SftpServer(tmp_path / "impact-sftp", tmp_path / "known_hosts", client_key.export_public_key().decode()) as s:
        (s.root / "reports").mkdir()
        yield s


def pull_fields(sftp, **extra) -> dict:
    """A pull connection to ``sftp`` as the config file gives it; the password from the environment."""
    return {"name": "impact bonus reports", "direction": "out_of_impact", "data_type": "performance_bonus_detail",
            "methodology": "pull_from_impact", "method": "sftp", "host": "127.0.0.1", "port": sftp.port,
            "username": USER, "password": {"env": "IMREF_TEST_PASSWORD"}, "known_hosts": str(sftp.known_hosts),
            "directory": "reports", "file_pattern": "Performance_Bonus_Detail_*.csv", "poll_interval_s": 0.5, **extra}


def pull_connection(sftp, secrets, **extra):
    return TypeAdapter(AnyConnectionSettings).validate_python(pull_fields(sftp, password=secrets, **extra))


def poller(broker, app_id, conn) -> ReportPoller:
    return ReportPoller([conn], app_id=app_id, kafka={"bootstrap_servers": broker.bootstrap},
                        policy=RetryPolicy(first_delay_s=0.05, max_delay_s=0.5), state_timeout_s=30)


async def polls(p: ReportPoller, conn, times: int) -> list[list[str]]:
    """What each of ``times`` polls fetched; the poller is closed afterwards, as at a stop."""
    try:
        return [await p.poll(conn) for _ in range(times)]
    finally:
        await p.close()


def rows_by_file(records) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in records:
        value = orjson.loads(r.value)
        assert r.key.decode() == value["file"]
        assert dict(r.headers)["imref.source.file"] == r.key
        out.setdefault(value["file"], []).append(value["row"])
    return out


def test_a_matching_file_is_fetched_once_and_its_rows_arrive_once(broker, app_id, sftp, secrets):
    reports = sftp.root / "reports"
    (reports / "Performance_Bonus_Detail_20261101.csv").write_bytes(report(11, 12, 13))
    (reports / "Other_Report_20261101.csv").write_bytes(report(99))
    (reports / "Performance_Bonus_Detail_20261101.txt").write_bytes(b"not a csv")
    conn = pull_connection(sftp, secrets, target_topic=f"{app_id}.bonus")

    fetched = asyncio.run(polls(poller(broker, app_id, conn), conn, 4))

    # The first listing only sees the file; the second finds it unchanged and fetches it.
    assert fetched == [[], ["Performance_Bonus_Detail_20261101.csv"], [], []]
    records = read_topic(broker.bootstrap, f"{app_id}.bonus", expect=3, timeout=30)
    assert rows_by_file(records) == {"Performance_Bonus_Detail_20261101.csv": [1, 2, 3]}
    first = orjson.loads(records[0].value)
    assert first["fields"] == {"CampaignId": "1000", "MediaPartnerId": "11", "PartnerName": "Partner 11",
                               "BonusType": "Tier", "Amount": "11.50", "Currency": "USD"}
    assert dict(records[0].headers)["imref.source.connection"] == b"impact bonus reports"
    state = read_topic(broker.bootstrap, f"{app_id}-fetched-reports", expect=1, timeout=30, settle_s=0.5)
    assert [orjson.loads(r.key)["file"] for r in state] == ["Performance_Bonus_Detail_20261101.csv"]


def test_after_a_restart_only_the_new_file_is_fetched(broker, app_id, sftp, secrets):
    reports = sftp.root / "reports"
    (reports / "Performance_Bonus_Detail_20261101.csv").write_bytes(report(1, 2))
    conn = pull_connection(sftp, secrets, target_topic=f"{app_id}.bonus")
    assert asyncio.run(polls(poller(broker, app_id, conn), conn, 2)) == [[], ["Performance_Bonus_Detail_20261101.csv"]]

    (reports / "Performance_Bonus_Detail_20261102.csv").write_bytes(report(3, 4, 5))
    restarted = poller(broker, app_id, conn)  # nothing in memory: what it knows comes from the topic
    assert asyncio.run(polls(restarted, conn, 3)) == [[], ["Performance_Bonus_Detail_20261102.csv"], []]

    records = read_topic(broker.bootstrap, f"{app_id}.bonus", expect=5, timeout=30)
    assert rows_by_file(records) == {"Performance_Bonus_Detail_20261101.csv": [1, 2],
                                     "Performance_Bonus_Detail_20261102.csv": [1, 2, 3]}


def test_a_file_still_being_written_waits_until_its_size_stops_changing(broker, app_id, sftp, secrets):
    path = sftp.root / "reports" / "Performance_Bonus_Detail_20261103.csv"
    conn = pull_connection(sftp, secrets, target_topic=f"{app_id}.bonus")

    async def scenario(p: ReportPoller) -> list[list[str]]:
        try:
            path.write_bytes(report(1))
            seen = [await p.poll(conn)]
            with path.open("ab") as f:  # impact appends more rows between two listings
                f.write(b"1000,2,Partner 2,Tier,2.50,USD\r\n")
            seen.append(await p.poll(conn))
            with path.open("ab") as f:
                f.write(b"1000,3,Partner 3,Tier,3.50,USD\r\n")
            seen.append(await p.poll(conn))
            seen.append(await p.poll(conn))  # unchanged since the last listing: now it is taken
            return seen
        finally:
            await p.close()

    assert asyncio.run(scenario(poller(broker, app_id, conn))) == [[], [], [], [path.name]]
    records = read_topic(broker.bootstrap, f"{app_id}.bonus", expect=3, timeout=30)
    assert rows_by_file(records) == {path.name: [1, 2, 3]}


def test_a_changed_host_key_is_refused_with_an_error_naming_the_connection(broker, app_id, sftp, secrets, caplog):
    (sftp.root / "reports" / "Performance_Bonus_Detail_20261101.csv").write_bytes(report(1))
    sftp.pin(asyncssh.generate_private_key("ssh-ed25519"))  # the server is not who we pinned
    conn = pull_connection(sftp, secrets, target_topic=f"{app_id}.bonus")
    p = poller(broker, app_id, conn)

    async def scenario() -> None:
        try:
            with pytest.raises(PullError, match=r"connection='impact bonus reports': connect failed: BadHostKeyException"):
                await p.poll(conn)
            await p.tick(conn)  # what the timer does: log it and retry later with backoff
        finally:
            await p.close()

    asyncio.run(scenario())
    assert "connection='impact bonus reports': connect failed: BadHostKeyException" in caplog.text
    assert "retry in" in caplog.text
    assert read_topic(broker.bootstrap, f"{app_id}.bonus", expect=1, timeout=3, settle_s=0) == []


def test_an_fsspec_target_gets_the_file_byte_identical_and_only_once(broker, app_id, sftp, secrets, tmp_path):
    data = report(*range(1, 2001))
    (sftp.root / "reports" / "Performance_Bonus_Detail_20261104.csv").write_bytes(data)
    inbox = tmp_path / "inbox"
    conn = pull_connection(sftp, secrets, target_url=str(inbox))
    assert asyncio.run(polls(poller(broker, app_id, conn), conn, 2)) == [[], ["Performance_Bonus_Detail_20261104.csv"]]
    assert (inbox / "Performance_Bonus_Detail_20261104.csv").read_bytes() == data
    assert sorted(p.name for p in inbox.iterdir()) == ["Performance_Bonus_Detail_20261104.csv"]  # no .part left

    (inbox / "Performance_Bonus_Detail_20261104.csv").unlink()  # consumed downstream
    assert asyncio.run(polls(poller(broker, app_id, conn), conn, 3)) == [[], [], []]
    assert list(inbox.iterdir()) == []


def test_a_malformed_file_sends_no_row_even_past_the_first_slice(broker, app_id, sftp, secrets):
    rows = [b"1000,%d,Partner %d,Tier,%d.50,USD\r\n" % (i, i, i) for i in range(1, 3001)]
    rows[2499] = b"1000,2500,Partner 2500,Tier\r\n"  # far past the rows a single pass would have sent
    (sftp.root / "reports" / "Performance_Bonus_Detail_20261105.csv").write_bytes(HEADER + b"".join(rows))
    conn = pull_connection(sftp, secrets, target_topic=f"{app_id}.bonus")
    p = poller(broker, app_id, conn)

    async def scenario() -> None:
        try:
            assert await p.poll(conn) == []
            with pytest.raises(PullError, match=r"file=Performance_Bonus_Detail_20261105.csv: "
                                                r"parse failed: ValueError: row 2500 has 4 cells, the header 6"):
                await p.poll(conn)
        finally:
            await p.close()

    asyncio.run(scenario())
    assert read_topic(broker.bootstrap, f"{app_id}.bonus", expect=1, timeout=3, settle_s=0) == []


def test_storage_options_reach_the_target_filesystem(broker, app_id, sftp, secrets, tmp_path):
    # fsspec's dir:// is a folder inside another filesystem, named only by storage_options: without
    # them the target cannot even be opened (as an S3-compatible store needs its endpoint_url).
    data = report(1, 2, 3)
    (sftp.root / "reports" / "Performance_Bonus_Detail_20261106.csv").write_bytes(data)
    conn = pull_connection(sftp, secrets, target_url="dir://inbox",
                           storage_options={"path": str(tmp_path / "store"), "target_protocol": "file"})
    assert asyncio.run(polls(poller(broker, app_id, conn), conn, 2)) == [[], ["Performance_Bonus_Detail_20261106.csv"]]
    assert (tmp_path / "store" / "inbox" / "Performance_Bonus_Detail_20261106.csv").read_bytes() == data


# -- the real worker ------------------------------------------------------------------------

def wait_for_records(bootstrap: str, topic: str, expect: int, worker: WorkerProcess, timeout: float = 90) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = read_topic(bootstrap, topic, expect=expect, timeout=5, settle_s=1)
        if len(records) >= expect:
            return records
        assert worker.proc.poll() is None, worker.log_text()[-3000:]
    raise AssertionError(f"{topic}: fewer than {expect} records after {timeout}s:\n{worker.log_text()[-3000:]}")


def worker_config(broker, app_id, sftp, tmp_path):
    pull = pull_fields(sftp, target_topic=f"{app_id}.bonus")
    return write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=tmp_path / "out",
                        data_dir=tmp_path / "data",
                        connections=[{"name": "outbox", "method": "fsspec", "url": str(tmp_path / "out")}, pull])


def test_the_worker_polls_as_leader_and_remembers_across_a_restart(broker, app_id, sftp, tmp_path):
    reports = sftp.root / "reports"
    (reports / "Performance_Bonus_Detail_20261101.csv").write_bytes(report(1, 2))
    (reports / "Other_20261101.csv").write_bytes(report(9))
    topic = f"{app_id}.bonus"
    env = {**os.environ, "IMREF_TEST_PASSWORD": PASSWORD}
    cfg = worker_config(broker, app_id, sftp, tmp_path)
    log = tmp_path / "worker.log"

    worker = WorkerProcess(cfg, log, env=env).start()
    try:
        worker.wait_ready()
        wait_for_records(broker.bootstrap, topic, 2, worker)
    finally:
        assert worker.stop() == 0

    (reports / "Performance_Bonus_Detail_20261102.csv").write_bytes(report(3, 4, 5))
    worker = WorkerProcess(cfg, log, env=env).start()
    try:
        worker.wait_ready()
        records = wait_for_records(broker.bootstrap, topic, 5, worker)
    finally:
        assert worker.stop() == 0
    # The first file not again after the restart: its rows once.
    assert rows_by_file(records) == {"Performance_Bonus_Detail_20261101.csv": [1, 2],
                                     "Performance_Bonus_Detail_20261102.csv": [1, 2, 3]}


@pytest.mark.broker("expires_sessions", reason="the worker killed at its fault point has no static membership: "
                                              "its successor joins once the dead member's session has expired")
def test_a_crash_between_publish_and_record_publishes_the_rows_again_with_the_same_keys(broker, app_id, sftp,
                                                                                        tmp_path):
    (sftp.root / "reports" / "Performance_Bonus_Detail_20261101.csv").write_bytes(report(1, 2))
    topic = f"{app_id}.bonus"
    cfg = worker_config(broker, app_id, sftp, tmp_path)
    env = {**os.environ, "IMREF_TEST_PASSWORD": PASSWORD}
    log = tmp_path / "worker.log"

    crashing = WorkerProcess(cfg, log, env={**env, "IMREF_FAULTS": "pulled_not_recorded@1"}).start()
    crashing.proc.wait(90)
    assert crashing.proc.returncode == -9, crashing.log_text()[-3000:]  # killed after the rows were confirmed

    worker = WorkerProcess(cfg, log, env=env).start()
    try:
        records = wait_for_records(broker.bootstrap, topic, 4, worker)
    finally:
        assert worker.stop() == 0
    # At least once: the same (key, row) twice, which is what a consumer dedupes on.
    assert sorted((r.key, orjson.loads(r.value)["row"]) for r in records) == \
        [(b"Performance_Bonus_Detail_20261101.csv", 1)] * 2 + [(b"Performance_Bonus_Detail_20261101.csv", 2)] * 2


# -- large files: streamed, bounded memory -------------------------------------------------------

MB = 1024 * 1024


def write_large_report(path, size: int) -> int:
    """A report of at least ``size`` bytes, every row distinct; returns its row count."""
    note = b"x" * 100  # impact's reports carry long text columns; fewer, wider rows write faster
    rows = 0
    with path.open("wb") as f:
        f.write(b"CampaignId,MediaPartnerId,PartnerName,BonusType,Amount,Currency,Note\r\n")
        while f.tell() < size:
            f.write(b"".join(b"1000,%d,Partner %d,Tier,%d.50,USD,%s\r\n" % (i, i, i, note)
                             for i in range(rows + 1, rows + 100_001)))
            rows += 100_000
    return rows


def sha256(path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MB):
            digest.update(block)
    return digest.hexdigest()


def run_pull_process(broker, app_id, connection: dict, polls: int, timeout: float = 120):
    """The real pull path in a child process: (files fetched per poll, its peak RSS in bytes after
    start and one listing, its peak RSS in bytes over its whole life, seconds)."""
    env = {**os.environ, "IMREF_TEST_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "pull_process.py"), broker.bootstrap,
                           app_id, str(polls), json.dumps(connection)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    seconds = time.monotonic() - started
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    *polled, closed = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert closed.get("closed"), done.stdout[-3000:]
    return [p["fetched"] for p in polled], polled[0]["peak_rss_kb"] * 1024, closed["peak_rss_kb"] * 1024, seconds


# The child with aiokafka, paramiko, fsspec and faust's aiokafka driver loaded, connected and past
# one listing has a peak of about 75 MB. Holding a file costs at least its size on top (measured
# before streaming: 503 MB for the 213 MB file stored, 570 MB for a 14 MB one published). 150 MB is
# far below 200 MB and still leaves the interpreter room; the growth bound says the same more tightly.
PEAK_RSS_LIMIT = 150 * MB
GROWTH_LIMIT = 32 * MB  # read-ahead window (8 MB), read and copy buffers, unconfirmed records


def test_a_200_mb_file_is_stored_byte_identical_in_bounded_memory(broker, app_id, sftp, tmp_path):
    source = sftp.root / "reports" / "Performance_Bonus_Detail_20261201.csv"
    write_large_report(source, 200 * MB)
    size = source.stat().st_size
    inbox = tmp_path / "inbox"
    try:
        fetched, idle, peak, seconds = run_pull_process(broker, app_id, pull_fields(sftp, target_url=str(inbox)), 2)
        print(f"\nstore path: {size / MB:.0f} MB file, peak RSS {peak / MB:.0f} MB "
              f"(after start and one listing {idle / MB:.0f} MB), {seconds:.1f} s")
        assert fetched == [[], [source.name]]
        assert (inbox / source.name).stat().st_size == size and sha256(inbox / source.name) == sha256(source)
        assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / MB:.0f} MB for a {size / MB:.0f} MB file"
        assert peak - idle < GROWTH_LIMIT, f"peak RSS {peak / MB:.0f} MB, {idle / MB:.0f} MB before the file"
    finally:  # 400 MB of disk per run otherwise, kept by pytest for the last three runs
        source.unlink()
        (inbox / source.name).unlink(missing_ok=True)


def test_a_large_file_for_a_topic_is_published_row_by_row_in_bounded_memory(broker, app_id, sftp):
    # Smaller than the stored file: the test broker takes about 20 000 rows a second, and the
    # test reads every row back.
    source = sftp.root / "reports" / "Performance_Bonus_Detail_20261202.csv"
    rows = write_large_report(source, 10 * MB)
    size, topic = source.stat().st_size, f"{app_id}.bonus"
    fetched, idle, peak, seconds = run_pull_process(broker, app_id, pull_fields(sftp, target_topic=topic), 2)
    print(f"\ntopic path: {size / MB:.0f} MB file, {rows} rows, peak RSS {peak / MB:.0f} MB "
          f"(after start and one listing {idle / MB:.0f} MB), {seconds:.1f} s")
    assert fetched == [[], [source.name]]
    state = read_topic(broker.bootstrap, f"{app_id}-fetched-reports", expect=1, timeout=30, settle_s=0)
    assert orjson.loads(state[0].value)["rows"] == rows
    records = read_topic(broker.bootstrap, topic, expect=rows, timeout=60, settle_s=0)
    # One key (the file name), so one partition: every row once, in the file's order.
    assert [orjson.loads(r.value)["row"] for r in records] == list(range(1, rows + 1))
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / MB:.0f} MB for a {size / MB:.0f} MB file"
    assert peak - idle < GROWTH_LIMIT, f"peak RSS {peak / MB:.0f} MB, {idle / MB:.0f} MB before the file"
