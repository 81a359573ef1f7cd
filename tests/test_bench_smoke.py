"""`python -m bench --smoke` runs every benchmark end to end and prints a number in every row.
No timing is asserted: the figures depend on the machine and its load."""
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import ROWS

ROOT = Path(__file__).parents[1]


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_bench_smoke_prints_every_row_with_a_number():
    out = subprocess.run([sys.executable, "-m", "bench", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                         timeout=220)
    assert out.returncode == 0, out.stderr[-3000:]
    cells = {}
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) == 5 and line.startswith("| ") and parts[0] != "figure":
            cells[parts[0]] = parts[1]
    for label in ROWS:
        matches = [value for name, value in cells.items() if name.startswith(label)]
        assert matches, f"no row {label!r} in:\n{out.stdout}"
        assert math.isfinite(float(matches[0].replace(",", ""))), f"{label}: {matches[0]!r}"
    assert "CPU:" in out.stdout and "Python" in out.stdout


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_collector_load_runs_and_finds_every_accepted_beacon_in_the_topic():
    out = subprocess.run([sys.executable, "-m", "bench.collector_load", "--requests", "500", "--concurrency", "8"],
                         cwd=ROOT, capture_output=True, text=True, timeout=160)
    assert out.returncode == 0, out.stderr[-3000:]  # it exits non-zero when the topic disagrees
    assert "| accepted/s | p50 ms | p99 ms |" in out.stdout and "CPU:" in out.stdout
    assert "clicks topic holds 2,500 records for 2,500 accepted beacons" in out.stdout
