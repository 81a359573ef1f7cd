"""The Faust app: topics, tables and timers wired to the pipeline, from validated settings."""
from __future__ import annotations

import asyncio
import ssl

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.web.drivers import aiohttp as faust_web

from connectors import build_connection

from . import collector, expiry, modifications, reports, web
from .commitgate import GatedConsumer, Ledger
from .metrics import Metrics
from .config import Settings
from .pipeline import Pipeline
from .tablewrites import TableWriter

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def _broker_credentials(k) -> faust.auth.Credentials | None:
    if k.security_protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=str(k.ca_file) if k.ca_file else None)
    if k.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    password = k.password.reveal().get_secret_value()
    if k.sasl_mechanism == "PLAIN":
        return faust.SASLCredentials(username=k.username, password=password, ssl_context=context)
    return faust.SASLCredentials(username=k.username, password=password, ssl_context=context,
                                 mechanism=k.sasl_mechanism)


class _Transport(faust_aiokafka.Transport):
    Consumer = GatedConsumer


class _Web(faust_web.Web):
    production_blueprints = []  # Faust's JSON index would take "/", the status page's path


class ImrefApp(faust.App):
    ledger: Ledger  # read by the consumer when Faust creates it at start-up
    metrics: Metrics
    pipeline: Pipeline
    modifications: Pipeline | None = None  # only with an action_modifications connection

    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)

    def _new_web(self) -> _Web:
        return _Web(self)

    async def on_stop(self) -> None:
        # Flush before Faust's own stop sequence commits the offsets: the open batches are
        # delivered and acked first, so the final commit covers them.
        if getattr(self, "pipeline", None) is not None and self._consumer is not None:
            try:
                assignment = self._consumer.assignment()
            except Exception:  # consumer never started
                assignment = set()
            if assignment:
                self.flow_control.suspend()
                self._consumer.pause_partitions(assignment)
                await asyncio.gather(*(p.drain(self.imref.stop_timeout_s)
                                       for p in (self.pipeline, self.modifications) if p is not None))
        await super().on_stop()


def create_app(settings: Settings) -> ImrefApp:
    k = settings.kafka
    app = ImrefApp(
        settings.app_id,
        broker=k.brokers,
        broker_credentials=_broker_credentials(k),
        store=settings.store,
        datadir=str(settings.data_dir),
        processing_guarantee="at_least_once",
        broker_session_timeout=k.session_timeout_s,
        broker_heartbeat_interval=k.heartbeat_interval_s,
        broker_rebalance_timeout=k.rebalance_timeout_s,
        broker_commit_interval=k.commit_interval_s,
        consumer_group_instance_id=k.instance_id,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replicas,
        stream_wait_empty=False,
        producer_acks=-1,
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
    t = settings.topics
    clicks_topic = app.topic(t.clicks, partitions=t.partitions, **RAW)
    items_topic = app.topic(t.order_items, partitions=t.partitions, **RAW)
    dead_letter = app.topic(t.dead_letter, partitions=t.partitions, **RAW)
    unattributed = app.topic(t.unattributed, partitions=t.partitions, **RAW)

    # Latest clicks per customer, co-partitioned with both input topics.
    clicks_table = app.Table("clicks", partitions=t.partitions, key_type=str)
    # Recorded batch cuts per order-item partition; written outside stream context (timer),
    # so always held in memory and rebuilt from its changelog on assignment. (A bare
    # "memory://" is an empty, falsy URL to Faust, which then falls back to the app's store.)
    cuts_table = app.Table("batch-cuts", partitions=t.partitions, key_type=str, store="memory://batch-cuts")

    connections = [build_connection(c) for c in settings.connections
                   if c.direction == "into_impact" and c.data_type == "conversions"]
    metrics = app.metrics = Metrics([c.name for c in connections])
    ledger = app.ledger = Ledger(count=metrics.inc)
    clicks = TableWriter(clicks_table)
    expiry.install(app, settings, clicks)
    pipeline = app.pipeline = Pipeline(settings, ledger=ledger, clicks_table=clicks,
                                       cuts_table=cuts_table, dead_letter=dead_letter, unattributed=unattributed,
                                       connections=connections, metrics=metrics)
    # Both topics reach the pipeline a fetch at a time through the commit gate, not as agents:
    # subscribed here so that Faust still assigns them, co-partitioned with the tables.
    for topic, handler in ((clicks_topic, pipeline.on_clicks), (items_topic, pipeline.on_items)):
        app.topics.add(topic)
        ledger.route(topic.get_topic_name(), handler)

    @app.timer(interval=0.5)
    async def tick():
        await pipeline.tick()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender, revoked, **kwargs):
        pipeline.forget({tp.partition for tp in revoked if tp.topic == t.order_items})

    if settings.web.enabled:
        web.install(app, metrics)
    collector.install(app, settings)
    reports.install(app, settings)
    app.modifications = modifications.install(app, settings, pipeline=pipeline, ledger=ledger,
                                              dead_letter=dead_letter, metrics=metrics)
    return app
