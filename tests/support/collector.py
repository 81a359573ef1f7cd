"""The click collector as a user runs it: ``imref-stream collector --config FILE``, a subprocess."""
from __future__ import annotations

from pathlib import Path

from tests.support.harness import WorkerProcess


class CollectorProcess(WorkerProcess):
    """Started, stopped and waited for like a worker (SIGTERM; ready once its /readyz says so),
    on the port the test gave it in ``collector.port``."""

    command = "collector"

    def __init__(self, config: Path, log_path: Path, port: int):
        super().__init__(config, log_path)
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def _config_to_run(self) -> Path:
        return self.config
