"""Every record a producer may write is readable: batches compressed with each of Kafka's codecs
(gzip, snappy, lz4, zstd) by two client implementations (kafka-python, and librdkafka through
confluent-kafka), on both gated topics, against the real broker of the session. A batch the
installation still cannot read stops the worker with what to install, not a silent crash loop."""
from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import confluent_kafka
import orjson
import pytest
from kafka import KafkaProducer

from tests.support.harness import WorkerProcess, read_csv_files, write_config

pytestmark = pytest.mark.integration
CODECS = ("gzip", "snappy", "lz4", "zstd")
CLIENTS = ("kafka-python", "librdkafka")
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def produce_compressed(client: str, codec: str, bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]):
    """One compressed batch per partition (linger: the records go together)."""
    if client == "kafka-python":
        producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=50, acks="all")
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush()
        producer.close()
        return
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                                         "linger.ms": 50, "acks": "all",
                                         # the Java client's partitioner (murmur2), as kafka-python and Faust
                                         "partitioner": "murmur2_random"})
    errors = []
    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=lambda err, msg: err and errors.append(err))
    assert producer.flush(30) == 0 and not errors, errors


def click(customer: str, ref: str) -> tuple[bytes, bytes]:
    return customer.encode(), orjson.dumps({"customer_id": customer, "im_ref": ref,
                                            "occurred_at": (NOW - timedelta(minutes=10)).isoformat()})


def order_item(customer: str, order: str) -> tuple[bytes, bytes]:
    return customer.encode(), orjson.dumps({
        "order_id": order, "customer_id": customer, "occurred_at": (NOW - timedelta(minutes=5)).isoformat(),
        "currency": "EUR", "amount": "19.90", "category": "Garden", "sku": "S", "quantity": 1})


def test_batches_of_every_codec_from_two_client_implementations_are_delivered(broker, tmp_path, app_id):
    """For each client and codec, compressed clicks, then compressed items of those customers (no
    im_ref: each is joined through its click): every item is in exactly one file, with its click."""
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out,
                       data_dir=tmp_path / "data", batch={"max_rows": 50, "max_age_s": 1},
                       attribution={"grace_s": 20})
    worker = WorkerProcess(cfg, tmp_path / "worker.log").start()
    expected = {}
    try:
        worker.wait_ready()
        for client in CLIENTS:
            for codec in CODECS:
                tag = f"{client}-{codec}"
                customers = [f"{tag}-C{n}" for n in range(6)]
                produce_compressed(client, codec, broker.bootstrap, f"{app_id}.clicks",
                                   [click(c, f"IR-{c}") for c in customers])
                produce_compressed(client, codec, broker.bootstrap, f"{app_id}.order-items",
                                   [order_item(c, f"O-{c}-{k}") for c in customers for k in range(3)])
                expected.update({f"O-{c}-{k}": f"IR-{c}" for c in customers for k in range(3)})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.proc.poll() is None:
            rows = [row for rows in read_csv_files(out).values() for row in rows[1:]]
            if len(rows) >= len(expected):
                break
            time.sleep(0.3)
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    rows = [row for rows in read_csv_files(out).values() for row in rows[1:]]
    files_per_order = Counter(row[3] for row in rows)
    assert set(files_per_order) == set(expected), f"lost: {sorted(set(expected) - set(files_per_order))[:10]}"
    assert max(files_per_order.values()) == 1
    assert {row[3]: row[4] for row in rows} == expected


def test_a_batch_the_installation_cannot_read_stops_the_worker_saying_what_to_install(broker, tmp_path, app_id):
    """The same worker on an installation without the codec libraries (cramjam hidden, as
    aiokafka is without its extras): the lz4 batch stops it with a non-zero exit and a message that
    says what to install. Before, the fetcher crashed on every restart with aiokafka's 'Libraries
    for lz4 compression codec not found' and no word of a fix."""
    cfg = write_config(tmp_path / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=tmp_path / "out",
                       data_dir=tmp_path / "data")
    worker = WorkerProcess(cfg, tmp_path / "worker.log", env={"IMREF_TEST_WITHOUT": "cramjam"}).start()
    worker.wait_ready()
    produce_compressed("librdkafka", "lz4", broker.bootstrap, f"{app_id}.order-items",
                       [order_item("C1", "O1"), order_item("C1", "O2")])
    try:
        worker.proc.wait(60)
    finally:
        if worker.proc.poll() is None:
            worker.kill()
    log = worker.log_text()
    assert worker.proc.returncode not in (0, None), log[-3000:]
    assert "stopping the worker: reading a fetched record batch failed" in log, log[-3000:]
    assert "lz4" in log and "pip install 'aiokafka[lz4,snappy,zstd]'" in log
