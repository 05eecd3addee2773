"""Chaos on the cluster (issue #11): a stream runs while the test SIGKILLs the operator several times,
kills executor pods, edits the spec (executors.max, maxRecords) and runs a second operator beside the
first for a while. Then every record is in the sink exactly once and the status equals the Kafka group.

The sink is jsonl on a PersistentVolumeClaim: one file per range, so a range replayed with other
boundaries (a spec edit applied to a recorded batch) shows as a record in two files."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import group_offsets, jsonl_offsets, latest_offsets
from tests.harness.operator_fixtures import (
    OperatorProcess,
    get_stream,
    stream_manifest,
    wait_committed,
    wait_until,
)

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]

PARTITIONS = 4


def running_job(kube: Kube, namespace: str, name: str) -> str | None:
    pending = (get_stream(kube, namespace, name).get("status") or {}).get("pending") or {}
    job = pending.get("job")
    return str(job) if job else None


def patch_spec(kube: Kube, namespace: str, name: str, patch: dict[str, object]) -> None:
    body = json.dumps({"spec": patch})
    kube.kubectl("patch", "directstream", name, "-n", namespace, "--type=merge", "-p", body)


def kill_executor_pods(kube: Kube, namespace: str, job: str) -> None:
    kube.kubectl(
        "delete", "pods", "-n", namespace, "-l", f"job-name={job}", "--grace-period=0", "--force", check=False
    )


def test_operator_kills_pod_kills_spec_edits_and_a_second_operator_lose_and_duplicate_nothing(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
):
    kafka.create_topic(topic_name, partitions=PARTITIONS)
    kafka.produce(topic_name, 2_000, partitions=PARTITIONS)
    host_volumes.provide(namespace, "out", tmp_path / "volume")
    out = tmp_path / "volume" / "out"
    spec = {
        "topics": [topic_name],
        "batchInterval": "1s",
        "rate": {"maxPerPartition": 60},
        "maxAttempts": 20,  # executor kills fail attempts; the cap is tested elsewhere
        "executors": {
            "max": 2,
            "volumes": [{"name": "out", "persistentVolumeClaim": {"claimName": "out"}}],
            "volumeMounts": [{"name": "out", "mountPath": "/data"}],
        },
        "processor": {"sink": "jsonl", "options": {"directory": "/data/out"}},
    }
    kube.kubectl("apply", "-f", "-", input=stream_manifest("chaos", namespace, kafka.bootstrap, spec))
    producing = threading.Thread(
        target=lambda: [
            kafka.produce(topic_name, 100, partitions=PARTITIONS) or time.sleep(2) for _ in range(10)
        ]
    )
    producing.start()
    second = OperatorProcess(kube, [namespace], tmp_path / "operator-second.log", identity="test-second")
    edits = [{"executors": {"max": 3}}, {"executors": {"maxRecords": 40}}, {"executors": {"max": 1}}]
    try:
        for round_ in range(3):
            job = wait_until("a running batch", lambda: running_job(kube, namespace, "chaos"), 90)
            operator.kill()  # SIGKILL mid-batch
            patch_spec(kube, namespace, "chaos", edits[round_])  # while nobody drives
            operator.start()
            job = wait_until("a running batch", lambda: running_job(kube, namespace, "chaos"), 90)
            kill_executor_pods(kube, namespace, job)
            if round_ == 1:
                second.start()  # both run for a while; only the Lease holder may drive
            if round_ == 2:
                second.kill()
        producing.join()
        latest = latest_offsets(kafka.bootstrap, topic_name)
        stream = wait_committed(kube, namespace, "chaos", latest, timeout=150)
    finally:
        producing.join()
        second.stop()

    seen = jsonl_offsets(out)
    want = {(t, p, o) for (t, p), end in latest.items() for o in range(end)}
    assert set(seen) == want, f"{len(want - set(seen))} records missing"
    duplicated = [key for key, n in seen.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} records in the sink twice, e.g. {duplicated[:5]}"
    assert group_offsets(kafka.bootstrap, "chaos", topic_name) == latest, "status equals the Kafka group"
    status = stream["status"]
    assert status["recordsTotal"] == sum(latest.values())
    history = status["history"]
    assert [h["batch"] for h in history] == list(range(history[0]["batch"], history[-1]["batch"] + 1))
