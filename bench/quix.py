"""A peer written with quix-streams 3.x, the way its documentation builds an enrichment join.

    python -m bench.quix --bootstrap HOST:PORT --clicks TOPIC --items TOPIC --out DIR_OR_FILE \
        --app-id GROUP --expect N

One ``Application`` (consumer group = ``--app-id``, earliest, at-least-once, quix's default
5 s checkpoints), one ``StreamingDataFrame`` per topic, raw bytes in, and the two concatenated
(``sdf.concat``: same key, same partition count, same partitioner, so one stateful step sees
one RocksDB store per partition, changelogged). That step validates every record with our
compiled validators (orjson + schema, ``schemas.validation``) and either stores the click's
im_ref under the customer (the message key) or joins an order item: its own im_ref, else the
stored one. Rows (``streams.core.csvfile.conversion_row``) go to a ``BatchingSink`` that writes, per
checkpoint and partition, CSV files of up to 10 000 rows with ``render``. Invalid events are
dropped (there are none in the benchmark's data; the pipeline would dead-letter them).

Order: ``concat`` of two topics puts quix's consumer in its buffered mode, which processes the
same-numbered partitions of both topics in timestamp order. The benchmark produces every click
before the first item, so all clicks are stored before any item is joined (measured: 5 000
clicks, then 50 000 items); an item whose click is later than it gets no im_ref and no row
(there is no grace wait as in the pipeline). The clicks are inside the timed span, as they are
for the pipeline and bench/naive.py.

Prints one JSON line of figures once ``--expect`` order items are processed (timed from the
first record of either topic; CPU is ``time.process_time``: all threads, librdkafka's included)
and committed by a forced last checkpoint, then exits.

It runs in its own virtualenv (``.venv-quix``, made by scripts/setup.sh): quixstreams brings
rocksdict, and with rocksdict importable Faust switches its RocksDB store to it, which would
change the worker under test."""
from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from quixstreams import Application, message_context
from quixstreams.models.topics.admin import TopicAdmin
from quixstreams.sinks import BatchingSink, SinkBatch

from schemas.validation import InvalidEvent, check_event_age, event_time, validate_click, validate_order_item
from streams.core.csvfile import conversion_row, render

MAX_ROWS = 9_999
CAMPAIGN_ID, ACTION_TRACKER_ID, MAX_AGE_DAYS = 1000, 4321, 88  # as tests/support/harness.py configures


_inspect_topics = TopicAdmin.inspect_topics


def _inspect_topics_with_defaults(self, topic_names, timeout=30):
    """The test broker (Tansu) answers DescribeConfigs with only the configs a topic was created
    with, none of the broker defaults, and quix needs the inputs' ``retention.ms`` to derive its
    changelog topic's config (KeyError otherwise). Fill in Kafka's defaults; a no-op on Kafka."""
    configs = _inspect_topics(self, topic_names, timeout)
    for config in configs.values():
        if config is not None:
            config.extra_config.setdefault("retention.ms", "604800000")
            config.extra_config.setdefault("retention.bytes", "-1")
    return configs


TopicAdmin.inspect_topics = _inspect_topics_with_defaults


class CsvFiles(BatchingSink):
    """Each flushed partition batch as CSV files of up to ``MAX_ROWS`` rows, named by partition
    and first offset and renamed into place (a batch replayed after a crash rewrites its file)."""

    def __init__(self, folder: Path, prefix: str):
        super().__init__()
        self.folder, self.prefix = folder, prefix

    def setup(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, batch: SinkBatch) -> None:
        for chunk in batch.iter_chunks(MAX_ROWS):
            path = self.folder / f"{self.prefix}-p{batch.partition}-{chunk[0].offset:012d}.csv"
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(render([entry.value for entry in chunk]))
            os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser()
    for a in ("--bootstrap", "--clicks", "--items", "--out", "--app-id"):
        p.add_argument(a, required=True)
    p.add_argument("--expect", type=int, required=True)
    args = p.parse_args()

    out = Path(args.out)  # "x.csv": files x-p<partition>-<offset>.csv beside it; else a folder of files
    folder, prefix = (out.parent, out.stem) if out.suffix == ".csv" else (out, "quix")
    app = Application(
        broker_address=args.bootstrap, consumer_group=args.app_id, auto_offset_reset="earliest",
        state_dir=out.parent / f"{args.app_id}.quix-state", loglevel="WARNING",
        # Tansu holds a JoinGroup for half the session timeout (librdkafka's default: 45 s).
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        on_message_processed=lambda topic, partition, offset: counted(topic),
    )
    raw = {"key_deserializer": "bytes", "value_deserializer": "bytes"}
    clicks_topic, items_topic = args.clicks, args.items
    clicks = app.dataframe(app.topic(clicks_topic, **raw))
    items = app.dataframe(app.topic(items_topic, **raw))
    sink = CsvFiles(folder, prefix)  # quix's own CSVSink writes one JSON-valued file, not impact's
    state = {"items": 0, "t0": None, "cpu0": None}

    def join(value: bytes, key: bytes, _timestamp: int, _headers, store):
        if state["t0"] is None:
            state["t0"], state["cpu0"] = time.perf_counter(), time.process_time()
        if message_context().topic == clicks_topic:
            try:
                click = validate_click(value, key)
            except InvalidEvent:
                return None
            store.set("im_ref", click["im_ref"])
            return None
        try:
            item = validate_order_item(value, key)
            occurred = event_time(item)
            check_event_age(occurred, datetime.now(timezone.utc), MAX_AGE_DAYS)
        except InvalidEvent:
            return None
        ref = item.get("im_ref") or store.get("im_ref")
        return conversion_row(CAMPAIGN_ID, ACTION_TRACKER_ID, item, occurred, ref) if ref else None

    def counted(topic: str) -> None:
        if topic != items_topic:
            return
        state["items"] += 1
        if state["items"] == args.expect:
            # The last checkpoint, forced (quix's run loop does the same on stop): rows to files,
            # changelog produced and flushed, offsets committed, RocksDB written. Runs shorter
            # than the 5 s checkpoint interval would otherwise time no checkpoint at all.
            app._processing_context.commit_checkpoint(force=True)  # noqa: SLF001
            print(json.dumps({"items": state["items"], "wall_s": time.perf_counter() - state["t0"],
                              "cpu_s": time.process_time() - state["cpu0"]}), flush=True)
            os._exit(0)

    clicks.concat(items).apply(join, stateful=True, metadata=True).filter(lambda row: row is not None).sink(sink)
    app.run()


if __name__ == "__main__":
    main()
