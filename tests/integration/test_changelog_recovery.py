"""Table recovery a fetch at a time (streams/runtime/changelog.py) against Faust's own recovery,
on a changelog with overwrites, deletes and keys written again after their delete, each store;
and a worker killed half-way through its recovery."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer

from bench.memory import PARTITIONS, history_for, partition_of
from streams.tools.devbroker import create_topics
from tests.support.harness import WorkerProcess, wait_until, write_config

pytestmark = pytest.mark.integration


def changelog(customers: int) -> list[tuple[int, str, object]]:
    """(partition, key, value or None for a delete) in the order written: every key, then a third
    overwritten, a fifth deleted, and half of those written again."""
    cid = [f"cust-{i:08d}" for i in range(customers)]
    writes = [(i, history_for(i)) for i in range(customers)]
    writes += [(i, history_for(customers + i)) for i in range(0, customers, 3)]
    writes += [(i, None) for i in range(0, customers, 5)]
    writes += [(i, history_for(2 * customers + i)) for i in range(0, customers, 10)]
    return [(partition_of(cid[i].encode()), cid[i], value) for i, value in writes]


def write_changelog(bootstrap: str, topic: str, records) -> dict[int, int]:
    """Written as Faust writes a table's changelog (its json codec for keys and values; a delete is
    a tombstone); returns the last offset of each partition."""
    from faust.serializers import codecs

    dumps = codecs.get_codec("json").dumps
    create_topics(bootstrap, [topic], PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=1 << 18)
    try:
        futures = [producer.send(topic, key=dumps(key), value=None if value is None else dumps(value),
                                 partition=p) for p, key, value in records]
        producer.flush()
        last = {}
        for f in futures:
            meta = f.get(30)
            last[meta.partition] = max(last.get(meta.partition, -1), meta.offset)
        return last
    finally:
        producer.close()


def expected_contents(records) -> dict[str, dict]:
    """What a table holds after reading ``records`` in order, as the dump hook writes it (JSON)."""
    parts: dict[str, dict] = {}
    for p, key, value in records:
        if value is None:
            parts.get(str(p), {}).pop(key, None)
        else:
            parts.setdefault(str(p), {})[key] = json.loads(json.dumps(value))
    return {p: keys for p, keys in parts.items() if keys}


def recover(cfg: Path, tmp: Path, name: str, env: dict) -> dict:
    """Start a worker on ``cfg``, wait until its recovery is done, stop it; what the dump hook wrote."""
    dump = tmp / f"{name}.json"
    worker = WorkerProcess(cfg, tmp / f"{name}.log",
                           env={"IMREF_TEST_HOOKS": "1", "IMREF_TEST_DUMP_TABLES": str(dump), **env})
    worker.start().wait_ready(180)
    assert worker.stop() == 0, worker.log_text()[-3000:]
    return json.loads(dump.read_text())


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_a_table_recovered_a_fetch_at_a_time_equals_one_recovered_by_faust(broker, tmp_path, app_id, store):
    customers = 12_000
    records = changelog(customers)
    last = write_changelog(broker.bootstrap, f"{app_id}-clicks-changelog", records)
    runs = {}
    # Each partition read in several fetches (a broker may answer with a whole partition at once):
    # records past a fetch's end, and a key written again in a later fetch, are what can go wrong.
    fetches = {"BROKER_MAX_POLL_RECORDS": "1500"}
    for name, env in (("faust", {"IMREF_TEST_FAUST_RECOVERY": "1", **fetches}), ("fetch", fetches)):
        cfg = write_config(tmp_path / f"{name}.yaml", bootstrap=broker.bootstrap, app_id=app_id,
                           out_dir=tmp_path / f"{name}-out", data_dir=tmp_path / f"{name}-data", store=store)
        runs[name] = recover(cfg, tmp_path, name, env)
    faust, fetch = runs["faust"], runs["fetch"]

    # Each path did the recovery it is named after.
    assert faust["applied_a_fetch_at_a_time"] == 0
    assert fetch["applied_a_fetch_at_a_time"] >= len(records)
    assert len(fetch["partition_fetches"]) > PARTITIONS, fetch["partition_fetches"]
    expected = expected_contents(records)
    assert sum(map(len, expected.values())) == customers - customers // 5 + customers // 10
    clicks_faust, clicks_fetch = faust["tables"]["clicks"], fetch["tables"]["clicks"]
    assert clicks_faust["contents"] == expected
    assert clicks_fetch["contents"] == clicks_faust["contents"]
    if store == "rocksdb://":
        # The offset the next recovery starts from: the last one applied, in each partition.
        assert clicks_faust["persisted_offsets"] == {str(p): o for p, o in last.items()}
    assert clicks_fetch["persisted_offsets"] == clicks_faust["persisted_offsets"]
    # The tables whose changelogs are empty stay empty either way.
    for name, table in fetch["tables"].items():
        if name != "clicks":
            assert table["contents"] == faust["tables"][name]["contents"] == {}, name


def on_disk(data_dir: Path) -> dict[int, int]:
    """The offsets persisted in the clicks table's RocksDB partitions (the killed worker's last
    applied records), read as Faust reads them at start."""
    import rocksdb

    offsets = {}
    for p in range(PARTITIONS):
        path = data_dir / "v1" / "tables" / f"clicks-{p}.db"
        if path.exists():
            db = rocksdb.DB(str(path), rocksdb.Options(), read_only=True)
            value = db.get(b"__faust\0offset__")
            if value is not None:
                offsets[p] = int(value)
            del db
    return offsets


def test_kill_9_during_recovery_then_restart_recovers_the_whole_table(broker, tmp_path, app_id):
    records = changelog(12_000)
    last = write_changelog(broker.bootstrap, f"{app_id}-clicks-changelog", records)
    data_dir = tmp_path / "data"
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=tmp_path / "out",
                       data_dir=data_dir, store="rocksdb://", kafka={"instance_id": "worker-0"})
    # Small fetches, each held a moment: a recovery of seconds, killed after a few fetches.
    slow = {"IMREF_TEST_HOOKS": "1", "BROKER_MAX_POLL_RECORDS": "500", "IMREF_TEST_CHANGELOG_DELAY_S": "0.1"}
    persisted = []
    for kill in range(2):  # the second run starts from what the first persisted, and is killed too
        marks = tmp_path / f"marks-{kill}"
        marks.mkdir()
        worker = WorkerProcess(cfg, tmp_path / f"killed-{kill}.log", env={**slow, "IMREF_TEST_CHANGELOG_MARK": str(marks)})
        worker.start()
        wait_until(lambda: len(list(marks.iterdir())) >= 5, 120, "five changelog fetches applied", worker, every=0.02)
        worker.kill()
        persisted.append(on_disk(data_dir))
        assert persisted[-1], "nothing persisted before the kill"
        # Killed during its recovery: some partition not yet read to its end.
        assert sum(persisted[-1].values()) < sum(last.values()), (persisted[-1], last)
    assert sum(persisted[1].values()) > sum(persisted[0].values()), persisted  # the second run went on from the first

    dump = tmp_path / "after.json"
    worker = WorkerProcess(cfg, tmp_path / "restarted.log",
                           env={"IMREF_TEST_HOOKS": "1", "IMREF_TEST_DUMP_TABLES": str(dump)})
    worker.start().wait_ready(180)
    assert worker.stop() == 0, worker.log_text()[-3000:]
    after = json.loads(dump.read_text())
    clicks = after["tables"]["clicks"]
    assert clicks["contents"] == expected_contents(records)
    assert clicks["persisted_offsets"] == {str(p): o for p, o in last.items()}
    # It resumed from the offsets the killed runs persisted (the record at each is read again,
    # and skipped), not from the start of the changelog.
    assert after["applied_a_fetch_at_a_time"] == sum(end - persisted[1].get(p, -1) for p, end in last.items())


def read_dump(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def test_standby_replicas_are_kept_a_fetch_at_a_time_and_take_over_without_reading_again(broker, tmp_path, app_id):
    records = changelog(12_000)
    last = write_changelog(broker.bootstrap, f"{app_id}-clicks-changelog", records)
    workers, dumps, data = {}, {}, {}
    for name in ("a", "b"):
        data[name] = tmp_path / f"{name}-data"
        cfg = write_config(tmp_path / f"{name}.yaml", bootstrap=broker.bootstrap, app_id=app_id,
                           out_dir=tmp_path / "out", data_dir=data[name], store="rocksdb://")
        dumps[name] = tmp_path / f"{name}.json"
        workers[name] = WorkerProcess(cfg, tmp_path / f"{name}.log",
                                      env={"IMREF_TEST_HOOKS": "1", "IMREF_TEST_DUMP_TABLES": str(dumps[name])})
    # a recovers every partition; b joins, recovers the ones it takes as actives, and holds a's as
    # standbys (Faust's default of one replica), read from the start of their changelog.
    workers["a"].start().wait_ready(180)
    workers["b"].start().wait_ready(180)
    wait_until(lambda: on_disk(data["b"]) == last, 120, "b's four partitions persisted up to their last offset",
               workers["b"])
    b = read_dump(dumps["b"])["tables"]["clicks"]
    assert len(b["active"]) == len(b["standby"]) == 2 and set(b["active"]).isdisjoint(b["standby"]), b

    # a leaves: b takes its partitions over as actives, from what b's standbys persisted.
    assert workers["a"].stop() == 0, workers["a"].log_text()[-3000:]

    def took_over() -> dict | None:
        dump = read_dump(dumps["b"])
        return dump if dump["tables"]["clicks"]["active"] == [0, 1, 2, 3] else None

    wait_until(took_over, 120, "b active on every partition", workers["b"])
    after = took_over()
    clicks = after["tables"]["clicks"]
    assert clicks["contents"] == expected_contents(records)
    assert clicks["persisted_offsets"] == {str(p): o for p, o in last.items()}
    # Every record reached b's store once, by its path: its actives' recovery and its standbys
    # a fetch at a time, and nothing was read again at the take-over.
    assert after["applied_a_fetch_at_a_time"] == len(records)
    assert workers["b"].stop() == 0, workers["b"].log_text()[-3000:]
