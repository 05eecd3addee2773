"""10,000 partitions in one batch on the cluster (issue #11 item 5): the work units reach the executor
pods through the attempt's ConfigMap, not an environment variable (Linux's 128 KiB limit on one env
string was a wall at ~2,900 partitions). Real Kafka, real API server and node, the operator process.

The 10,000 partitions live on a broker of their own (``dedicated_broker``): the shared broker of the
suite keeps its few hundred partitions, its file descriptors and its heap for the other tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker, dedicated_broker, fast_state_dir, wait_partitions_ready
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import group_offsets, jsonl_offsets
from tests.harness.operator_fixtures import OperatorProcess, get_stream, stream_manifest, wait_committed

# Measured ~280 s end to end on a loaded 2-core machine (the phases are printed); the suite's default
# per-test timeout is 300 s.
pytestmark = [
    pytest.mark.k8s,
    pytest.mark.kafka,
    pytest.mark.timeout(900),
    # The broker side is fixed (dedicated broker on tmpfs; it passed twice on a loaded machine). Still
    # skipped because on the dev node an executor pod's emptyDir (directstream-tmp) sometimes vanishes
    # between its mount and the container's start (runc: "stat ...empty-dir/directstream-tmp: no such
    # file or directory", StartError 128; seen in other worktrees' tests too): one run failed all 3
    # attempts that way. Un-skip once the node is fixed.
    pytest.mark.skip(reason="dev node: emptyDir vanishes before container start (StartError 128), see above"),
]

# Two topics of 5,000: Kafka's controller refuses one request of more than 10,000 metadata records (a
# topic record plus one per partition). The broker then holds ~10,100 files open (one per partition's
# log segment; the machine's hard limit is 20,000) and ~20,400 memory maps (two index files a
# partition; vm.max_map_count is 65,530), and ~300 MiB of live heap, so it runs with 1 GiB.
TOPICS = 2
PER_TOPIC = 5_000
PARTITIONS = TOPICS * PER_TOPIC
ETCD_LIMIT = 1536 * 1024
STATUS_BUDGET = ETCD_LIMIT // 3  # tests/unit/test_status_size.py's "well under" budget


@pytest.fixture
def wide_kafka(tmp_path: Path) -> Iterator[KafkaBroker]:
    with dedicated_broker(fast_state_dir(tmp_path / "kafka"), heap="1g") as broker:
        yield broker


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


class Phases:
    """Prints how long each phase took (the suite's runtime budget), never asserts on it."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()

    def done(self, what: str) -> None:
        now = time.monotonic()
        print(
            f"\n[10k partitions] {what}: {now - self.last:.1f}s (total {now - self.start:.1f}s)", flush=True
        )
        self.last = now


def test_ten_thousand_partitions_in_one_batch_every_record_once(
    kube: Kube,
    wide_kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
):
    phases = Phases()
    topics = [f"{topic_name}-{n}" for n in range(TOPICS)]
    for topic in topics:
        wide_kafka.create_topic(topic, partitions=PER_TOPIC)
    phases.done("CreateTopics acknowledged by the controller")
    empty = wait_partitions_ready(wide_kafka.bootstrap, dict.fromkeys(topics, PER_TOPIC), timeout=300)
    assert set(empty.values()) == {0}
    phases.done("every partition led and answering ListOffsets")
    produce_one_per_partition(wide_kafka.bootstrap, topics)
    latest = wait_partitions_ready(wide_kafka.bootstrap, dict.fromkeys(topics, PER_TOPIC), timeout=60)
    assert len(latest) == PARTITIONS and set(latest.values()) == {1}
    phases.done("one record produced to each partition")

    host_volumes.provide(namespace, "out", tmp_path / "volume")
    out = tmp_path / "volume" / "out"
    kube.kubectl(
        "apply",
        "-f",
        "-",
        input=stream_manifest(
            "wide",
            namespace,
            wide_kafka.bootstrap,
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
    phases.done("the operator planned, ran and committed the batch")

    status = stream["status"]
    assert status["batch"] == 1, "all 10,000 partitions in one batch"
    assert [(h["batch"], h["partitions"], h["records"]) for h in status["history"]] == [
        (1, PARTITIONS, PARTITIONS)
    ]
    assert status["recordsTotal"] == PARTITIONS
    seen = jsonl_offsets(out)
    assert set(seen) == {(topic, p, 0) for topic in topics for p in range(PER_TOPIC)}
    assert max(seen.values()) == 1, "every record once"
    group = {
        tp: end for topic in topics for tp, end in group_offsets(wide_kafka.bootstrap, "wide", topic).items()
    }
    assert group == latest, "the Kafka group equals status"
    size = len(json.dumps(get_stream(kube, namespace, "wide")["status"], separators=(",", ":")))
    print(
        f"\n[10k partitions] status {size / 1024:.0f} KiB after the commit "
        f"(budget {STATUS_BUDGET // 1024} KiB, etcd limit {ETCD_LIMIT // 1024} KiB); "
        f"attempts {status['history'][0]['attempts']}"
    )
    assert size < STATUS_BUDGET
    row = kube.kubectl("get", "directstreams", "-n", namespace, "--no-headers").stdout.split()
    assert row[0] == "wide" and str(PARTITIONS) in row, f"kubectl get shows the records: {row}"
    phases.done("outputs, group and status checked")
