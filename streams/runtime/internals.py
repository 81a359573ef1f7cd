"""Every private name of Faust and aiokafka the worker relies on, in one list, checked before the
worker starts (``check``, called by ``create_app``): an upgrade that renames one stops the worker
at start-up, naming what is missing, instead of silently losing a guarantee (an override Faust no
longer calls, a readiness check that can never pass, a table write in the wrong partition).

A name counts as present when the class (or module) has it, or when one of the class's
constructors assigns it to ``self`` (instance state such as ``_conns`` exists only on instances).
Public methods are listed only where the commit gate overrides them (an override that Faust no
longer calls would be as silent as a renamed private one)."""
from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Internal:
    owner: str  # "module" or "module:Class"
    name: str
    why: str  # what of ours needs it

    def __str__(self) -> str:
        return f"{self.owner.replace(':', '.')}.{self.name}"


_FAUST_CONSUMER = "faust.transport.drivers.aiokafka:Consumer"
_GATE = "commit gate (runtime/consumer.py)"
_CHANGELOG = "changelog fetches applied a fetch at a time (runtime/changelog.py)"
INTERNALS = [
    # runtime/consumer.py: the commit gate overrides or reads these.
    *(Internal(_FAUST_CONSUMER, name, _GATE) for name in (
        "_new_offset", "_filter_tps_with_pending_acks", "_commit", "_seek", "_wait_next_records",
        "_read_offset", "_acked", "_acked_index", "_committed_offset",
        "perform_seek", "seek_to_committed", "seek_wait", "earliest_offsets", "pause_partitions",
        "resume_partitions", "on_partitions_revoked", "on_partitions_assigned")),
    Internal(_FAUST_CONSUMER, "_thread", "readiness: the consumer's broker connections"),
    Internal(_FAUST_CONSUMER, "flow_active", "a fetch returned while the flow is stopped goes back to its position"),
    *(Internal(owner, name, "a fetch returned while the flow is stopped goes back to its position") for owner, name in (
        ("aiokafka:AIOKafkaConsumer", "_subscription"),
        ("aiokafka.consumer.subscription_state:SubscriptionState", "subscription"),
        ("aiokafka.consumer.subscription_state:Subscription", "assignment"),
        ("aiokafka.consumer.subscription_state:Assignment", "state_value"),
        ("aiokafka.consumer.subscription_state:TopicPartitionState", "has_valid_position"),
        ("aiokafka.consumer.subscription_state:TopicPartitionState", "position"))),
    Internal("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_consumer",
             "readiness: the consumer's broker connections"),
    Internal("aiokafka:AIOKafkaConsumer", "_client", "readiness: the consumer's broker connections"),
    Internal("aiokafka.client:AIOKafkaClient", "_conns", "readiness: the consumer's broker connections"),
    Internal("aiokafka.conn:AIOKafkaConnection", "connected", "readiness: the consumer's broker connections"),
    # runtime/changelog.py: changelog fetches applied for Faust's Recovery, kept as _slurp_changelogs keeps it.
    *(Internal("faust.tables.recovery:Recovery", name, _CHANGELOG) for name in (
        "_active_events_received_at", "_standby_events_received_at", "_processing_times",
        "_last_flush_at", "_actives_span", "_standbys_span",
        "_set_recovery_ended", "_slurp_changelogs", "active_tps", "standby_tps", "active_offsets", "standby_offsets",
        "tp_to_table", "buffers", "in_recovery", "need_recovery", "flush_buffers", "signal_recovery_end",
        "standby_remaining_total", "num_samples_required_for_estimate")),
    *(Internal("faust.tables.manager:TableManager", name, _CHANGELOG) for name in ("_changelogs", "_tables_finalized")),
    Internal("faust.tables.base:Collection", "_on_changelog_event", _CHANGELOG),
    Internal(_FAUST_CONSUMER, "_to_message", _CHANGELOG),
    # runtime/pacing.py: empty fetches paced on brokers that answer them at once.
    Internal(_FAUST_CONSUMER, "_new_consumer_thread", "empty fetches paced (runtime/pacing.py)"),
    Internal("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "on_start", "empty fetches paced (runtime/pacing.py)"),
    Internal("aiokafka:AIOKafkaConsumer", "_fetcher", "empty fetches paced (runtime/pacing.py)"),
    Internal("aiokafka.consumer.fetcher:Fetcher", "_proc_fetch_request", "empty fetches paced (runtime/pacing.py)"),
    # runtime/supervision.py: a consumer group coordination that ends stops the worker.
    Internal("aiokafka:AIOKafkaConsumer", "_coordinator", "the worker stops when its group coordination ends"),
    Internal("aiokafka.consumer.group_coordinator:GroupCoordinator", "_coordination_task",
             "the worker stops when its group coordination ends"),
    # runtime/app.py
    Internal("faust:App", "_new_transport", "the transport that creates the gated consumer"),
    Internal("faust:App", "_new_web", "the web server without Faust's JSON index"),
    Internal("faust:App", "_consumer", "the graceful stop: pause and drain before Faust commits"),
    Internal("faust.web.drivers.aiohttp:Web", "production_blueprints", "the web server without Faust's JSON index"),
    Internal("faust.transport.drivers.aiokafka:Producer", "_ensure_producer",
             "output topics tracked by the producer"),
    Internal("aiokafka:AIOKafkaProducer", "client", "output topics tracked by the producer"),
    Internal("aiokafka.client:AIOKafkaClient", "add_topic", "output topics tracked by the producer"),
    # runtime/sends.py: side outputs in record batches, where Faust's send would put each record.
    Internal("aiokafka:AIOKafkaProducer", "_partition", "side-output records in the partition aiokafka picks"),
    # runtime/tables.py: table writes from outside a Faust stream.
    Internal("faust.streams", "_current_event", "table writes name their partition"),
    Internal("faust.stores.memory:Store", "_key_partition", "memory tables: the partition of a written key"),
    *(Internal("faust.stores.rocksdb:Store", name, "RocksDB tables: deletes and the sweep's reads")
      for name in ("_dbs", "_key_index", "_encode_key", "_decode_key", "_decode_value")),
]


def _constructor_assigns(cls: type, name: str) -> bool:
    assigned = re.compile(rf"\bself\.{re.escape(name)}\s*(:[^=\n]+)?=")
    for klass in cls.__mro__:
        for method in ("__init__", "__post_init__"):
            fn = klass.__dict__.get(method)
            if fn is None:
                continue
            try:
                if assigned.search(inspect.getsource(fn)):
                    return True
            except (OSError, TypeError):  # no source (C extension)
                continue
    return False


def present(internal: Internal) -> bool:
    module_name, _, class_name = internal.owner.partition(":")
    try:
        owner = importlib.import_module(module_name)
        if class_name:
            owner = getattr(owner, class_name)
    except (ImportError, AttributeError):
        return False
    if hasattr(owner, internal.name):
        return True
    return inspect.isclass(owner) and _constructor_assigns(owner, internal.name)


def missing() -> list[Internal]:
    return [i for i in INTERNALS if not present(i)]


def check() -> None:
    gone = missing()
    if gone:
        raise RuntimeError("the installed Faust/aiokafka lack what the worker relies on: "
                           + "; ".join(f"{i} ({i.why})" for i in gone))
