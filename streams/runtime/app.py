"""The Faust app: topics, tables and timers wired to the flows, from validated settings."""
from __future__ import annotations

import asyncio

import faust
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.web.drivers import aiohttp as faust_web

from connectors import build_connection

from ..config import Settings
from ..core.changes import MODIFICATION_HEADER
from ..delivery.ledger import Ledger
from ..flow.changes import Changes
from ..flow.conversions import Conversions
from ..flow.flow import Flow, Outputs
from ..kafka import ssl_context
from ..metrics import Metrics
from . import health, internals, reports, sweep, web
from .consumer import GatedConsumer
from .sends import BatchedTopic
from .supervision import Supervisor
from .tables import TableWriter

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def _broker_credentials(k) -> faust.auth.Credentials | None:
    context = ssl_context(k)
    if k.security_protocol == "PLAINTEXT":
        return None
    if k.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    password = k.password.reveal().get_secret_value()
    return faust.SASLCredentials(username=k.username, password=password, ssl_context=context,
                                 mechanism=k.sasl_mechanism)


class _Consumer(GatedConsumer):
    async def _wait_next_records(self, timeout):
        try:
            return await super()._wait_next_records(timeout)
        except (UnsupportedCodecError, CorruptRecordException) as exc:
            # A record batch that cannot be read fails every fetch of its partition, before any
            # record reaches us: nothing to dead-letter, and no later fetch gets past it.
            self.app.supervisor.stop("reading a fetched record batch", exc)
            raise


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _Web(faust_web.Web):
    production_blueprints = []  # Faust's JSON index would take "/", the status page's path


class ImrefApp(faust.App):
    ledger: Ledger  # read by the consumer when Faust creates it at start-up
    supervisor: Supervisor  # stops the worker when retrying cannot help
    metrics: Metrics
    conversions: Conversions
    changes: Changes | None = None  # only with an action_modifications connection
    flows: list[Flow]  # the conversions' flow, and the changes' one if any

    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)

    def _new_web(self) -> _Web:
        return _Web(self)

    async def on_stop(self) -> None:
        # Flush before Faust's own stop sequence commits the offsets: the open batches are
        # delivered and acked first, so the final commit covers them. Not when a failure stops the
        # worker: it restarts at once, and its partitions are read again.
        stopping_on_failure = getattr(self, "supervisor", None) is not None and self.supervisor.reason is not None
        if getattr(self, "flows", None) and self._consumer is not None and not stopping_on_failure:
            try:
                assignment = self._consumer.assignment()
            except Exception:  # consumer never started
                assignment = set()
            if assignment:
                self.supervisor.stopping = True
                self.flow_control.suspend()
                self._consumer.pause_partitions(assignment)
                bound = self.imref.stop_timeout_s
                await asyncio.gather(*(f.drain(bound) for f in self.flows), self.conversions.settle(bound))
        await super().on_stop()


PRODUCER_BATCH_BYTES = 512 * 1024


def create_app(settings: Settings) -> ImrefApp:
    internals.check()
    k = settings.kafka
    app = ImrefApp(
        settings.app_id,
        broker=k.brokers,
        broker_credentials=_broker_credentials(k),
        store=settings.store,
        datadir=str(settings.data_dir),
        table_standby_replicas=settings.standby_replicas,
        processing_guarantee="at_least_once",
        broker_session_timeout=k.session_timeout_s,
        broker_heartbeat_interval=k.heartbeat_interval_s,
        broker_rebalance_timeout=k.rebalance_timeout_s,
        broker_commit_interval=k.commit_interval_s,
        broker_max_poll_records=k.max_poll_records,
        consumer_group_instance_id=k.instance_id,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replicas,
        stream_wait_empty=False,
        producer_acks=-1,
        # aiokafka sends a partition one record batch per request, one request at a time per
        # broker: a cut's few thousand order records in Faust's 16 KiB batches took 25 round trips
        # behind each other, and the file waited seconds for them. Kafka's default largest batch
        # is 1 MB (message.max.bytes, max.request.size).
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        web_enabled=settings.web.enabled,
        web_bind=settings.web.host,
        web_port=settings.web.port,
        # Faust's own pages would publish table contents (customer ids, click ids) and internals.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        autodiscover=False,
    )
    app.imref = settings
    app.supervisor = Supervisor(app)
    stop = app.supervisor.stop
    t = settings.topics
    dead_letter = _side_output(app, t.dead_letter)
    connections = [build_connection(c) for c in settings.pushes("conversions")]
    metrics = app.metrics = Metrics([c.name for c in connections])
    ledger = app.ledger = Ledger(count=metrics.inc)

    # Latest clicks per customer, co-partitioned with both input topics.
    clicks = TableWriter(app.Table("clicks", partitions=t.partitions, key_type=str), stop)
    sweep.install(app, settings, clicks)
    # Taken orders (order id -> its file and lines), in the partition of the order's customer.
    orders = TableWriter(app.Table("orders", partitions=t.partitions, key_type=str), stop)
    sweep.install(app, settings, orders)
    flow = Flow(settings.batch, title=settings.batch.file_title, header=settings.impact.csv_header, ledger=ledger,
                cuts=_cuts_table(app, "batch-cuts", t.partitions), connections=connections, metrics=metrics, stop=stop)
    conversions = app.conversions = Conversions(
        settings, flow=flow, ledger=ledger, clicks=clicks, orders=orders, dead_letter=dead_letter,
        unattributed=_side_output(app, t.unattributed), audit=_side_output(app, t.audit),
        outputs=Outputs(metrics, stop), clicks_end=_end_offsets(app, t.clicks))
    app.flows = [flow]
    _gate(app, ledger, t.clicks, conversions.on_clicks)
    _gate(app, ledger, t.order_items, conversions.on_items, conversions.forget)
    app.timer(interval=0.5, name="conversions tick")(conversions.tick)

    changes = [build_connection(c) for c in settings.pushes("action_modifications")]
    if changes:
        app.changes = _install_changes(app, settings, changes, ledger, dead_letter, metrics, conversions)
    health.check_connections_at_start(app, connections + changes, metrics)
    if settings.web.enabled:
        web.install(app, metrics)
    reports.install(app, settings)
    outputs = [t.dead_letter, t.unattributed, t.audit] + [w.table.changelog_topic.get_topic_name()
                                                         for w in (clicks, orders, flow.cuts)]
    if app.changes is not None:
        outputs += [t.unmatched_changes] + [w.table.changelog_topic.get_topic_name()
                                            for w in (app.changes.reported, app.changes.flow.cuts)]
    _track_output_topics(app, outputs)
    return app


def track_topics(producer, topics: list[str]):
    """aiokafka's producer keeps metadata only for the topics it tracks, and it does not track a
    topic whose partitions it first learnt from the full fetch it makes at start. As soon as it
    tracks any other topic, the untracked one drops out of its metadata: records already batched
    for it then wait for a leader that metadata no longer lists, until the batch expires (Faust:
    20 min), and every producer flush -- before each commit, and at stop -- waits with them.
    Tracking every topic the worker writes to keeps them all in its metadata."""
    return asyncio.gather(*(producer.client.add_topic(topic) for topic in topics))


def _track_output_topics(app: ImrefApp, topics: list[str]) -> None:
    async def track() -> None:  # an app task: runs once the producer has started
        await track_topics(app.producer._ensure_producer(), topics)

    app.task(track)


def _end_offsets(app: ImrefApp, topic: str):
    """A partition's end offset as the consumer last fetched it, and when (epoch ms); None before
    its first fetch, or once it is no longer assigned."""
    def end(partition: int) -> tuple[int, int] | None:
        consumer, tp = app.consumer._thread._consumer, TP(topic, partition)
        try:
            end, at = consumer.highwater(tp), consumer.last_poll_timestamp(tp)
        except AssertionError:  # aiokafka: "Partition is not assigned"
            return None
        return None if end is None or at is None else (end, at)
    return end


def _side_output(app: ImrefApp, name: str) -> BatchedTopic:
    return BatchedTopic(app.topic(name, partitions=app.imref.topics.partitions, **RAW), app.supervisor.stop)


def _cuts_table(app: ImrefApp, name: str, partitions: int) -> TableWriter:
    """Recorded batch cuts per partition; written outside stream context (delivery lanes), so
    always held in memory and rebuilt from its changelog on assignment. (A bare "memory://" is an
    empty, falsy URL to Faust, which then falls back to the app's store.)"""
    return TableWriter(app.Table(name, partitions=partitions, key_type=str, store=f"memory://{name}"),
                       app.supervisor.stop)


def _gate(app: ImrefApp, ledger: Ledger, topic_name: str, handler, forget=None) -> None:
    """The topic's records reach ``handler`` a fetch at a time through the commit gate, not as
    agents: subscribed here so that Faust still assigns it, co-partitioned with the tables."""
    t = app.imref.topics
    app.topics.add(app.topic(topic_name, partitions=t.partitions, **RAW))
    ledger.route(topic_name, handler)
    if forget is None:
        return

    async def on_revoked(sender, revoked, **kwargs) -> None:
        forget({tp.partition for tp in revoked if tp.topic == topic_name})

    app.on_partitions_revoked.connect(on_revoked, weak=False)


def _install_changes(app: ImrefApp, settings: Settings, connections, ledger: Ledger, dead_letter, metrics,
                     conversions: Conversions) -> Changes:
    t = settings.topics
    # Written by the delivery lanes of the conversions, read by the order-changes flow: both see
    # the same partition, since changes and order items share key and partition count.
    stop = app.supervisor.stop
    reported = TableWriter(app.Table("reported-orders", partitions=t.partitions, key_type=str), stop)
    sweep.install(app, settings, reported)
    flow = Flow(settings.batch, title=settings.modifications.file_title, header=MODIFICATION_HEADER, ledger=ledger,
                cuts=_cuts_table(app, "modification-cuts", t.partitions), connections=connections, metrics=metrics,
                stop=stop)
    changes = Changes(flow=flow, reported=reported, dead_letter=dead_letter,
                      unmatched=_side_output(app, t.unmatched_changes),
                      outputs=Outputs(metrics, stop), conversion_title=settings.batch.file_title,
                      reasons=settings.modifications.reasons)
    conversions.flow.delivered_hooks.append(changes.record_reported)
    app.flows.append(flow)
    _gate(app, ledger, t.order_changes, changes.on_changes, changes.forget)
    app.timer(interval=0.5, name="changes tick")(changes.tick)
    return changes
