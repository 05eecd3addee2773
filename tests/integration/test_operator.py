"""The operator end to end: the real API server, controller-manager, scheduler and test node,
a real Kafka broker, and the ``directstream-operator`` process."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import NewPartitions

from directstream.operator.core.status import state_from_status
from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import group_offsets, jsonl_offsets, latest_offsets
from tests.harness.operator_fixtures import (
    OperatorProcess,
    condition,
    get_stream,
    stream_manifest,
    wait_committed,
    wait_until,
)

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]


def apply(kube: Kube, manifest: str) -> None:
    kube.kubectl("apply", "-f", "-", input=manifest)


def patch_spec(kube: Kube, namespace: str, name: str, spec_patch: str) -> None:
    kube.kubectl(
        "patch", "directstream", name, "-n", namespace, "--type=merge", "-p", f'{{"spec": {spec_patch}}}'
    )


def job_names(kube: Kube, namespace: str) -> list[str]:
    out = kube.kubectl("get", "jobs", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}").stdout
    return out.split()


def running_batch(kube: Kube, namespace: str, name: str) -> dict[str, object] | None:
    """The recorded plan once its Job is running (``status.pending.job``)."""
    pending = (get_stream(kube, namespace, name).get("status") or {}).get("pending") or {}
    return pending if pending.get("job") else None


def expected(latest: dict[tuple[str, int], int]) -> set[tuple[str, int, int]]:
    return {(t, p, o) for (t, p), end in latest.items() for o in range(end)}


def test_a_stream_runs_to_ready_with_every_record_once(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
):
    kafka.create_topic(topic_name, partitions=3)
    kafka.produce(topic_name, 3_000, partitions=3)
    # The files go to a PersistentVolumeClaim (a jsonl directory on no volume is InvalidSpec on a cluster).
    host_volumes.provide(namespace, "out", tmp_path / "volume")
    out = tmp_path / "volume" / "out"
    apply(
        kube,
        stream_manifest(
            "clicks",
            namespace,
            kafka.bootstrap,
            {
                "topics": [topic_name],
                "batchInterval": "1s",
                "rate": {"maxPerPartition": 400},
                "executors": {
                    "max": 2,
                    "volumes": [{"name": "out", "persistentVolumeClaim": {"claimName": "out"}}],
                    "volumeMounts": [{"name": "out", "mountPath": "/data"}],
                },
                "processor": {"sink": "jsonl", "options": {"directory": "/data/out"}},
            },
        ),
    )
    latest = latest_offsets(kafka.bootstrap, topic_name)
    stream = wait_committed(kube, namespace, "clicks", latest)
    kube.kubectl("wait", "--for=condition=Ready", "directstream/clicks", "-n", namespace, "--timeout=60s")
    seen = jsonl_offsets(out)
    assert set(seen) == expected(latest)
    assert max(seen.values()) == 1
    assert group_offsets(kafka.bootstrap, "clicks", topic_name) == latest
    status = stream["status"]
    assert status["recordsTotal"] == 3_000
    assert status["batch"] == 3  # 1,000 per partition at 400 per 1 s batch
    assert status["observedGeneration"] == stream["metadata"]["generation"]
    table = kube.kubectl("get", "directstreams", "-n", namespace).stdout
    assert "clicks" in table and "True" in table and "3000" in table
    wide = kube.kubectl("get", "dstream", "-n", namespace, "-o", "wide").stdout
    assert topic_name in wide
    # Succeeded Jobs are removed once their results are read.
    wait_until("no Jobs left", lambda: not kube.kubectl("get", "jobs", "-n", namespace, "-o", "name").stdout)


def test_operator_killed_mid_batch_adopts_the_running_job(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    topic_name: str,
    tmp_path: Path,
    host_volumes: HostVolumes,
):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 400, partitions=2)
    (tmp_path / "slowsink.py").write_text(
        "import json, time\n"
        "class Slow:\n"
        "    def __init__(self, options, unit):\n"
        "        self.out, self.unit = options['out'], unit\n"
        "    def process(self, records, rng):\n"
        "        time.sleep(5)\n"
        "        with open(self.out, 'a') as f:\n"
        "            f.writelines(f'{self.unit.attempt} {r.partition()} {r.offset()}\\n' for r in records)\n"
    )
    sink_out = tmp_path / "rows"
    apply(
        kube,
        stream_manifest(
            "slow",
            namespace,
            kafka.bootstrap,
            {
                "topics": [topic_name],
                "batchInterval": "1s",
                "executors": host_volumes.code(namespace, tmp_path),
                "processor": {
                    "sink": "python",
                    "options": {"entryPoint": "slowsink:Slow", "out": str(sink_out)},
                },
            },
        ),
    )
    pending = wait_until("status.pending.job", lambda: running_batch(kube, namespace, "slow"))
    job = pending["job"]
    assert job in job_names(kube, namespace)
    operator.kill()
    operator.start()
    latest = latest_offsets(kafka.bootstrap, topic_name)
    stream = wait_committed(kube, namespace, "slow", latest, timeout=120)
    assert "adopted running Job " + job in operator.log()
    history = stream["status"]["history"]
    assert history[0]["batch"] == pending["batch"] and history[0]["attempts"] == 1
    rows = sink_out.read_text().split("\n")[:-1]
    assert len(rows) == 400 and {r.split()[0] for r in rows} == {"1"}, "the ranges ran once, as attempt 1"


def test_a_failed_executor_retries_the_same_ranges(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    topic_name: str,
    tmp_path: Path,
    host_volumes: HostVolumes,
):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 200, partitions=2)
    (tmp_path / "flaky.py").write_text(
        "class Flaky:\n"
        "    def __init__(self, options, unit):\n"
        "        if unit.attempt == 1 and unit.index == 0:\n"
        "            raise RuntimeError('first attempt fails on purpose')\n"
        "    def process(self, records, rng):\n"
        "        pass\n"
    )
    out = tmp_path / "out"
    apply(
        kube,
        stream_manifest(
            "flaky",
            namespace,
            kafka.bootstrap,
            {
                "topics": [topic_name],
                "batchInterval": "1s",
                "executors": host_volumes.code(namespace, tmp_path),
                "processor": {"sink": "python", "options": {"entryPoint": "flaky:Flaky"}},
            },
        ),
    )
    latest = latest_offsets(kafka.bootstrap, topic_name)
    stream = wait_committed(kube, namespace, "flaky", latest, timeout=120)
    assert stream["status"]["history"][0]["attempts"] == 2
    events = kube.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=DirectStream"
    ).stdout
    assert "BatchRetrying" in events and "first attempt fails on purpose" in events
    assert not out.exists()


def test_unreachable_broker_degrades_one_stream_while_another_progresses(
    kube: Kube, kafka: KafkaBroker, namespace: str, operator: OperatorProcess, topic_name: str, tmp_path: Path
):
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 100)
    apply(
        kube,
        stream_manifest(
            "nowhere",
            namespace,
            "127.0.0.1:1",
            {
                "topics": [topic_name],
                "processor": {"sink": "count"},
            },
        ),
    )
    apply(
        kube,
        stream_manifest(
            "fine",
            namespace,
            kafka.bootstrap,
            {
                "topics": [topic_name],
                "batchInterval": "1s",
                "processor": {"sink": "count"},
            },
        ),
    )
    wait_committed(kube, namespace, "fine", latest_offsets(kafka.bootstrap, topic_name))

    def degraded() -> dict[str, object] | None:
        cond = condition(get_stream(kube, namespace, "nowhere"), "Degraded")
        return cond if cond.get("status") == "True" else None

    cond = wait_until("nowhere to be Degraded", degraded, timeout=90)
    assert cond["reason"] == "KafkaUnavailable"
    assert "127.0.0.1:1" in str(cond["message"])
    assert operator.proc is not None and operator.proc.poll() is None, "the operator must keep running"


def test_suspend_resume_rewind_and_new_partitions(
    kube: Kube, kafka: KafkaBroker, namespace: str, operator: OperatorProcess, topic_name: str, tmp_path: Path
):
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 100)
    apply(
        kube,
        stream_manifest(
            "ctl",
            namespace,
            kafka.bootstrap,
            {
                "topics": [topic_name],
                "batchInterval": "500ms",
                "processor": {"sink": "count"},
            },
        ),
    )
    wait_committed(kube, namespace, "ctl", {(topic_name, 0): 100})

    patch_spec(kube, namespace, "ctl", '{"suspend": true}')
    wait_until("Suspended", lambda: get_stream(kube, namespace, "ctl")["status"].get("phase") == "Suspended")
    kafka.produce(topic_name, 50)
    time.sleep(3)
    assert state_from_status(get_stream(kube, namespace, "ctl")["status"]).committed == {(topic_name, 0): 100}

    patch_spec(kube, namespace, "ctl", '{"suspend": false}')
    wait_committed(kube, namespace, "ctl", {(topic_name, 0): 150})

    patch_spec(kube, namespace, "ctl", '{"reset": {"id": "again", "to": "earliest"}}')
    stream = wait_until(
        "the rewind to be applied and re-processed",
        lambda: (
            s
            if (s := get_stream(kube, namespace, "ctl"))["status"].get("appliedReset") == "again"
            and s["status"]["recordsTotal"] == 300
            else None
        ),
        timeout=90,
    )
    assert state_from_status(stream["status"]).committed == {(topic_name, 0): 150}
    events = kube.kubectl("get", "events", "-n", namespace).stdout
    assert "Rewound" in events
    assert group_offsets(kafka.bootstrap, "ctl", topic_name) == {(topic_name, 0): 150}

    for future in kafka.admin().create_partitions([NewPartitions(topic_name, 2)]).values():
        future.result(30)
    kafka.produce(topic_name, 20, partitions=2)
    wait_committed(kube, namespace, "ctl", {(topic_name, 0): 160, (topic_name, 1): 10})


def test_ten_streams_under_one_operator_all_progress(
    kube: Kube, kafka: KafkaBroker, namespace: str, operator: OperatorProcess, topic_name: str
):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 200, partitions=2)
    manifests = [
        stream_manifest(
            f"s{i}",
            namespace,
            kafka.bootstrap,
            {
                "topics": [topic_name],
                "batchInterval": "1s",
                "processor": {"sink": "count"},
            },
        )
        for i in range(10)
    ]
    apply(kube, "---\n".join(manifests))
    latest = latest_offsets(kafka.bootstrap, topic_name)
    for i in range(10):
        wait_committed(kube, namespace, f"s{i}", latest, timeout=180)
    table = kube.kubectl("get", "dstream", "-n", namespace).stdout
    assert table.count("True") >= 10


def test_deleting_a_stream_collects_its_jobs_and_group(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    topic_name: str,
    tmp_path: Path,
    host_volumes: HostVolumes,
):
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 50)
    spec = {
        "topics": [topic_name],
        "batchInterval": "500ms",
        "deleteConsumerGroup": True,
        "executors": host_volumes.code(namespace, tmp_path),
        "processor": {"sink": "count"},
    }
    apply(kube, stream_manifest("gone", namespace, kafka.bootstrap, spec))
    wait_committed(kube, namespace, "gone", {(topic_name, 0): 50})
    assert group_offsets(kafka.bootstrap, "gone", topic_name) == {(topic_name, 0): 50}

    (tmp_path / "stuck.py").write_text(
        "import time\nclass Stuck:\n    def __init__(self, options, unit):\n        time.sleep(600)\n"
    )
    patch_spec(
        kube, namespace, "gone", '{"processor": {"sink": "python", "options": {"entryPoint": "stuck:Stuck"}}}'
    )
    kafka.produce(topic_name, 10)
    wait_until("a Job", lambda: job_names(kube, namespace))
    kube.kubectl("delete", "directstream", "gone", "-n", namespace, "--timeout=90s")
    wait_until(
        "the Job to be garbage-collected",
        lambda: not kube.kubectl("get", "jobs", "-n", namespace, "-o", "name").stdout.strip(),
        timeout=90,
    )
    assert group_offsets(kafka.bootstrap, "gone", topic_name) == {}, (
        "spec.deleteConsumerGroup removes the group"
    )


def test_pods_stuck_pending_fail_the_attempt_with_a_clear_condition(
    kube: Kube, kafka: KafkaBroker, namespace: str, operator: OperatorProcess, topic_name: str
):
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 10)
    spec = {
        "topics": [topic_name],
        "maxAttempts": 1,
        "executors": {"pendingTimeout": "3s", "nodeSelector": {"directstream.io/no-such-node": "true"}},
        "processor": {"sink": "count"},
    }
    apply(kube, stream_manifest("stuck", namespace, kafka.bootstrap, spec))

    def failed() -> dict[str, object] | None:
        cond = condition(get_stream(kube, namespace, "stuck"), "Degraded")
        return cond if cond.get("reason") == "BatchFailed" else None

    cond = wait_until("the attempt to fail", failed, timeout=120)
    assert "Pending" in str(cond["message"]), cond
    stream = get_stream(kube, namespace, "stuck")
    assert stream["status"]["phase"] == "Failed"
    assert state_from_status(stream["status"]).committed == {}, (
        "nothing is committed for a batch that never ran"
    )
    wait_until("the stuck Job to be removed", lambda: not job_names(kube, namespace), timeout=60)


def test_kafka_settings_from_a_secret_reach_executors_without_being_copied(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    topic_name: str,
    tmp_path: Path,
    host_volumes: HostVolumes,
):
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 20)
    marker = "s3cr3t-client-id-4711"
    kube.kubectl(
        "create", "secret", "generic", "kafka-client", "-n", namespace, f"--from-literal=client.id={marker}"
    )
    (tmp_path / "slowsink.py").write_text(
        "import time\nclass Slow:\n    def __init__(self, options, unit):\n        pass\n"
        "    def process(self, records, rng):\n        time.sleep(4)\n"
    )
    spec = {
        "topics": [topic_name],
        "kafka": {"bootstrapServers": kafka.bootstrap, "configFrom": {"secretRef": {"name": "kafka-client"}}},
        "executors": host_volumes.code(namespace, tmp_path),
        "processor": {"sink": "python", "options": {"entryPoint": "slowsink:Slow"}},
    }
    apply(kube, stream_manifest("secretive", namespace, kafka.bootstrap, spec))
    pending = wait_until("status.pending.job", lambda: running_batch(kube, namespace, "secretive"))
    job_json = kube.kubectl("get", "job", str(pending["job"]), "-n", namespace, "-o", "json").stdout
    assert "secretKeyRef" in job_json and "kafka-client" in job_json
    assert marker not in job_json, "a secret value was copied into the Job"
    stream = wait_committed(kube, namespace, "secretive", {(topic_name, 0): 20})
    events = kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert marker not in str(stream) and marker not in events and marker not in operator.log()


@pytest.mark.postgres
def test_offsets_in_postgres_under_the_operator(
    kube: Kube,
    kafka: KafkaBroker,
    postgres: str,
    pg_schema: str,
    namespace: str,
    operator: OperatorProcess,
    topic_name: str,
):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 500, partitions=2)
    kube.kubectl("create", "secret", "generic", "pg", "-n", namespace, f"--from-literal=dsn={postgres}")
    spec = {
        "topics": [topic_name],
        "batchInterval": "1s",
        "rate": {"maxPerPartition": 100},
        "offsets": {"store": "postgres"},
        "executors": {
            "env": [
                {
                    "name": "DIRECTSTREAM_POSTGRES_DSN",
                    "valueFrom": {"secretKeyRef": {"name": "pg", "key": "dsn"}},
                }
            ]
        },
        "processor": {
            "sink": "postgres",
            "options": {"table": f"{pg_schema}.records", "offsetsTable": f"{pg_schema}.offsets"},
        },
    }
    apply(kube, stream_manifest("pg", namespace, kafka.bootstrap, spec))
    latest = latest_offsets(kafka.bootstrap, topic_name)
    wait_committed(kube, namespace, "pg", latest, timeout=180)
    with psycopg.connect(postgres) as conn:
        rows = conn.execute(
            f'SELECT count(*), count(DISTINCT (partition, "offset")) FROM {pg_schema}.records'
        ).fetchone()
        stored = conn.execute(f"SELECT topic, partition, next_offset FROM {pg_schema}.offsets").fetchall()
    assert rows == (500, 500)
    assert {(t, p): o for t, p, o in stored} == latest
