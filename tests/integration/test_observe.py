"""Observing the operator end to end: the real ``directstream-operator`` serving Prometheus
``/metrics`` while it drives a stream on the real API server, test node and Kafka broker."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import latest_offsets
from tests.harness.operator_fixtures import OperatorProcess, stream_manifest, wait_committed, wait_until

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MetricsOperator(OperatorProcess):
    """The operator fixture's process, serving /metrics on a free port."""

    @property
    def port(self) -> int:
        return self.metrics_port


@pytest.fixture
def metrics_operator(kube: Kube, crd: str, namespace: str, tmp_path: Path) -> Iterator[MetricsOperator]:
    process = MetricsOperator(kube, [namespace], tmp_path / "operator.log")
    process.metrics_port = free_port()
    process.start()
    try:
        yield process
    finally:
        process.stop()


def scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_follow_a_stream_from_its_first_batch_to_its_deletion(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    metrics_operator: MetricsOperator,
    topic_name: str,
    tmp_path: Path,
):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 500, partitions=2)
    spec = {"topics": [topic_name], "batchInterval": "1s", "processor": {"sink": "count"}}
    kube.kubectl("apply", "-f", "-", input=stream_manifest("watched", namespace, kafka.bootstrap, spec))
    latest = latest_offsets(kafka.bootstrap, topic_name)
    wait_committed(kube, namespace, "watched", latest)

    stream = {"namespace": namespace, "stream": "watched"}
    port = metrics_operator.port

    def settled() -> tuple[str, Samples] | None:
        text, samples = scrape(port)
        records = sample(samples, "directstream_records_total", **stream)
        lag = sample(samples, "directstream_lag_records", **stream)
        return (text, samples) if records == 500 and lag == 0 else None

    text, samples = wait_until("/metrics to count the 500 records with lag 0", settled, timeout=30)
    (tmp_path / "metrics.txt").write_text(text)  # kept with pytest's temporary directories, to look at
    assert (sample(samples, "directstream_batches_total", **stream, outcome="committed") or 0) >= 1
    for outcome in ("failed", "retried", "data_loss"):
        assert sample(samples, "directstream_batches_total", **stream, outcome=outcome) == 0
    assert (sample(samples, "directstream_bytes_total", **stream) or 0) > 500 * len("record-0")
    assert (sample(samples, "directstream_batch_duration_seconds_count", **stream) or 0) >= 1
    assert (sample(samples, "directstream_batch_duration_seconds_sum", **stream) or 0) > 0
    assert sample(samples, "directstream_batch_attempts", **stream) == 1
    assert sample(samples, "directstream_executor_failures_total", **stream) == 0
    assert sample(samples, "directstream_data_loss_skipped_records_total", **stream) == 0
    for (topic, partition), end in latest.items():
        where = {**stream, "topic": topic, "partition": str(partition)}
        assert sample(samples, "directstream_partition_lag_records", **where) == 0
        assert sample(samples, "directstream_committed_offset", **where) == end
    assert sample(samples, "directstream_streams", namespace=namespace, phase="Running") == 1
    assert "# TYPE directstream_batch_duration_seconds histogram" in text

    kube.kubectl("delete", "directstream", "watched", "-n", namespace, "--timeout=90s")
    wait_until(
        "the deleted stream's series (and its namespace's stream count) to go",
        lambda: f'namespace="{namespace}"' not in scrape(port)[0],
        timeout=60,
    )
