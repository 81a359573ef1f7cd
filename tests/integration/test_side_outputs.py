"""Side outputs go to the broker a turn's records at a time (streams/runtime/sends.py): each record
once, in the partition its key hashes to (Kafka's murmur2, what Faust's own send gave it), the
worker committing only what its side outputs confirmed."""
from __future__ import annotations

from collections import Counter

import pytest
from kafka import KafkaConsumer
from kafka.partitioner import murmur2

from streams.tools.devbroker import create_topics
from tests.support.harness import WorkerProcess, produce, read_topic, write_config

pytestmark = pytest.mark.integration
PARTITIONS = 4


def partition_count(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return len(consumer.partitions_for_topic(topic))
    finally:
        consumer.close()


def test_dead_letters_of_many_keys_land_once_each_in_their_key_s_partition(broker, tmp_path, app_id):
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=tmp_path / "out",
                       data_dir=tmp_path / "data")
    # As deploy/ creates it: the placement means something only with several partitions.
    create_topics(broker.bootstrap, [f"{app_id}.dead-letter"], PARTITIONS)
    # One produce call: each partition's fetch holds many invalid records, sent in one turn.
    invalid = [(f"C{n:03d}".encode(), b'{"not an order item": %d}' % n) for n in range(200)]
    worker = WorkerProcess(cfg, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        produce(broker.bootstrap, f"{app_id}.order-items", invalid)
        dead = read_topic(broker.bootstrap, f"{app_id}.dead-letter", expect=len(invalid))
    finally:
        assert worker.stop() == 0
    sources = Counter((dict(d.headers)["imref.source.partition"], dict(d.headers)["imref.source.offset"])
                      for d in dead)
    assert len(sources) == len(invalid) and max(sources.values()) == 1, sources.most_common(3)
    assert sorted(d.value for d in dead) == sorted(v for _, v in invalid)
    assert partition_count(broker.bootstrap, f"{app_id}.dead-letter") == PARTITIONS
    misplaced = [(d.key, d.partition) for d in dead if d.partition != (murmur2(d.key) & 0x7FFFFFFF) % PARTITIONS]
    assert not misplaced, misplaced[:5]
    assert all(dict(d.headers)["imref.reason"] for d in dead)
