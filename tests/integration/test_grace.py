"""A worker catching up a backlog reads order items further ahead of their clicks than the grace:
each item still gets the click that is in the clicks topic, none goes to the unattributed topic.

The clicks topic gets a backlog with each item's click at its end, then the items come; a fetch
brings one record batch of a partition and the consumer hands over 200 records a turn, so the
clicks take many fetches and turns (each turn of clicks 20 ms slower: seconds, timers running
between them) and the items one. With a 0.2 s grace counted on the wall clock alone, the items went to the unattributed topic
while their clicks were still being read."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.support import events
from tests.support.harness import (WorkerProcess, metrics, produce, read_csv_files, read_topic, wait_until,
                                   write_config)

pytestmark = pytest.mark.integration
NOW = datetime.now(timezone.utc).replace(microsecond=0)
BACKLOG = 40_000  # clicks before the ones the items need: 200 turns of 20 ms at least
ITEMS = 40


def test_items_read_ahead_of_their_clicks_wait_for_the_clicks_partition_not_just_the_grace(broker, tmp_path, app_id):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp_path / "data", attribution={"grace_s": 0.2},
                       batch={"max_rows": ITEMS, "max_age_s": 1})
    worker = WorkerProcess(cfg, tmp_path / "worker.log", env={"IMREF_TEST_HOOKS": "1",
                                                               "IMREF_TEST_SMALL_FETCHES": "4096,200,0.02"}).start()
    try:
        worker.wait_ready()
        # While the worker reads the clicks, slower than they are produced, the items come: it reads
        # them within a few turns, seconds before it reaches their clicks at the end of the backlog.
        an_hour_ago = NOW - timedelta(hours=1)
        backlog = [events.click(f"B{n:06d}", f"BREF{n}", an_hour_ago) for n in range(BACKLOG)]
        needed = [events.click(f"C{n:03d}", f"REF-{n:03d}", an_hour_ago) for n in range(ITEMS)]
        produce(broker.bootstrap, f"{app_id}.clicks", backlog + needed)
        items = [events.item(f"C{n:03d}", f"O{n:03d}", NOW - timedelta(minutes=5)) for n in range(ITEMS)]
        produce(broker.bootstrap, f"{app_id}.order-items", [events.encode(it) for it in items])
        rows = lambda: [row for found in read_csv_files(out).values() for row in found[1:]]
        gone = lambda: sum(v for (name, _), v in metrics(worker.port).items() if name == "imref_unattributed_total")
        wait_until(lambda: len(rows()) + gone() >= ITEMS, 180, f"{ITEMS} items in files or unattributed", worker)
    finally:
        assert worker.stop() == 0
    unattributed = read_topic(broker.bootstrap, f"{app_id}.unattributed", expect=0, timeout=5)
    assert not unattributed, f"{len(unattributed)} items unattributed although their clicks are in the topic"
    assert sorted((row[3], row[4]) for row in rows()) == [(f"O{n:03d}", f"REF-{n:03d}") for n in range(ITEMS)]
