"""What `make run` starts keeps every table key and every file over a restart of its worker: the
demo's own embedded broker and config (streams/tools/demo.py), the worker killed with -9 right
after it delivered a file and stopped with SIGTERM, each time restarted.

Items of customers whose only click came before a restart must carry that click after it (the
click table recovered whole), and a file delivered before a restart, re-formed after it, must be
the same bytes. On Tansu the table lost keys at the first restart here (items that had clicks
went unattributed, re-formed files had fewer rows): Tansu answers ListOffsets short, and Faust
stops its recovery there."""
from __future__ import annotations

import signal
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from streams.tools.demo import Demo
from tests.support.harness import read_csv_files, wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.broker("true_end_offsets", reason="the demo's broker must answer ListOffsets right: on "
                                                            "Tansu a restarted worker recovers part of its table")]
CUSTOMERS = 120
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def wave(producer, wave_no: int) -> list[tuple]:
    """One order of 1-3 items per customer; returns the rows expected in the files."""
    rows = []
    for c in range(CUSTOMERS):
        customer, order = f"DC{c:04d}", f"W{wave_no}-O{c:04d}"
        at = (NOW - timedelta(minutes=10 - wave_no)).isoformat()
        items = [{"sku": f"S{n}", "category": "Garden", "amount": "9.50", "quantity": 1} for n in range(1 + c % 3)]
        producer.order(order, customer, "USD", items, occurred_at=at)
        rows += [("1000", "4321", at, order, f"IR{customer}", customer, "USD", "9.50", "Garden", it["sku"], "1")
                 for it in items]
    producer.flush()
    return rows


def test_the_demo_worker_keeps_every_click_and_every_file_over_kill_9_and_sigterm(tmp_path):
    with Demo(tmp_path / "demo") as demo:
        demo.start_worker()
        producer = demo.producer()
        for c in range(CUSTOMERS):  # every click before the first restart, none after
            producer.click(f"DC{c:04d}", f"IRDC{c:04d}", (NOW - timedelta(hours=1)).isoformat())
        producer.flush()
        expected = wave(producer, 1)
        # Killed at a delivery: the first file confirmed, its offsets not yet committed (1 s interval).
        wait_until(lambda: demo.rows(), 60, "a delivered file", demo.worker)
        assert demo.stop_worker(signal.SIGKILL) == -signal.SIGKILL
        before_kill = {p.name: p.read_bytes() for p in demo.files_dir.glob("*.csv")}
        demo.start_worker()
        expected += wave(producer, 2)
        demo.wait_rows(len(expected))
        before_stop = {p.name: p.read_bytes() for p in demo.files_dir.glob("*.csv")}
        assert demo.stop_worker(signal.SIGTERM) == 0
        demo.start_worker()
        expected += wave(producer, 3)
        demo.wait_rows(len(expected))
        producer.close()
        assert demo.stop_worker(signal.SIGTERM) == 0

    after = {p.name: p.read_bytes() for p in demo.files_dir.glob("*.csv")}
    changed = [name for name, data in {**before_kill, **before_stop}.items() if after.get(name) != data]
    assert changed == [], "delivered files re-formed differently after a restart"
    rows = Counter(tuple(r) for rows in read_csv_files(demo.files_dir).values() for r in rows[1:])
    assert rows == Counter(expected), f"{sum(rows.values())} rows for {len(expected)} expected"
