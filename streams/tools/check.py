"""``imref-stream check --config FILE``: what impact's connection wizard does before it saves a
connection, for the whole config. One line per check, ✓ or ✗ with the fix; exit 0 when all
pass, 1 on any ✗, 2 when the config itself is invalid.

Checks: the config; Kafka with the configured TLS/SASL; the topics (the inputs exist, and inputs
and existing changelogs have ``topics.partitions`` partitions: co-partitioning); the consumer
group (its state, and committed offsets inside the logs); every connection through its
transport's ``probe`` (log in, certificate or host key, and a folder impact pulls from writable,
with a probe file impact never processes)."""
from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass
from typing import Iterator

from connectors import build_connection
from connectors.fsspec_dir import FsspecConnection, FsspecSettings

from ..config import ConfigError, Settings, load_settings
from ..kafka import client_options, servers

TIMEOUT_MS = 10_000


@dataclass
class Check:
    ok: bool
    what: str
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        line = f"{'✓' if self.ok else '✗'} {self.what}: {self.detail}"
        return line if self.ok else f"{line} → fix: {self.fix}"


def run(config: str, out=print) -> int:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        out(str(Check(False, "config", str(exc).replace("\n", " "), "correct the keys named above")))
        return 2
    out(str(Check(True, "config", f"{config} is valid ({len(settings.connections)} connection(s))")))
    failed = False
    for check in (*bounded(kafka_checks(settings)), *connection_checks(settings)):
        out(str(check))
        failed |= not check.ok
    return 1 if failed else 0


# -- Kafka ----------------------------------------------------------------------------------

KAFKA_FIX = ("check kafka.brokers and that this host reaches them; kafka.security_protocol, kafka.ca_file and the "
             "SASL settings must match the brokers' listener")


def bounded(checks: Iterator[Check]) -> Iterator[Check]:
    """The checks as they come, each within a bound: kafka-python waits forever for a TLS handshake
    that the other end never answers (a TLS client against a plaintext listener), whatever its
    own timeouts say. An error that no check caught is a ✗ too."""
    results: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            for check in checks:
                results.put(check)
        except Exception as exc:
            results.put(Check(False, "kafka", _error(exc), KAFKA_FIX))
        results.put(None)

    threading.Thread(target=work, name="imref-check-kafka", daemon=True).start()
    wait_s = TIMEOUT_MS / 1000 + 5
    while True:
        try:
            check = results.get(timeout=wait_s)
        except queue.Empty:
            yield Check(False, "kafka", f"no answer within {wait_s:g}s", KAFKA_FIX + " (a TLS client against a "
                        "plaintext listener waits like this)")
            return
        if check is None:
            return
        yield check


def kafka_checks(settings: Settings) -> Iterator[Check]:
    from kafka.admin import KafkaAdminClient

    k = settings.kafka
    where = f"{', '.join(servers(k))} ({k.security_protocol})"
    try:
        admin = KafkaAdminClient(client_id="imref-stream-check", request_timeout_ms=TIMEOUT_MS,
                                 bootstrap_timeout_ms=TIMEOUT_MS, **client_options(k))
    except Exception as exc:
        yield Check(False, "kafka", f"cannot connect to {where}: {_error(exc)}", KAFKA_FIX)
        return
    try:
        yield Check(True, "kafka", f"connected to {where}{_brokers(admin)}")
        sizes = yield from topic_checks(settings, admin)
        yield group_check(settings, admin, [t for t, n in sizes.items() if n])
    finally:
        admin.close()


def _brokers(admin) -> str:
    """", N broker(s)", or nothing where kafka-python cannot tell: it reads the fields of
    DescribeCluster v1 from a broker that answers only v0 (Kafka 2.8 to 3.6, noida-db) and fails
    with KeyError."""
    try:
        return f", {len(admin.describe_cluster()['brokers'])} broker(s)"
    except KeyError:
        return ""


def topics(settings: Settings) -> tuple[list[str], list[str], list[str]]:
    """(inputs that must exist, changelogs co-partitioned with them, topics the worker creates)."""
    t, app = settings.topics, settings.app_id
    inputs, changelogs = [t.clicks, t.order_items], ["clicks", "orders", "batch-cuts"]
    created = [t.dead_letter, t.unattributed, t.audit]
    if settings.pushes("action_modifications"):
        inputs.append(t.order_changes)
        changelogs += ["reported-orders", "modification-cuts"]
        created.append(t.unmatched_changes)
    pulls = [c for c in settings.connections if c.methodology == "pull_from_impact"]
    created += [c.target_topic for c in pulls if c.target_topic] + ([f"{app}-fetched-reports"] if pulls else [])
    return inputs, [f"{app}-{name}-changelog" for name in changelogs], created


def topic_checks(settings: Settings, admin) -> Iterator[Check]:
    """One line per topic and one for co-partitioning; returns {topic: partitions, 0 if missing}."""
    inputs, changelogs, created = topics(settings)
    want, replicas = settings.topics.partitions, settings.topics.replicas
    sizes = {d["name"]: len(d["partitions"]) if d["error_code"] == 0 else 0
             for d in admin.describe_topics(inputs + changelogs + created)}
    for name in inputs:
        if sizes[name]:
            yield Check(True, f"topic {name}", f"{sizes[name]} partitions")
        else:
            yield Check(False, f"topic {name}", "does not exist (or this user may not describe it)",
                        f"create it with {want} partitions, keyed by customer id: kafka-topics.sh --create --topic {name} "
                        f"--partitions {want} --replication-factor {replicas} (Strimzi: deploy/base/topics)")
    for name in changelogs + created:
        yield Check(True, f"topic {name}", f"{sizes[name]} partitions" if sizes[name]
                    else f"not there yet: the worker creates it ({want} partitions, replication {replicas})")
    joined = {name: sizes[name] for name in inputs + changelogs if sizes[name]}
    wrong = {name: n for name, n in joined.items() if n != want}
    if wrong:
        yield Check(False, "co-partitioning", ", ".join(f"{name} has {n}" for name, n in wrong.items())
                    + f"; topics.partitions is {want}",
                    "the inputs and the changelogs need one partition count: set topics.partitions to the input "
                    "topics' count; a changelog of another count is from an earlier setting, delete it (the worker "
                    "rebuilds it) — never add partitions to an input topic, it moves customers to other partitions")
    else:
        yield Check(True, "co-partitioning", f"{', '.join(joined) or 'no topic yet'}: {want} partitions each")
    return sizes


def group_check(settings: Settings, admin, existing: list[str]) -> Check:
    from kafka.admin import OffsetSpec

    group, what = settings.app_id, f"consumer group {settings.app_id}"
    try:
        state, members = _group_state(settings)
        committed = admin.list_group_offsets({group: None})[group]
    except Exception as exc:
        return Check(False, what, f"cannot be described: {_error(exc)}",
                     f"grant this user Describe and Read on group {group} (the worker needs both)")
    committed = {tp: meta.offset for tp, meta in committed.items() if tp.topic in existing and meta.offset >= 0}
    if committed:
        first = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in committed})
        end = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in committed})
        for tp, offset in sorted(committed.items()):
            start, stop = first[tp].offset, end[tp].offset
            if offset > stop:
                return Check(False, what, f"committed offset {offset} of {tp.topic}[{tp.partition}] is beyond its end "
                             f"({stop}): the topic was re-created or emptied",
                             f"with no worker running: kafka-consumer-groups.sh --group {group} --topic {tp.topic} "
                             "--reset-offsets --to-earliest --execute (then replay the range if files are missing)")
            if offset < start:
                return Check(False, what, f"committed offset {offset} of {tp.topic}[{tp.partition}] is before the log's "
                             f"start ({start}): records {offset}–{start - 1} were deleted before the worker read them",
                             "re-produce those records from their source, then reset the group's offset to the log start "
                             "(kafka-consumer-groups.sh --reset-offsets --to-earliest); raise the topic's retention")
    members_text = f", {members} member(s)" if members else ""
    if not committed:
        return Check(True, what, f"{state}{members_text}; no committed offsets: the worker starts at the earliest records")
    return Check(True, what, f"{state}{members_text}; committed offsets on {len(committed)} partition(s), all inside the logs")


def _group_state(settings: Settings) -> tuple[str, int]:
    # aiokafka here: kafka-python 3.0's DescribeGroups parser fails on brokers that report
    # authorized operations it does not know (Tansu does), while aiokafka leaves them alone.
    from aiokafka.admin import AIOKafkaAdminClient

    async def describe() -> tuple[str, int]:
        admin = AIOKafkaAdminClient(request_timeout_ms=TIMEOUT_MS, **client_options(settings.kafka))
        await admin.start()
        try:
            [response] = await admin.describe_consumer_groups([settings.app_id])
        finally:
            await admin.close()
        [group] = response.groups
        error_code, _, state, _, _, members = group[:6]
        if error_code:
            from kafka.errors import for_code

            raise for_code(error_code)()
        return ("new" if state in ("Dead", "") else state), len(members)

    return asyncio.run(describe())


# -- Connections ----------------------------------------------------------------------------

def connection_checks(settings: Settings) -> Iterator[Check]:
    for c in settings.connections:
        what = f"connection {c.name!r} ({c.method}, {c.methodology})"
        targets = []
        try:
            targets.append(build_connection(c))
            if getattr(c, "target_url", None):
                targets.append(FsspecConnection(FsspecSettings(
                    name=f"{c.name} target", method="fsspec", url=c.target_url, storage_options=c.storage_options)))
            detail = "; target_url ".join(t.probe() for t in targets)
        except Exception as exc:
            yield Check(False, what, _error(exc), connection_fix(c, exc))
        else:
            yield Check(True, what, detail)
        finally:
            for t in targets:
                t.close()


def connection_fix(c, exc: Exception) -> str:
    """What to change for connection ``c`` (its settings) to pass where it failed with ``exc``; the
    worker names it too when its check at start-up finds a configuration error."""
    text = str(exc)
    host = f"{getattr(c, 'host', '')}:{getattr(c, 'port', '')}"
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSLCertVerificationError" in text:
        return (f"the certificate of {host} is not trusted for that name: set ca_file to the CA that signed it, "
                "or have the server's certificate fixed")
    if "known_hosts" in text or "BadHostKeyException" in text or "Host key for server" in text:
        return (f"put the server's host key into {c.known_hosts}: ask the server's owner for it, or run ssh-keyscan "
                f"-p {c.port} {c.host} and compare its fingerprint with theirs before you trust it")
    if c.method == "fsspec":
        return f"this host must be able to create, write and rename files in {c.url} (the path, or the backend's " \
               "credentials in its environment)"
    step = text.split(" failed:", 1)[0]
    if step == "connect":
        return f"check host and port ({host}) and that the network lets this host reach it"
    if step in ("login", "starttls"):
        return "the server refused the login: check username and the password or private_key secret"
    if step in ("change directory", "open directory", "list"):
        return f"directory {c.directory!r} does not exist on the server or this account may not read it"
    if step == "recipient":
        return f"the SMTP server does not take mail from {c.sender} to {c.to}: check both addresses with its admin"
    if step.startswith("remove probe file"):
        return f"remove {step.rsplit(' ', 1)[-1]} by hand; the account may write but not delete"
    if step in ("write probe file", "rename probe file"):
        return "the account needs to write and rename files in that folder (the worker writes .name.part, then renames)"
    return "see the error; the connection's settings are in docs/connections.md"


def _error(exc: Exception) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return text if text.startswith(name) or name == "TransportError" else f"{name}: {text}" if text else name
