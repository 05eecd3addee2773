"""10,000 partitions in one batch on the cluster (issue #11 item 5): the work units reach the executor
pods through the attempt's ConfigMap, not an environment variable (Linux's 128 KiB limit on one env
string was a wall at ~2,900 partitions). Real Kafka, real API server, the operator process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer

from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import group_offsets, jsonl_offsets, latest_offsets
from tests.harness.operator_fixtures import OperatorProcess, stream_manifest, wait_committed, wait_until

pytestmark = [
    pytest.mark.k8s,
    pytest.mark.kafka,
    # Not green yet, and visible as such in every run: on the single dev broker, after 10,000 new
    # partitions a fresh client's ListOffsets keeps failing (NOT_LEADER_FOR_PARTITION / "failed to query
    # partition leaders") for minutes, and the broker then fails the tests after it in the session.
    # The operator side (units in a ConfigMap, 10k ranges in 1 MiB) is covered by unit tests.
    pytest.mark.skip(reason="10k partitions overwhelm the single dev Kafka broker (issue #11 item 5, open)"),
]

# Two topics of 5,000: Kafka's controller refuses one request of more than 10,000 metadata records (a
# topic record plus one per partition). The broker holds ~6,000 files open for them (the machine's
# hard limit is 20,000), so the test deletes them when it is done.
TOPICS = 2
PER_TOPIC = 5_000
PARTITIONS = TOPICS * PER_TOPIC


def produce_one_per_partition(bootstrap: str, topics: list[str]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "log_level": 3})
    for topic in topics:
        for partition in range(PER_TOPIC):
            while True:
                try:
                    producer.produce(topic, value=f"record-{partition}".encode(), partition=partition)
                    break
                except BufferError:
                    producer.poll(0.5)
    assert producer.flush(120) == 0, "records were not delivered"


def settled_latest(bootstrap: str, topic: str) -> dict[tuple[str, int], int]:
    """The latest offsets, once every partition's leader answers (a new client's first look-up of
    just-added partitions may still hear "not leader")."""

    def attempt() -> dict[tuple[str, int], int] | None:
        try:
            return latest_offsets(bootstrap, topic)
        except KafkaException:
            return None

    found: dict[tuple[str, int], int] = wait_until(f"the latest offsets of {topic}", attempt, 120)
    return found


def test_ten_thousand_partitions_in_one_batch_every_record_once(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
):
    topics = [f"{topic_name}-{n}" for n in range(TOPICS)]
    try:
        run_wide_stream(kube, kafka, namespace, host_volumes, topics, tmp_path)
    finally:
        for future in kafka.admin().delete_topics(topics).values():
            future.result(timeout=120)


def run_wide_stream(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    host_volumes: HostVolumes,
    topics: list[str],
    tmp_path: Path,
) -> None:
    for topic in topics:
        kafka.create_topic(topic, partitions=PER_TOPIC)
    produce_one_per_partition(kafka.bootstrap, topics)
    latest = {tp: end for topic in topics for tp, end in settled_latest(kafka.bootstrap, topic).items()}
    assert len(latest) == PARTITIONS and set(latest.values()) == {1}

    host_volumes.provide(namespace, "out", tmp_path / "volume")
    out = tmp_path / "volume" / "out"
    kube.kubectl(
        "apply",
        "-f",
        "-",
        input=stream_manifest(
            "wide",
            namespace,
            kafka.bootstrap,
            {
                "topics": topics,
                "batchInterval": "1s",
                "executors": {
                    "max": 4,
                    "volumes": [{"name": "out", "persistentVolumeClaim": {"claimName": "out"}}],
                    "volumeMounts": [{"name": "out", "mountPath": "/data"}],
                },
                "processor": {"sink": "jsonl", "options": {"directory": "/data/out"}},
            },
        ),
    )
    stream = wait_committed(kube, namespace, "wide", latest, timeout=420)
    status = stream["status"]
    assert status["batch"] == 1, "all 10,000 partitions in one batch"
    assert status["recordsTotal"] == PARTITIONS
    seen = jsonl_offsets(out)
    assert set(seen) == {(topic, p, 0) for topic in topics for p in range(PER_TOPIC)}
    assert max(seen.values()) == 1, "every record once"
    group = {tp: end for topic in topics for tp, end in group_offsets(kafka.bootstrap, "wide", topic).items()}
    assert group == latest, "the Kafka group equals status"
    # Far below etcd's 1.5 MiB object limit (tests/unit/test_status_size.py measures the worst case).
    assert len(json.dumps(status)) < 512 * 1024
    table = kube.kubectl("get", "directstreams", "-n", namespace).stdout
    assert "wide" in table and str(PARTITIONS) in table
