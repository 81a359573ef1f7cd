"""The click collector as a user runs it: ``imref-stream collector --config FILE``, a subprocess."""
from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.harness import ROOT, WorkerProcess


class CollectorProcess(WorkerProcess):
    """Started and stopped like a worker (SIGTERM); ready once its /readyz says so."""

    def __init__(self, config: Path, log_path: Path, port: int):
        super().__init__(config, log_path)
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def start(self) -> "CollectorProcess":
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "collector", "--config", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        return self

    def wait_ready(self, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic() - self.started_at
            except (urllib.error.URLError, ConnectionError):
                pass  # not listening yet (URLError), or 503: the broker is not reached yet (HTTPError)
            time.sleep(0.1)
        raise AssertionError(f"collector not ready after {timeout}s:\n{self.log_text()[-3000:]}")
