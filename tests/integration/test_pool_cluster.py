"""Warm executors (``executors.mode: pool``) on the real cluster: executor pods owned by the stream
long-poll the operator. A backlog is processed exactly once while executor processes are SIGKILLed
mid-batch and the operator is SIGKILLed mid-batch, and the pool replaces what it lost; an edit of an
executor setting replaces the pool at a batch boundary, and going back to ``job`` removes it.

The sink is jsonl on a PersistentVolumeClaim: one file per range, so a range written twice (a unit
run twice, or replayed with other boundaries) shows as a record in two files."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import group_offsets, jsonl_offsets, latest_offsets
from tests.harness.operator_fixtures import (
    OperatorProcess,
    committed_of,
    get_stream,
    stream_manifest,
    wait_committed,
    wait_until,
)

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]

PARTITIONS = 4
POOL_SELECTOR = "directstream.io/pool"


def pool_spec(topic: str, **executors: Any) -> dict[str, Any]:
    return {
        "topics": [topic],
        "batchInterval": "200ms",
        "maxAttempts": 20,
        "rate": {"maxPerPartition": 250},  # 50 per partition per batch: many batches to kill into
        "executors": {
            "mode": "pool",
            "min": 2,  # a fixed pool: these tests count its pods (scaling has its own test)
            "max": 2,
            "volumes": [{"name": "out", "persistentVolumeClaim": {"claimName": "out"}}],
            "volumeMounts": [{"name": "out", "mountPath": "/data"}],
            **executors,
        },
        "processor": {"sink": "jsonl", "options": {"directory": "/data/out"}},
    }


def pool_pods(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    out = kube.kubectl("get", "pods", "-n", namespace, "-l", POOL_SELECTOR, "-o", "json").stdout
    pods: list[dict[str, Any]] = json.loads(out)["items"]
    return pods


def running_pool_pods(kube: Kube, namespace: str) -> set[str]:
    return {
        p["metadata"]["name"]
        for p in pool_pods(kube, namespace)
        if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    }


def pool_of(kube: Kube, namespace: str, size: int) -> set[str] | None:
    """The running pool pods once there are ``size`` of them."""
    running = running_pool_pods(kube, namespace)
    return running if len(running) == size else None


def pool_token(kube: Kube, namespace: str, stream: dict[str, Any]) -> str:
    """The pool token Secret's value, checked to be owned by the stream."""
    secret = json.loads(
        kube.kubectl(
            "get", "secret", f"{stream['metadata']['name']}-pool-token", "-n", namespace, "-o", "json"
        ).stdout
    )
    assert [o["uid"] for o in secret["metadata"]["ownerReferences"]] == [stream["metadata"]["uid"]]
    return base64.b64decode(secret["data"]["token"]).decode()


def executor_pids(stream: str) -> list[int]:
    """The host pids of this stream's executor containers (the stream name is unique to the test)."""
    found = subprocess.run(
        ["pgrep", "-f", f"directstream.executor.pool_worker .*--stream {stream}$"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return [int(pid) for pid in found]


def mid_batch(kube: Kube, namespace: str, name: str) -> bool:
    return bool((get_stream(kube, namespace, name).get("status") or {}).get("pending"))


def assert_exactly_once(
    kafka: KafkaBroker, topic: str, group: str, out: Path, stream: dict[str, Any]
) -> None:
    latest = latest_offsets(kafka.bootstrap, topic)
    seen = jsonl_offsets(out)
    want = {(t, p, o) for (t, p), end in latest.items() for o in range(end)}
    assert set(seen) == want, f"{len(want - set(seen))} records missing"
    duplicated = [key for key, n in seen.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} records in the sink twice, e.g. {duplicated[:5]}"
    assert group_offsets(kafka.bootstrap, group, topic) == latest, "status equals the Kafka group"
    assert stream["status"]["recordsTotal"] == sum(latest.values())


def test_a_pool_stream_survives_executor_and_operator_kills_with_every_record_exactly_once(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    pool_operator: OperatorProcess,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
) -> None:
    name = f"pool-{namespace}"[:40].rstrip("-")
    kafka.create_topic(topic_name, partitions=PARTITIONS)
    kafka.produce(topic_name, 2_400, partitions=PARTITIONS)
    host_volumes.provide(namespace, "out", tmp_path / "volume")
    out = tmp_path / "volume" / "out"
    manifest = stream_manifest(name, namespace, kafka.bootstrap, pool_spec(topic_name))
    kube.kubectl("apply", "-f", "-", input=manifest)

    first = wait_until("two warm executor pods", lambda: pool_of(kube, namespace, 2), 120)
    wait_until("a committed batch", lambda: committed_of(get_stream(kube, namespace, name).get("status")))
    token = pool_token(kube, namespace, get_stream(kube, namespace, name))
    events = kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    for where, text in (
        ("the operator's log", pool_operator.log()),
        ("events", events),
        ("status", json.dumps(get_stream(kube, namespace, name))),
    ):
        assert token not in text, f"the pool token is in {where}"

    rng = random.Random(13)
    for _ in range(3):  # executor processes SIGKILLed while a batch runs
        wait_until("a batch in flight", lambda: mid_batch(kube, namespace, name) and executor_pids(name), 60)
        os.kill(rng.choice(executor_pids(name)), signal.SIGKILL)
        time.sleep(rng.uniform(0.2, 1.0))
    replaced = wait_until(
        "the lost executors replaced", lambda: (now := pool_of(kube, namespace, 2)) and now - first, 120
    )
    assert len(replaced) >= 1

    wait_until("a batch in flight", lambda: mid_batch(kube, namespace, name), 60)
    pool_operator.kill()  # SIGKILL mid-batch: its pods keep running, holding a token nobody accepts
    before_restart = running_pool_pods(kube, namespace)
    pool_operator.start()
    wait_until(
        "a new pool, the old pods gone",
        lambda: (now := running_pool_pods(kube, namespace)) and not (now & before_restart) and len(now) == 2,
        120,
    )

    latest = latest_offsets(kafka.bootstrap, topic_name)
    stream = wait_committed(kube, namespace, name, latest, timeout=180)
    assert_exactly_once(kafka, topic_name, name, out, stream)
    assert pool_token(kube, namespace, stream) != token, "a new driver run has a new token"


def test_an_executor_setting_edit_replaces_the_pool_and_job_mode_removes_it(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    pool_operator: OperatorProcess,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
) -> None:
    name = f"edit-{namespace}"[:40].rstrip("-")
    kafka.create_topic(topic_name, partitions=PARTITIONS)
    kafka.produce(topic_name, 400, partitions=PARTITIONS)
    host_volumes.provide(namespace, "out", tmp_path / "volume")
    out = tmp_path / "volume" / "out"
    kube.kubectl(
        "apply", "-f", "-", input=stream_manifest(name, namespace, kafka.bootstrap, pool_spec(topic_name))
    )
    first = wait_until("two warm executor pods", lambda: pool_of(kube, namespace, 2), 120)

    patch = {"spec": {"executors": {"env": [{"name": "EDITED", "value": "1"}]}}}
    kube.kubectl("patch", "directstream", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    kafka.produce(topic_name, 200, partitions=PARTITIONS)  # a batch planned under the new settings

    def edited_pool() -> set[str] | None:
        pods = [p for p in pool_pods(kube, namespace) if not p["metadata"].get("deletionTimestamp")]
        names = {p["metadata"]["name"] for p in pods}
        env_ok = all(
            {"name": "EDITED", "value": "1"} in p["spec"]["containers"][0].get("env", []) for p in pods
        )
        return names if pods and env_ok and not (names & first) else None

    wait_until("the pool replaced with the edited settings", edited_pool, 120)
    latest = latest_offsets(kafka.bootstrap, topic_name)
    stream = wait_committed(kube, namespace, name, latest, timeout=120)
    assert_exactly_once(kafka, topic_name, name, out, stream)

    patch = {"spec": {"executors": {"mode": "job"}}}
    kube.kubectl("patch", "directstream", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    kafka.produce(topic_name, 40, partitions=PARTITIONS)
    latest = latest_offsets(kafka.bootstrap, topic_name)
    stream = wait_committed(kube, namespace, name, latest, timeout=120)
    wait_until("no pool pod left", lambda: not pool_pods(kube, namespace), 60)
    secrets = kube.kubectl("get", "secret", "-n", namespace, "-o", "name").stdout
    assert "pool-token" not in secrets, "the token Secret goes with the pool"
    assert_exactly_once(kafka, topic_name, name, out, stream)
