"""Stopping the worker when something fails that retrying cannot help (``streams.delivery.failures``).

The worker logs what failed, why and what to do, and stops the way SIGTERM stops it, except that it
does not drain its batches (``ImrefApp.on_stop``) and exits with ``EXIT_STATUS``: Kubernetes
restarts the pod, and every partition is read again from its committed offset -- nothing past the
failed step was committed. A crash loop says on every start what is wrong (``kubectl logs
--previous``); a stop that hangs fails /healthz, which reports the reason meanwhile."""
from __future__ import annotations

import logging
import signal

from aiokafka import errors

log = logging.getLogger(__name__)

EXIT_STATUS = 70  # EX_SOFTWARE: a failure inside the worker, not a signal or a bad config (2)

# What to do about an error that stops the worker, by its class; the first match in the order given.
ADVICE: tuple[tuple[type[BaseException], str], ...] = (
    (errors.UnsupportedCodecError, "a producer compressed a record batch with a codec this installation cannot "
     "read: install imref-stream with its dependencies (`pip install 'aiokafka[lz4,snappy,zstd]'` brings every "
     "codec Kafka has; the image has them)"),
    (errors.CorruptRecordException, "a fetched record batch failed its checksum: if it does again after the "
     "restart, the log is damaged at that offset; see docs/operations.md#worker-stopped"),
    (errors.TopicAuthorizationFailedError, "grant the worker's Kafka user Write and Describe on that topic "
     "(deploy/base/topics and your ACLs)"),
    (errors.MessageSizeTooLargeError, "the record is larger than the topic takes: raise the topic's "
     "max.message.bytes"),
    (errors.UnknownTopicOrPartitionError, "the topic does not exist: create it (deploy/base/topics) or let the "
     "worker create it"),
    (errors.KafkaTimeoutError, "Kafka did not confirm within the producer's request timeout: look at the "
     "brokers' health"),
)


def advice(exc: BaseException) -> str:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for kind, text in ADVICE:
            if isinstance(exc, kind):
                return text
        exc = exc.__cause__ or exc.__context__
    return "see the error and its traceback; docs/operations.md#worker-stopped"


def describe(exc: BaseException) -> str:
    """The error and its causes, one after the other: ``StepFailed: making x.csv <- TopicAuth...: ...``."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(parts)


class Supervisor:
    """``stop`` for every owner of a task in the worker (lanes, table writes, side outputs, seeks)."""

    def __init__(self, app):
        self.app = app
        self.reason: str | None = None  # why the worker is stopping; /healthz reports it
        self.stopping = False  # a graceful stop (SIGTERM) is under way

    def stop(self, what: str, exc: BaseException) -> None:
        if self.stopping and isinstance(exc, errors.ProducerClosed):
            # A write still on its way when the graceful stop closed the producer: its records
            # were not committed (nothing is before its confirmation) and are read again.
            log.info("at the stop: %s was not confirmed before the producer closed; read again after the restart",
                     what)
            return
        if self.reason is not None:  # the first failure is the one to act on; later ones may follow from it
            log.warning("while stopping: %s failed: %s", what, describe(exc))
            return
        self.reason = f"{what} failed: {describe(exc)}"
        log.critical("stopping the worker: %s. What to do: %s. After the restart its partitions are read again "
                     "from their committed offsets.", self.reason, advice(exc), exc_info=exc)
        # The worker's own stop path (mode's signal handler): the final commit covers what is delivered.
        signal.raise_signal(signal.SIGTERM)


def stop_if_coordination_fails(coordinator, stop) -> None:
    """aiokafka runs a member's joins, assignments and commits in one task of its group
    coordinator. An error that task does not expect ends it (aiokafka logs "Unexpected error in
    coordinator routine"), and the process would stay up reading nothing and never ready, with no
    restart to end it: for example an assignment of no bytes, which Kafka sends a member the
    group leader left out. That ends the worker here, the way any failure does."""

    def ended(task) -> None:
        if not task.cancelled() and task.exception() is not None:
            stop("the consumer group's coordination (aiokafka)", task.exception())

    coordinator._coordination_task.add_done_callback(ended)
