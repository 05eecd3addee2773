"""Driver events and stream status -> Prometheus metric values (no HTTP server)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from directstream.operator.core import events as ev
from directstream.operator.hosts.cluster import StreamContext, no_metrics
from directstream.operator.metrics import (
    BATCH_OUTCOMES,
    PARTITION_SERIES_LIMIT,
    OperatorMetrics,
    record_event,
    record_status,
)

NS, STREAM = "team-a", "clicks"
LABELS = {"namespace": NS, "stream": STREAM}
DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics(CollectorRegistry())


def value(m: OperatorMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, {**LABELS, **labels})


def test_a_new_stream_exports_zeroed_counters(metrics: OperatorMetrics):
    metrics.for_stream(NS, STREAM)
    for outcome in BATCH_OUTCOMES:
        assert value(metrics, "directstream_batches_total", outcome=outcome) == 0
    assert value(metrics, "directstream_records_total") == 0
    assert value(metrics, "directstream_batch_duration_seconds_count") == 0
    assert value(metrics, "directstream_executor_failures_total") == 0


def test_committed_batches_add_records_bytes_duration_lag_and_attempts(metrics: OperatorMetrics):
    first = ev.Committed(message="", records=300, bytes=4096, seconds=1.5, lag=20, attempts=2)
    record_event(metrics, NS, STREAM, first)
    record_event(metrics, NS, STREAM, replace(first, records=200, lag=0, attempts=1))
    assert value(metrics, "directstream_batches_total", outcome="committed") == 2
    assert value(metrics, "directstream_records_total") == 500
    assert value(metrics, "directstream_bytes_total") == 8192
    assert value(metrics, "directstream_batch_duration_seconds_count") == 2
    assert value(metrics, "directstream_batch_duration_seconds_sum") == 3.0
    assert value(metrics, "directstream_batch_duration_seconds_bucket", le="1.0") == 0
    assert value(metrics, "directstream_batch_duration_seconds_bucket", le="2.5") == 2
    assert value(metrics, "directstream_lag_records") == 0
    assert value(metrics, "directstream_batch_attempts") == 1


def test_idle_sets_lag_and_launched_sets_the_attempt(metrics: OperatorMetrics):
    record_event(metrics, NS, STREAM, ev.Idle(message="", lag=7))
    record_event(metrics, NS, STREAM, ev.Launched(message="", executors=2, attempt=3))
    assert value(metrics, "directstream_lag_records") == 7
    assert value(metrics, "directstream_batch_attempts") == 3


def test_retries_failures_and_data_loss_are_counted_by_outcome(metrics: OperatorMetrics):
    retry = (
        "batch 4 attempt 1 failed, retrying the same ranges in 1.0s: executor 0 at t[1] offset 5: boom; "
        "executor 2: exited with code 1"
    )
    record_event(metrics, NS, STREAM, ev.Retrying(message=retry, attempt=2, failures=2))
    failed = "batch 4 failed 3 time(s) (maxAttempts 3); committed offsets unchanged: executor 1: boom"
    record_event(metrics, NS, STREAM, ev.BatchGaveUp(message=failed, failures=1))
    record_event(metrics, NS, STREAM, ev.DataLossRefused(message="offsets lost"))
    record_event(metrics, NS, STREAM, ev.DataLossSkipped(message="skipping", lost=40))
    assert value(metrics, "directstream_batches_total", outcome="retried") == 1
    assert value(metrics, "directstream_batches_total", outcome="failed") == 1
    assert value(metrics, "directstream_batches_total", outcome="data_loss") == 2
    assert value(metrics, "directstream_executor_failures_total") == 3  # two, then one
    assert value(metrics, "directstream_data_loss_skipped_records_total") == 40
    assert value(metrics, "directstream_warnings_total", kind="retrying") == 1
    assert value(metrics, "directstream_warnings_total", kind="failed") == 2


def test_events_without_metrics_change_nothing(metrics: OperatorMetrics):
    for event in (
        ev.Started(message=""),
        ev.Planned(message="", offsets=5, ranges=1),
        ev.Resumed(message="", attempt=1, offsets=5),
        ev.Drift(message=""),
        ev.Rewound(message="", partitions=1, moved=1),
        ev.Stopped(message=""),
    ):
        record_event(metrics, NS, STREAM, event)
    assert value(metrics, "directstream_records_total") is None
    assert value(metrics, "directstream_batches_total", outcome="committed") is None


def test_status_sets_lag_committed_offsets_and_phase_counts(metrics: OperatorMetrics):
    committed = {("t", 0): 10, ("t", 1): 5}
    latest = {("t", 0): 10, ("t", 1): 8, ("t", 2): 4}  # t[2] never committed: not counted as behind
    record_status(metrics, NS, STREAM, phase="Running", committed=committed, latest=latest)
    record_status(metrics, NS, "other", phase="Suspended", committed={}, latest=None)
    assert value(metrics, "directstream_lag_records") == 3
    assert value(metrics, "directstream_partition_lag_records", topic="t", partition="1") == 3
    assert value(metrics, "directstream_partition_lag_records", topic="t", partition="0") == 0
    assert value(metrics, "directstream_committed_offset", topic="t", partition="0") == 10
    assert value(metrics, "directstream_committed_offset", topic="t", partition="2") is None
    streams = {"namespace": NS}
    assert metrics.registry.get_sample_value("directstream_streams", {**streams, "phase": "Running"}) == 1
    assert metrics.registry.get_sample_value("directstream_streams", {**streams, "phase": "Suspended"}) == 1
    assert metrics.registry.get_sample_value("directstream_streams", {**streams, "phase": "Failed"}) == 0
    record_status(metrics, NS, "other", phase="Running", committed={}, latest=None)
    assert metrics.registry.get_sample_value("directstream_streams", {**streams, "phase": "Running"}) == 2
    assert metrics.registry.get_sample_value("directstream_streams", {**streams, "phase": "Suspended"}) == 0


def test_partition_series_are_bounded_to_the_most_lagging(metrics: OperatorMetrics):
    count = PARTITION_SERIES_LIMIT * 5
    committed = {("t", p): 0 for p in range(count)}
    latest = {("t", p): p for p in range(count)}  # partition p lags p records
    record_status(metrics, NS, STREAM, phase="Running", committed=committed, latest=latest)
    text = generate_latest(metrics.registry).decode()
    lag_series = re.findall(r"^directstream_partition_lag_records\{.*partition=\"(\d+)\".*$", text, re.M)
    assert sorted(int(p) for p in lag_series) == list(range(count - PARTITION_SERIES_LIMIT, count))
    assert text.count("directstream_committed_offset{") == PARTITION_SERIES_LIMIT
    assert value(metrics, "directstream_lag_records") == sum(range(count))
    # Caught up on the top partitions: the next most lagging ones replace them.
    committed.update({("t", p): p for p in range(count - PARTITION_SERIES_LIMIT, count)})
    record_status(metrics, NS, STREAM, phase="Running", committed=committed, latest=latest)
    text = generate_latest(metrics.registry).decode()
    lag_series = re.findall(r"^directstream_partition_lag_records\{.*partition=\"(\d+)\".*$", text, re.M)
    assert sorted(int(p) for p in lag_series) == list(
        range(count - 2 * PARTITION_SERIES_LIMIT, count - PARTITION_SERIES_LIMIT)
    )


def test_the_stream_hook_records_events_and_status(metrics: OperatorMetrics):
    hook = metrics.for_stream(NS, STREAM)
    event = ev.Committed(
        message="batch 1 committed", batch_id=1, records=3, bytes=9, seconds=0.2, lag=2, attempts=1
    )
    hook(event, "Running", {("t", 0): 3}, {("t", 0): 5})
    assert value(metrics, "directstream_records_total") == 3
    assert value(metrics, "directstream_lag_records") == 2
    assert value(metrics, "directstream_committed_offset", topic="t", partition="0") == 3


def test_forget_removes_every_series_of_the_stream(metrics: OperatorMetrics):
    hook = metrics.for_stream(NS, STREAM)
    keep = metrics.for_stream(NS, "stays")
    hook(
        ev.Retrying(message="x: executor 0: boom", attempt=2, failures=1),
        "Running",
        {("t", 0): 1},
        {("t", 0): 2},
    )
    keep(ev.Idle(message="no new records", lag=0), "Running", {}, None)
    metrics.forget(NS, STREAM)
    text = generate_latest(metrics.registry).decode()
    assert 'stream="clicks"' not in text
    assert 'stream="stays"' in text
    assert (
        metrics.registry.get_sample_value("directstream_streams", {"namespace": NS, "phase": "Running"}) == 1
    )
    metrics.forget(NS, "stays")
    assert "directstream_streams{" not in generate_latest(metrics.registry).decode()


def test_the_cluster_host_records_nothing_by_default():
    assert StreamContext.__dataclass_fields__["metrics"].default is no_metrics


def _exported_names(metrics: OperatorMetrics) -> set[str]:
    metrics.for_stream(NS, STREAM)
    record_status(metrics, NS, STREAM, phase="Running", committed={("t", 0): 1}, latest={("t", 0): 2})
    record_event(
        metrics, NS, STREAM, ev.Committed(message="", records=0, bytes=0, seconds=0, lag=1, attempts=1)
    )
    record_event(metrics, NS, STREAM, ev.Drift(message="a warning"))
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


def test_every_documented_series_is_exported(metrics: OperatorMetrics):
    assert {
        "directstream_batches_total",
        "directstream_records_total",
        "directstream_bytes_total",
        "directstream_batch_duration_seconds_bucket",
        "directstream_lag_records",
        "directstream_partition_lag_records",
        "directstream_committed_offset",
        "directstream_batch_attempts",
        "directstream_data_loss_skipped_records_total",
        "directstream_executor_failures_total",
        "directstream_warnings_total",
        "directstream_streams",
    } <= _exported_names(metrics)


def test_the_grafana_dashboard_queries_only_existing_metrics(metrics: OperatorMetrics):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(exprs) >= 4
    exprs += [var["definition"] for var in dashboard["templating"]["list"] if "definition" in var]
    queried = {name for expr in exprs for name in re.findall(r"\bdirectstream_[a-z_]+", expr)}
    assert queried, "the dashboard queries no directstream metric"
    missing = queried - _exported_names(metrics)
    assert not missing, f"the dashboard queries metrics that metrics.py does not export: {sorted(missing)}"
    titles = " ".join(panel.get("title", "") for panel in dashboard["panels"]).lower()
    for topic in ("records/s", "lag", "p95", "fail"):
        assert topic in titles
