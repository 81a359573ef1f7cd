"""``imref-stream replay`` on a real broker: clicks and order items spread over hours, a
sub-range replayed into files; the expected rows are computed here from the produced events
(range by record time, last click inside the window or first one within the grace after).
Then a real worker delivers files first, and the replay must not report its rows twice."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from kafka import KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from streams.tools.devbroker import create_topics
from tests.support.harness import ROOT, WorkerProcess, read_csv_files, wait_for_rows, write_config

pytestmark = pytest.mark.integration

HEADER = ["CampaignId", "ActionTrackerId", "EventDate", "OrderId", "ClickId", "CustomerId",
          "CurrencyCode", "Amount", "Category", "Sku", "Quantity"]
WINDOW = timedelta(days=1)
GRACE = timedelta(minutes=10)
MAX_ROWS = 4
T0 = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(days=2)
FROM, TO = T0 + timedelta(hours=2), T0 + timedelta(hours=5)


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def click(cid: str, ref: str, at: datetime) -> tuple[datetime, bytes, bytes]:
    return at, cid.encode(), orjson.dumps({"customer_id": cid, "im_ref": ref, "occurred_at": at.isoformat()})


def order(cid: str, oid: str, at: datetime, n: int = 1, **extra) -> list[dict]:
    return [{"order_id": oid, "customer_id": cid, "occurred_at": at.isoformat(), "currency": "EUR",
             "amount": f"{20 + i}.25", "category": "Garden", "sku": f"{oid}-{i}", "quantity": 1 + i, **extra}
            for i in range(n)]


def scenario() -> tuple[list, list]:
    m = lambda minutes: FROM + timedelta(minutes=minutes)  # noqa: E731
    clicks = [
        click("C01", "REF-01", FROM - timedelta(hours=1)),
        click("C02", "REF-02", FROM - timedelta(hours=3)),
        click("C03", "REF-03a", m(20) - timedelta(hours=2)),
        click("C03", "REF-03b", m(20) - timedelta(minutes=30)),  # the last one before the order wins
        click("C03", "REF-03c", m(20) + timedelta(minutes=5)),
        click("C04", "REF-04", m(30) + timedelta(minutes=5)),  # after the order, inside the grace
        click("C05", "REF-05", m(40) + timedelta(minutes=20)),  # after the grace: unattributed
        click("C06", "REF-06", m(50) - timedelta(hours=25)),  # before the window
        click("C07", "REF-07", FROM - timedelta(hours=23)),  # read, but a day before its late order
        click("C10", "REF-10", m(95)),
        click("C11", "REF-11", TO - timedelta(hours=1)),
    ]
    clicks += [click(f"C{i}", f"REF-{i}", m(10 * (i - 10)) - timedelta(hours=1)) for i in range(14, 21)]
    orders = [
        order("C01", "O-before", FROM - timedelta(minutes=10)),  # before the range
        order("C01", "O01", FROM),  # at --from: inside
        order("C02", "O02", m(10), 2),
        order("C03", "O03", m(20), 3),
        order("C04", "O04", m(30)),
        order("C05", "O05", m(40)),
        order("C06", "O06", m(50)),
        order("C08", "O08", m(70), 2, im_ref="CK-08"),  # checkout knew the click
        order("C09", "O09", m(80), currency="XYZ"),
        order("jane@example.com", "O-pii", m(90)),
        order("C10", "O10", m(100), 3),
        order("C07", "O07", TO - timedelta(minutes=10)),
        order("C11", "O11", TO),  # at --to: outside
        order("C12", "O12", TO + timedelta(hours=1)),
    ]
    orders += [order(f"C{i}", f"O{i}", m(10 * (i - 10)), 1 + i % 2) for i in range(14, 21)]
    items = [(datetime.fromisoformat(it["occurred_at"]), it["customer_id"].encode(), orjson.dumps(it))
             for o in orders for it in o]
    return clicks, items


def produce_at(bootstrap: str, topic: str, records: list) -> list:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=k, value=v, timestamp_ms=ms(at)) for at, k, v in sorted(records)]
        producer.flush()
        return [(v, f.get(10)) for (_, _, v), f in zip(sorted(records), futures)]
    finally:
        producer.close()


def expected(clicks: list, items: list) -> tuple[list[list[str]], Counter]:
    by_customer: dict[str, list] = {}
    for at, key, _ in clicks:
        by_customer.setdefault(key.decode(), []).append(at)
    refs = {(k.decode(), at): orjson.loads(v)["im_ref"] for at, k, v in clicks}
    rows, unattributed = [], Counter()
    for at, key, raw in items:
        it = orjson.loads(raw)
        if not FROM <= at < TO or it["currency"] != "EUR" or "@" in it["customer_id"]:
            continue
        cid, ref = it["customer_id"], it.get("im_ref")
        times = sorted(by_customer.get(cid, []))
        before = [t for t in times if at - WINDOW <= t <= at]
        after = [t for t in times if at < t <= at + GRACE]
        if not ref and (before or after):
            ref = refs[(cid, before[-1] if before else after[0])]
        if not ref:
            unattributed[cid] += 1
            continue
        rows.append(["1000", "4321", it["occurred_at"], it["order_id"], ref, cid, "EUR", it["amount"],
                     "Garden", it["sku"], str(it["quantity"])])
    return rows, unattributed


def replay(config, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", "replay", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=180, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_replay_writes_exactly_the_rows_of_the_range(broker, tmp_path):
    app_id = "replay"
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=tmp_path / "out",
                       data_dir=tmp_path / "data",
                       attribution={"window_days": WINDOW / timedelta(days=1), "grace_s": GRACE.total_seconds()},
                       batch={"max_rows": MAX_ROWS, "file_title": "backfill"})
    create_topics(broker.bootstrap, [f"{app_id}.clicks", f"{app_id}.order-items"], 4)
    clicks, items = scenario()
    produce_at(broker.bootstrap, f"{app_id}.clicks", clicks + [(FROM, b"C14", b"{broken")])
    where = {(orjson.loads(v)["order_id"], orjson.loads(v)["sku"]): (meta.partition, meta.offset)
             for v, meta in produce_at(broker.bootstrap, f"{app_id}.order-items", items)}
    rows, unattributed = expected(clicks, items)
    assert sorted(unattributed) == ["C05", "C06", "C07"] and len(rows) == 22

    run = replay(cfg, "--from", FROM.isoformat(), "--to", TO.isoformat().replace("+00:00", "Z"),
                 "--output", str(tmp_path / "replay"))
    assert run.returncode == 0, run.stderr
    files = read_csv_files(tmp_path / "replay")
    got = [row for content in files.values() for row in content[1:]]
    assert sorted(got) == sorted(rows)
    in_range = sum(FROM <= at < TO for at, _, _ in items)
    assert f"order items read: {in_range}\n" in run.stdout
    assert f"rows:             {len(rows)}\n" in run.stdout and f"files:            {len(files)}\n" in run.stdout
    assert "unattributed:     3 (click_outside_window 1, no_click 2)" in run.stdout
    assert "invalid:          2 (personal_data_in_customer_id 1, unknown_currency 1)" in run.stdout

    for name, content in files.items():
        assert content[0] == HEADER and 1 <= len(content) - 1 <= MAX_ROWS
        day, p, first, last = re.fullmatch(r"backfill_(\d{8})_p(\d{3})_(\d{12})-(\d{12})\.csv", name).groups()
        assert day in {f"{FROM:%Y%m%d}", f"{TO:%Y%m%d}"}
        p, first, last = int(p), int(first), int(last)
        orders_seen = []
        for row in content[1:]:
            assert where[(row[3], row[9])][0] == p and first <= where[(row[3], row[9])][1] <= last
            if row[3] not in orders_seen[-1:]:
                assert row[3] not in orders_seen, f"{name}: the items of order {row[3]} are not consecutive"
                orders_seen.append(row[3])
    files_of_order: dict[str, set[str]] = {}
    for name, content in files.items():
        for row in content[1:]:
            files_of_order.setdefault(row[3], set()).add(name)
    assert not [o for o, names in files_of_order.items() if len(names) > 1], "an order split over files"

    # Deterministic: replayed again through the configured connection, the same files.
    again = replay(cfg, "--from", FROM.isoformat(), "--to", TO.isoformat())
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.csv")} == \
           {p.name: p.read_bytes() for p in (tmp_path / "replay").glob("*.csv")}


def test_replay_refuses_times_without_zone_and_empty_ranges(tmp_path):
    cfg = write_config(tmp_path / "config.yaml", bootstrap="127.0.0.1:9", app_id="replay-args",
                       out_dir=tmp_path / "out", data_dir=tmp_path / "data", declare_topics=False)
    run = replay(cfg, "--from", "2026-11-01T00:00:00", "--to", "2026-11-02T00:00:00Z")
    assert run.returncode == 2 and "has no zone" in run.stderr
    run = replay(cfg, "--from", "2026-11-02T00:00:00Z", "--to", "2026-11-01T00:00:00Z")
    assert run.returncode == 2 and "--from must be before --to" in run.stderr


# -- a replay of what a real worker delivered ---------------------------------------------
W0 = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=3)
PHASES = {"A": (W0, 6), "B": (W0 + timedelta(hours=1), 5), "C": (W0 + timedelta(hours=2), 2)}


def phase_items(phase: str) -> list:
    at, n = PHASES[phase]
    return [(at + timedelta(minutes=i), f"{phase}{i}".encode(),
             orjson.dumps(order(f"{phase}{i}", f"O-{phase}{i}", at + timedelta(minutes=i), im_ref=f"R-{phase}{i}")[0]))
            for i in range(n)]


def span(phase: str, skip: int = 0) -> list[str]:
    """--from/--to covering a phase's items (from its item number ``skip`` on)."""
    at, n = PHASES[phase]
    return ["--from", (at + timedelta(minutes=skip)).isoformat(), "--to", (at + timedelta(minutes=n)).isoformat()]


def files_of(out) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.csv")}


def name(offsets: tuple[int, int]) -> str:
    """A file's name, dated by its first item's time as the worker dates it: the phases' items
    are offsets 0-5 (A), 6-10 (B) and 11-12 (C), a minute apart, so a run near midnight UTC gives
    one phase files of two days."""
    first = offsets[0]
    for (at, n) in PHASES.values():
        if first < n:
            break
        first -= n
    return f"conv_{at + timedelta(minutes=first):%Y%m%d}_p000_{offsets[0]:012d}-{offsets[1]:012d}.csv"


@pytest.fixture(scope="module")
def delivered(broker, tmp_path_factory):
    """A worker delivers phase A (offsets 0-5) in two age cuts, 0-2 and 3-5, then stops. Its
    cuts changelog is deleted: the worker's cuts of A are gone, as Kafka's compaction removes
    old cut lists. Restarted, it delivers phase B (6-10) as 6-8 and 9-10, recorded, and stops.
    Phase C (11-12) is produced after: not delivered. One partition; a replay by itself would
    cut at 4 rows (0-3, 4-7, ...), so only the recorded cuts give the worker's names."""
    tmp = tmp_path_factory.mktemp("delivered")
    app_id, out = "replay-worker", tmp / "out"
    cfg = write_config(tmp / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp / "data", topics={"partitions": 1},
                       batch={"max_rows": 4, "max_age_s": 1, "file_title": "conv"})
    items_topic = f"{app_id}.order-items"
    create_topics(broker.bootstrap, [f"{app_id}.clicks", items_topic], 1)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    worker = WorkerProcess(cfg, tmp / "worker.log")

    def deliver(phase: str, bursts: list[slice], rows: int) -> None:
        worker.start().wait_ready()
        items = phase_items(phase)
        for burst in bursts:  # each burst is cut by age before the next one arrives
            produce_at(broker.bootstrap, items_topic, items[burst])
            rows += len(items[burst])
            assert sum(len(c) - 1 for c in wait_for_rows(out, rows, worker=worker).values()) == rows
        assert worker.stop() == 0

    def committed() -> int:
        tp = TopicPartition(items_topic, 0)
        return admin.list_group_offsets({app_id: [tp]})[app_id][tp].offset

    try:
        deliver("A", [slice(0, 3), slice(3, 6)], 0)
        assert committed() == 6
        admin.delete_topics([f"{app_id}-batch-cuts-changelog"])
        deliver("B", [slice(0, 3), slice(3, 5)], 6)
        assert committed() == 11
    finally:
        admin.close()
    produce_at(broker.bootstrap, items_topic, phase_items("C"))
    a, b, c = (PHASES[p][0] for p in "ABC")
    worker_files = [name((0, 2)), name((3, 5)), name((6, 8)), name((9, 10))]
    assert sorted(files_of(out)) == worker_files, "the worker did not cut as the test expects"
    return cfg, out, {"A": a, "B": b, "C": c}


def rows_of(out, names) -> list[list[str]]:
    files = read_csv_files(out)
    return sorted(row for n in names for row in files[n][1:])


def test_replay_refuses_to_write_rows_the_worker_delivered_in_files_it_cannot_name(delivered):
    cfg, out, at = delivered
    before = files_of(out)
    run = replay(cfg, *span("A"))
    assert run.returncode == 3, run.stderr
    assert run.stdout.startswith("refused: nothing written\n")
    assert "refused without --allow-duplicates" in run.stderr and "  partition 0 offsets 0-5\n" in run.stderr
    assert f"  {name((0, 3))}  4 rows\n" in run.stderr and f"  {name((4, 5))}  2 rows\n" in run.stderr
    assert files_of(out) == before  # not one file written, touched or added


def test_replay_with_allow_duplicates_writes_them_again_under_its_own_names(delivered):
    cfg, out, at = delivered
    before = files_of(out)
    run = replay(cfg, *span("A"), "--allow-duplicates")
    assert run.returncode == 0, run.stderr
    added = sorted(set(files_of(out)) - set(before))
    assert added == [name((0, 3)), name((4, 5))]
    # The destination now holds every row of A twice: the duplicates impact would count.
    assert rows_of(out, added) == rows_of(out, [name((0, 2)), name((3, 5))])
    assert len(rows_of(out, added)) == 6
    assert "(duplicates rows the worker delivered)" in run.stdout


def test_replay_of_recorded_cuts_overwrites_the_worker_s_files_with_the_same_rows(delivered):
    cfg, out, at = delivered
    twins = [name((6, 8)), name((9, 10))]
    before = files_of(out)
    # From B's second item: inside the cut 6-8, which is replayed whole.
    run = replay(cfg, *span("B", skip=1))
    assert run.returncode == 0, run.stderr
    after = files_of(out)
    assert sorted(after) == sorted(before)  # no file of another name
    for n in twins:
        assert after[n][0] == before[n][0], f"{n}: other rows than the worker's"
        assert after[n][1] != before[n][1], f"{n}: not written again"
        assert f"  {n}  " in run.stdout and "(the worker's file: same name, replaces it)" in run.stdout
    assert {n: v for n, v in after.items() if n not in twins} == {n: v for n, v in before.items() if n not in twins}
    assert "order items read: 5\n" in run.stdout


def test_dry_run_prints_every_file_and_its_rows_and_writes_nothing(delivered):
    cfg, out, at = delivered
    before = files_of(out)
    run = replay(cfg, "--from", at["A"].isoformat(), "--to", (at["C"] + timedelta(hours=1)).isoformat(), "--dry-run")
    assert run.returncode == 3, run.stderr  # as the replay itself would answer: refused
    assert run.stdout.startswith("dry run: nothing written\n")
    listed = re.findall(r"^  (\S+\.csv)  (\d+) rows  \((.*)\)$", run.stdout, re.MULTILINE)
    assert listed == [
        (name((0, 3)), "4", "duplicates rows the worker delivered"),
        (name((4, 5)), "2", "duplicates rows the worker delivered"),
        (name((6, 8)), "3", "the worker's file: same name, replaces it"),
        (name((9, 10)), "2", "the worker's file: same name, replaces it"),
        (name((11, 12)), "2", "not delivered by the worker yet"),
    ]
    assert files_of(out) == before
    # Past the committed offset nothing is refused.
    run = replay(cfg, *span("C"), "--dry-run")
    assert run.returncode == 0, run.stderr
    assert re.findall(r"^  (\S+\.csv)  (\d+) rows", run.stdout, re.MULTILINE) == [(name((11, 12)), "2")]
    assert files_of(out) == before
