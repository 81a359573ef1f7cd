"""kill -9 of the worker while it writes files, then restart: no row lost, none in two files."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from tests.support.events import click
from tests.support.harness import (WorkerProcess, ends, produce, read_csv_files, wait_committed, wait_for_rows,
                                   wait_until, write_config)

pytestmark = pytest.mark.integration
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def wave(first_order: int, orders: int) -> tuple[list, list]:
    records, rows = [], []
    for o in range(first_order, first_order + orders):
        cid = f"K{o % 150:04d}"
        for n in range(1 + o % 3):
            it = {"order_id": f"R{o:05d}", "customer_id": cid, "occurred_at": (NOW - timedelta(minutes=1)).isoformat(),
                  "currency": "USD", "amount": "5.00", "category": "Books", "sku": f"B{n}", "quantity": 1}
            records.append((cid.encode(), orjson.dumps(it)))
            rows.append(("1000", "4321", it["occurred_at"], it["order_id"], f"IM{cid}", cid, "USD", "5.00",
                         "Books", f"B{n}", "1"))
    return records, rows


def test_kill_9_and_restart_loses_no_row_and_writes_none_twice(broker, tmp_path, app_id, record_property):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp_path / "data", kafka={"instance_id": "worker-0"}, store="rocksdb://",
                       attribution={"grace_s": 2}, batch={"max_rows": 10, "max_age_s": 1})
    items = f"{app_id}.order-items"
    produce(broker.bootstrap, f"{app_id}.clicks", [click(f"K{c:04d}", f"IMK{c:04d}", NOW - timedelta(hours=2))
                                                   for c in range(150)])
    worker = WorkerProcess(cfg, tmp_path / "worker.log").start()
    timings = {"join_s": worker.wait_ready()}
    expected, produced, next_order = [], [], 0
    restarts = []
    for round_ in range(3):
        for _ in range(3):
            records, rows = wave(next_order, 40)
            next_order += 40
            expected += rows
            before = set(out.glob("*.csv"))
            produced += produce(broker.bootstrap, items, records)
        if round_ < 2:
            # Killed as it delivers: a file of these records confirmed, others open, uploading or
            # acked but not committed (the commit interval is 1 s).
            wait_until(lambda: set(out.glob("*.csv")) - before, 30, "a file delivered", worker, every=0.02)
            worker.kill()
            records, rows = wave(next_order, 40)  # traffic goes on while the worker is down
            next_order += 40
            expected += rows
            produced += produce(broker.bootstrap, items, records)
            worker.start()
            restarts.append(worker.wait_ready())
    wait_for_rows(out, len(expected), timeout=120, worker=worker)
    wait_committed(broker.bootstrap, app_id, items, ends(produced), worker)  # no file is still to come
    files = read_csv_files(out)
    assert worker.stop() == 0

    where = {}
    for name, rows in files.items():
        for row in rows[1:]:
            where.setdefault(tuple(row), set()).add(name)
    twice = {row: names for row, names in where.items() if len(names) > 1}
    assert not twice, f"{len(twice)} rows in two files, e.g. {next(iter(twice.items()))}"
    got = Counter(tuple(r) for rows in files.values() for r in rows[1:])
    assert got == Counter(expected), (len(expected) - sum(got.values()), "rows missing")
    record_property("join_s", round(timings["join_s"], 1))
    record_property("restart_to_ready_s", [round(r, 1) for r in restarts])
    print(f"\ngroup join {timings['join_s']:.1f}s; restart to ready after kill -9: "
          + ", ".join(f"{r:.1f}s" for r in restarts))
