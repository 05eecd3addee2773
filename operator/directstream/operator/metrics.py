"""Prometheus metrics of the operator, served on ``--metrics-port`` (default 9090).

Every series is labelled ``namespace`` and ``stream``. Per-partition series (lag and committed
offset) also carry ``topic`` and ``partition``, and are bounded per stream: every partition
while the stream has at most ``PARTITION_SERIES_LIMIT`` of them, otherwise only the
``PARTITION_SERIES_LIMIT`` partitions with the largest lag (the total lag is always exported).
So a stream over thousands of partitions adds at most 2 x 20 partition series.

The mapping from driver events to metric changes is plain functions (``record_event`` and
``record_status``) over an ``OperatorMetrics`` with its own ``CollectorRegistry``, so tests read
values with ``registry.get_sample_value`` and never need the HTTP server.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .core import events as ev
from .core.planning import TopicPartition
from .core.status import PHASES, lag_of

__all__ = [
    "BATCH_OUTCOMES",
    "DURATION_BUCKETS",
    "PARTITION_SERIES_LIMIT",
    "OperatorMetrics",
    "StreamMetrics",
    "record_event",
    "record_status",
    "serve",
]

log = logging.getLogger(__name__)

PARTITION_SERIES_LIMIT = 20
BATCH_OUTCOMES = ("committed", "failed", "retried", "data_loss")
# A batch takes from well under a second (small ranges) to minutes (a slow sink, retries).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_STREAM = ("namespace", "stream")
_PARTITION = ("namespace", "stream", "topic", "partition")


class OperatorMetrics:
    """Every metric of the operator, registered in one registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.batches = Counter(
            "directstream_batches",
            "Batches by outcome: committed, failed (for good, past maxAttempts), retried "
            "(a failed attempt run again), data_loss (offsets lost before they were read)",
            [*_STREAM, "outcome"],
            registry=r,
        )
        self.records = Counter("directstream_records", "Records in committed batches", _STREAM, registry=r)
        self.bytes = Counter(
            "directstream_bytes", "Key and value bytes in committed batches", _STREAM, registry=r
        )
        self.batch_duration = Histogram(
            "directstream_batch_duration_seconds",
            "Time from a batch's plan to its commit, retries included",
            _STREAM,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "directstream_lag_records",
            "Records behind the latest offsets, all partitions",
            _STREAM,
            registry=r,
        )
        self.partition_lag = Gauge(
            "directstream_partition_lag_records",
            f"Records behind per partition (at most {PARTITION_SERIES_LIMIT} partitions per stream: "
            "the most lagging)",
            _PARTITION,
            registry=r,
        )
        self.committed_offset = Gauge(
            "directstream_committed_offset",
            "Committed offset (the next offset to read) per partition, for the partitions of "
            "directstream_partition_lag_records",
            _PARTITION,
            registry=r,
        )
        self.batch_attempts = Gauge(
            "directstream_batch_attempts", "Attempt number of the latest batch attempt", _STREAM, registry=r
        )
        self.data_loss_skipped = Counter(
            "directstream_data_loss_skipped_records",
            "Offsets skipped because they were gone from Kafka (onDataLoss: earliest)",
            _STREAM,
            registry=r,
        )
        self.skipped_records = Counter(
            "directstream_skipped_records",
            "Poison records dropped in committed batches (processor.onError: skip)",
            _STREAM,
            registry=r,
        )
        self.dead_lettered_records = Counter(
            "directstream_dead_lettered_records",
            "Poison records sent to the dead-letter topic in committed batches (onError: deadLetter)",
            _STREAM,
            registry=r,
        )
        self.pool_executors = Gauge(
            "directstream_pool_executors",
            "Warm executors the pool of a stream keeps (executors.mode: pool): the scaling policy's target",
            _STREAM,
            registry=r,
        )
        self.executor_failures = Counter(
            "directstream_executor_failures", "Executors that failed a batch attempt", _STREAM, registry=r
        )
        self.warnings = Counter(
            "directstream_warnings",
            "Warning events by kind (kafka-unavailable, drift, retrying, failed, ...)",
            [*_STREAM, "kind"],
            registry=r,
        )
        self.streams = Gauge(
            "directstream_streams", "DirectStreams by phase", ["namespace", "phase"], registry=r
        )
        self.leader = Gauge(
            "directstream_operator_leader",
            "1 while this operator holds the leader Lease (it drives the streams), 0 while it is a standby",
            registry=r,
        )
        # What each stream has exported, so that its series can be removed again.
        self.phases: dict[tuple[str, str], str] = {}
        self.partitions: dict[tuple[str, str], set[TopicPartition]] = {}
        self.warning_kinds: dict[tuple[str, str], set[str]] = {}

    def for_stream(self, namespace: str, stream: str) -> StreamMetrics:
        """The recorder of one stream; its counters start at zero so ``rate()`` sees the first batch."""
        for outcome in BATCH_OUTCOMES:
            self.batches.labels(namespace, stream, outcome)
        for counter in (self.records, self.bytes, self.data_loss_skipped, self.executor_failures):
            counter.labels(namespace, stream)
        self.batch_duration.labels(namespace, stream)
        return StreamMetrics(self, namespace, stream)

    def forget(self, namespace: str, stream: str) -> None:
        """Drop every series of a stream whose daemon ended (the stream was deleted)."""
        key = (namespace, stream)
        for outcome in BATCH_OUTCOMES:
            _remove(self.batches, namespace, stream, outcome)
        for metric in (
            self.records,
            self.bytes,
            self.batch_duration,
            self.lag,
            self.pool_executors,
            self.batch_attempts,
            self.data_loss_skipped,
            self.executor_failures,
        ):
            _remove(metric, namespace, stream)
        for kind in self.warning_kinds.pop(key, set()):
            _remove(self.warnings, namespace, stream, kind)
        self.set_partitions(namespace, stream, set())
        self.partitions.pop(key, None)
        self.phases.pop(key, None)
        self.count_phases(namespace)

    def set_partitions(self, namespace: str, stream: str, keep: set[TopicPartition]) -> None:
        """Remove the partition series of a stream that are no longer among ``keep``."""
        for topic, partition in self.partitions.get((namespace, stream), set()) - keep:
            _remove(self.partition_lag, namespace, stream, topic, partition)
            _remove(self.committed_offset, namespace, stream, topic, partition)
        self.partitions[(namespace, stream)] = keep

    def count_phases(self, namespace: str) -> None:
        """``directstream_streams`` of a namespace, every phase shown (0 included) while it has streams."""
        phases = [phase for (ns, _), phase in self.phases.items() if ns == namespace]
        for phase in PHASES:
            if phases:
                self.streams.labels(namespace, phase).set(phases.count(phase))
            else:
                _remove(self.streams, namespace, phase)


class StreamMetrics:
    """The ``metrics`` hook of a ``StreamContext``: every driver event of one stream, with the
    stream's phase and offsets right after the event."""

    def __init__(self, metrics: OperatorMetrics, namespace: str, stream: str) -> None:
        self.metrics = metrics
        self.namespace = namespace
        self.stream = stream

    def __call__(
        self,
        event: ev.Event,
        phase: str,
        committed: Mapping[TopicPartition, int],
        latest: Mapping[TopicPartition, int] | None,
    ) -> None:
        record_event(self.metrics, self.namespace, self.stream, event)
        record_status(
            self.metrics, self.namespace, self.stream, phase=phase, committed=committed, latest=latest
        )


def warning_kind(event: ev.Event) -> str:
    """The ``kind`` label of ``directstream_warnings_total`` (stable names for dashboards)."""
    match event:
        case ev.Retrying():
            return "retrying"
        case ev.BatchGaveUp() | ev.DataLossRefused():
            return "failed"
        case ev.DataLossSkipped():
            return "data-loss"
        case ev.Drift():
            return "drift"
        case ev.KafkaUnreachable():
            return "kafka-unavailable"
        case ev.OffsetStoreUnreachable():
            return "store-unavailable"
        case ev.KubeApiRefused():
            return "kube-api-error"
        case ev.InvalidSpec():
            return "invalid-spec"
        case ev.StateUnreadable():
            return "state-unreadable"
        case ev.StateTooLarge():
            return "status-too-large"
        case ev.InternalError():
            return "internal-error"
        case ev.Fenced():
            return "fenced"
        case ev.DeadLettered():
            return "dead-lettered"
    return type(event).__name__.lower()


def record_event(metrics: OperatorMetrics, namespace: str, stream: str, event: ev.Event) -> None:
    """What one driver event adds to the metrics."""
    labels = (namespace, stream)
    if event.warning:
        kind = warning_kind(event)
        metrics.warnings.labels(*labels, kind).inc()
        metrics.warning_kinds.setdefault(labels, set()).add(kind)
    match event:
        case ev.Committed():
            metrics.batches.labels(*labels, "committed").inc()
            metrics.records.labels(*labels).inc(event.records)
            metrics.bytes.labels(*labels).inc(event.bytes)
            metrics.batch_duration.labels(*labels).observe(event.seconds)
            metrics.lag.labels(*labels).set(event.lag)
            metrics.batch_attempts.labels(*labels).set(event.attempts)
            if event.skipped:
                metrics.skipped_records.labels(*labels).inc(event.skipped)
            if event.dead_lettered:
                metrics.dead_lettered_records.labels(*labels).inc(event.dead_lettered)
        case ev.Idle():
            metrics.lag.labels(*labels).set(event.lag)
        case ev.ExecutorsScaled():
            metrics.pool_executors.labels(*labels).set(event.target)
        case ev.Launched():
            metrics.batch_attempts.labels(*labels).set(event.attempt)
        case ev.Retrying():
            metrics.batches.labels(*labels, "retried").inc()
            metrics.executor_failures.labels(*labels).inc(max(1, event.failures))
        case ev.BatchGaveUp():
            metrics.batches.labels(*labels, "failed").inc()
            metrics.executor_failures.labels(*labels).inc(max(1, event.failures))
        case ev.DataLossRefused():  # onDataLoss: fail refused the batch; no executor ran
            metrics.batches.labels(*labels, "data_loss").inc()
        case ev.DataLossSkipped():  # onDataLoss: earliest skipped the lost offsets
            metrics.batches.labels(*labels, "data_loss").inc()
            metrics.data_loss_skipped.labels(*labels).inc(event.lost)


def record_status(
    metrics: OperatorMetrics,
    namespace: str,
    stream: str,
    *,
    phase: str,
    committed: Mapping[TopicPartition, int],
    latest: Mapping[TopicPartition, int] | None,
) -> None:
    """The stream's phase, its lag (when the latest offsets are known) and the bounded
    per-partition lag and committed offsets."""
    if metrics.phases.get((namespace, stream)) != phase:
        metrics.phases[(namespace, stream)] = phase
        metrics.count_phases(namespace)
    ends = latest or {}
    lags = lag_of(committed, ends)
    if latest:
        metrics.lag.labels(namespace, stream).set(sum(lags.values()))
    known = set(committed) | set(lags)
    if len(known) <= PARTITION_SERIES_LIMIT:
        keep = known
    else:
        top = heapq.nsmallest(PARTITION_SERIES_LIMIT, known, key=lambda tp: (-lags.get(tp, 0), tp))
        keep = set(top)
    metrics.set_partitions(namespace, stream, keep)
    for tp in keep:
        topic, partition = tp[0], str(tp[1])
        if tp in lags:
            metrics.partition_lag.labels(namespace, stream, topic, partition).set(lags[tp])
        if tp in committed:
            metrics.committed_offset.labels(namespace, stream, topic, partition).set(committed[tp])


def serve(metrics: OperatorMetrics, port: int, host: str = "0.0.0.0") -> bool:
    """Serve ``/metrics`` from a daemon thread. A busy port is logged, not fatal: metrics are an
    aid, and the streams must keep running without them."""
    try:
        start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        log.warning("metrics: cannot listen on %s:%d (%s); running without /metrics", host, port, exc)
        return False
    log.info("metrics: serving http://%s:%d/metrics", host, port)
    return True


def _remove(metric: Counter | Gauge | Histogram, *labels: object) -> None:
    # A series that was never created is fine to "remove"; remove() ignores unknown label sets.
    metric.remove(*labels)
