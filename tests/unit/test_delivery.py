import asyncio
from time import monotonic

from connectors.base import Connection, ConnectionSettings
from streams.delivery.lanes import Job, PartitionLanes, RetryPolicy

FAST = RetryPolicy(first_delay_s=0.001, max_delay_s=0.01)


class Flaky(Connection):
    """Fails the first ``failures`` puts, then stores files in a dict."""

    def __init__(self, name, failures=0):
        super().__init__(ConnectionSettings(name=name, methodology="push_to_impact"))
        self.failures, self.files, self.attempts = failures, {}, 0

    def put(self, name, data):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionResetError("peer reset mid-upload")
        self.files[name] = data


def run(coro):
    return asyncio.run(coro)


async def until(check) -> None:
    while not check():
        await asyncio.sleep(0.005)


def make_job(name, delivered, data=b"x"):
    async def prepare():
        return data, 1

    async def on_delivered():
        delivered.append(name)

    return Job(name, prepare, on_delivered)


def test_a_failed_upload_is_retried_and_acked_only_after_it_is_confirmed():
    async def scenario():
        conn, delivered = Flaky("ftp", failures=3), []
        lanes = PartitionLanes(0, [conn], FAST)
        lanes.submit(make_job("a.csv", delivered))
        assert lanes.held == 1
        await asyncio.wait_for(lanes.wait_idle(), 5)
        lanes.cancel()
        return conn, delivered, lanes

    conn, delivered, lanes = run(scenario())
    assert conn.attempts == 4 and conn.files == {"a.csv": b"x"} and delivered == ["a.csv"]
    assert lanes.held == 0


def test_one_failing_connection_does_not_hold_up_another_and_acks_wait_for_both():
    async def scenario():
        good, bad, delivered = Flaky("sftp"), Flaky("ftp", failures=10**9), []
        lanes = PartitionLanes(0, [good, bad], FAST, max_in_flight=3)
        for i in range(3):
            lanes.submit(make_job(f"{i}.csv", delivered))
        # Uploads run in threads: a fixed sleep was too short once on a loaded machine.
        await asyncio.wait_for(until(lambda: len(good.files) == 3), 5)
        seen = (set(good.files), list(delivered), lanes.held)
        lanes.cancel()
        return seen

    good_files, delivered, held = run(scenario())
    assert good_files == {"0.csv", "1.csv", "2.csv"}
    assert delivered == [] and held == 3


def test_batches_are_acked_in_order_and_batches_without_rows_upload_nothing():
    async def scenario():
        conn, delivered = Flaky("a"), []
        lanes = PartitionLanes(0, [conn], FAST)
        lanes.submit(make_job("1.csv", delivered))
        lanes.submit(make_job("2.csv", delivered, data=None))
        lanes.submit(make_job("3.csv", delivered))
        await asyncio.wait_for(lanes.wait_idle(), 5)
        lanes.cancel()
        return conn, delivered

    conn, delivered = run(scenario())
    assert delivered == ["1.csv", "2.csv", "3.csv"] and set(conn.files) == {"1.csv", "3.csv"}


def test_backoff_is_bounded_and_jittered():
    policy = RetryPolicy(first_delay_s=1, max_delay_s=8)
    delays = [policy.delay(n) for n in range(12) for _ in range(20)]
    assert all(0 <= d <= 8 for d in delays) and len(set(delays)) > 100


def test_a_full_partition_says_so_and_says_when_a_batch_left():
    # The owner pauses fetching a full partition instead of waiting in submit: a wait there held
    # up the clicks that the held batches were waiting for (CI run of 2026-12-03: kill test hung).
    async def scenario():
        conn, delivered, changes = Flaky("ftp", failures=3), [], []
        lanes = PartitionLanes(0, [conn], FAST, max_in_flight=2, on_change=lambda: changes.append(lanes.full))
        for i in range(3):
            lanes.submit(make_job(f"{i}.csv", delivered))  # never waits
        full_at_once = lanes.full
        await asyncio.wait_for(lanes.wait_idle(), 5)
        lanes.cancel()
        return full_at_once, changes, delivered

    full_at_once, changes, delivered = run(scenario())
    assert full_at_once and changes == [True, False, False]  # 3 held, then 2 (still full), 1, 0
    assert delivered == ["0.csv", "1.csv", "2.csv"]


def test_a_revoke_stops_the_lanes_and_delivers_nothing_more():
    async def scenario():
        down, delivered = Flaky("ftp", failures=10**9), []
        lanes = PartitionLanes(0, [down], FAST, max_in_flight=2)
        for i in range(3):
            lanes.submit(make_job(f"{i}.csv", delivered))
        await asyncio.wait_for(until(lambda: down.attempts >= 2), 5)
        lanes.cancel()
        await asyncio.wait_for(asyncio.gather(*lanes._tasks, return_exceptions=True), 5)
        return delivered, [t.done() for t in lanes._tasks]

    delivered, done = run(scenario())
    assert delivered == [] and all(done)


def test_a_step_that_fails_stops_the_worker_naming_it_instead_of_ending_its_lane_in_silence():
    """Recording a confirmation fails (a changelog write the broker refused): ``stop`` hears which
    step of which file failed, and the batch is never acked. Before, the lane's task died unseen."""
    async def scenario():
        stops, delivered = [], []

        async def refused(connection, file_digest):
            raise PermissionError("TopicAuthorizationFailed: batch-cuts-changelog")

        job = make_job("a.csv", delivered)
        job.on_confirmed = refused
        lanes = PartitionLanes(0, [Flaky("ftp")], FAST, stop=lambda what, exc: stops.append((what, exc)))
        lanes.submit(job)
        await asyncio.wait_for(until(lambda: stops), 5)
        lanes.cancel()
        return stops, delivered, lanes

    stops, delivered, lanes = run(scenario())
    [(what, exc)] = stops
    assert what == "partition 0's lane to 'ftp'" and "recording that 'ftp' confirmed a.csv" in str(exc)
    assert isinstance(exc.__cause__, PermissionError) and delivered == [] and lanes.held == 1


def test_a_file_that_cannot_be_made_stops_the_worker_even_when_no_lane_waits_for_it():
    async def scenario():
        stops = []

        async def prepare():
            raise RuntimeError("dead letter refused")

        lanes = PartitionLanes(0, [], FAST, stop=lambda what, exc: stops.append(what))
        lanes.submit(Job("b.csv", prepare, lambda: None))
        await asyncio.wait_for(until(lambda: stops), 5)
        return stops

    assert run(scenario()) == ["making file b.csv"]


def test_a_step_held_past_the_bound_is_a_stall_and_a_failing_upload_is_not():
    async def scenario():
        never = asyncio.Event()

        async def waiting():
            await never.wait()
            return b"x", 1

        async def nothing():
            pass

        stuck = PartitionLanes(1, [Flaky("ftp")], FAST)
        stuck.submit(Job("held.csv", waiting, nothing))
        down = PartitionLanes(2, [Flaky("sftp", failures=10**9)], FAST)
        down.submit(make_job("down.csv", []))
        await until(lambda: stuck._doing and down._doing)
        await asyncio.sleep(0.05)
        now = monotonic()
        result = stuck.stalls(now, 0.01), down.stalls(now, 0.01), stuck.stalls(now, 60)
        stuck.cancel()
        down.cancel()
        return result

    stalled, failing, young = run(scenario())
    assert len(stalled) == 1 and stalled[0].startswith("partition 1, lane to 'ftp': making held.csv"), stalled
    assert failing == [] and young == []


def test_configuration_errors_are_told_from_transient_failures():
    import ftplib
    import socket
    import ssl

    import paramiko

    from connectors.base import TransportError, configuration_problem

    def wrapped(exc):  # as ``step`` raises it
        try:
            raise TransportError(f"connect failed: {exc}") from exc
        except TransportError as outer:
            return outer

    assert configuration_problem(wrapped(paramiko.SSHException("Server '[h]:22' not found in known_hosts"))) == \
        "host key not in known_hosts"
    assert configuration_problem(wrapped(ssl.SSLCertVerificationError("certificate verify failed"))) == \
        "certificate not trusted"
    assert configuration_problem(wrapped(paramiko.AuthenticationException("no"))) == "login refused"
    assert configuration_problem(wrapped(ftplib.error_perm("530 Login incorrect."))) == "login refused"
    assert configuration_problem(wrapped(ftplib.error_perm("550 No such directory."))) == \
        "folder missing or not writable"
    assert configuration_problem(FileNotFoundError(2, "No such file")) == "folder missing"
    for transient in (socket.timeout("timed out"), ConnectionResetError("reset"), ConnectionRefusedError("refused"),
                      paramiko.SSHException("Error reading SSH protocol banner"), EOFError()):
        assert configuration_problem(wrapped(transient)) is None, transient
