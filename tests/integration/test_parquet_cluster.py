"""The parquet sink under the operator on the dev cluster, with the real S3 API server (S3Proxy):
credentials from a Secret by reference only, executors SIGKILLed mid-batch and the operator killed
and restarted, and still every record in exactly one object."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from tests.harness.executor_procs import ExecutorKiller
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import group_offsets, latest_offsets
from tests.harness.operator_fixtures import (
    OperatorProcess,
    get_stream,
    stream_manifest,
    wait_committed,
    wait_until,
)
from tests.harness.parquet_check import assert_exactly_once
from tests.harness.s3_fixtures import S3Server
from tests.integration.test_parquet import produce_mixed
from tests.unit.test_examples import EXAMPLES_DIR

pytestmark = [pytest.mark.k8s, pytest.mark.kafka, pytest.mark.s3]


def create_credentials_secret(kube: Kube, namespace: str, s3: S3Server, name: str = "s3-credentials") -> str:
    kube.kubectl(
        "create",
        "secret",
        "generic",
        name,
        "-n",
        namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={s3.env['AWS_ACCESS_KEY_ID']}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.env['AWS_SECRET_ACCESS_KEY']}",
    )
    return name


def test_parquet_under_the_operator_with_killed_executors_and_operator(
    kube: Kube,
    kafka: KafkaBroker,
    s3: S3Server,
    s3_prefix: str,
    namespace: str,
    operator: OperatorProcess,
    topic_name: str,
) -> None:
    kafka.create_topic(topic_name, partitions=3)
    produce_mixed(kafka, topic_name, 3_000, 3)
    secret = create_credentials_secret(kube, namespace, s3)
    spec = {
        "topics": [topic_name],
        "batchInterval": "1s",
        "maxAttempts": 20,
        "rate": {"maxPerPartition": 200},  # 200 per partition per batch: 5 batches to kill into
        "executors": {"max": 2},
        "processor": {
            "sink": "parquet",
            "options": {
                "url": f"s3://{s3.bucket}/{s3_prefix}",
                "endpoint": s3.endpoint,
                "region": s3.env["AWS_REGION"],
                "credentialsSecret": secret,
                "rowGroupRecords": 50,
            },
        },
    }
    kube.kubectl("apply", "-f", "-", input=stream_manifest("lake", namespace, kafka.bootstrap, spec))

    def running_job() -> str | None:
        pending = (get_stream(kube, namespace, "lake").get("status") or {}).get("pending") or {}
        return pending.get("job")

    job = wait_until("a running Job", running_job, timeout=90)
    job_json = kube.kubectl("get", "job", str(job), "-n", namespace, "-o", "json").stdout
    assert '"secretKeyRef"' in job_json and secret in job_json
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in job_json, "the secret value was copied into the Job"

    with ExecutorKiller(topic_name, most=4, seed=7) as killer:
        time.sleep(3)
        operator.kill()  # the driver dies mid-run; the restarted one resumes the recorded plan
        operator.start()
        latest = latest_offsets(kafka.bootstrap, topic_name)
        stream = wait_committed(kube, namespace, "lake", latest, timeout=240)
    assert killer.kills >= 2, "executors were killed mid-batch"
    assert any(entry.get("attempts", 1) > 1 for entry in stream["status"]["history"]), (
        "some batch was retried"
    )

    assert assert_exactly_once(s3, s3_prefix, kafka.bootstrap, latest) >= 3 * 5
    assert s3.incomplete_uploads(s3_prefix) == []
    wait_until("group offsets", lambda: group_offsets(kafka.bootstrap, "lake", topic_name) == latest)
    events = kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    secret_value = s3.env["AWS_SECRET_ACCESS_KEY"]
    assert secret_value not in json.dumps(stream) and secret_value not in events
    assert secret_value not in operator.log()


def test_the_parquet_example_runs_as_written(
    kube: Kube,
    kafka: KafkaBroker,
    s3: S3Server,
    s3_prefix: str,
    namespace: str,
    operator: OperatorProcess,
    topic_name: str,
) -> None:
    docs = [d for d in yaml.safe_load_all((EXAMPLES_DIR / "parquet-s3.yaml").read_text()) if d]
    secret = next(d for d in docs if d["kind"] == "Secret")
    stream = next(d for d in docs if d["kind"] == "DirectStream")
    # The only changes: this test's broker, topic, bucket/prefix, S3 server and its credentials.
    secret["stringData"] = {key: s3.env[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    spec = stream["spec"]
    spec["kafka"]["bootstrapServers"] = kafka.bootstrap
    spec["topics"] = [topic_name]
    spec["processor"]["options"]["url"] = f"s3://{s3.bucket}/{s3_prefix}"
    spec["processor"]["options"]["endpoint"] = s3.endpoint
    kafka.create_topic(topic_name, partitions=2)
    produce_mixed(kafka, topic_name, 400, 2)
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all([secret, stream]))

    latest = latest_offsets(kafka.bootstrap, topic_name)
    wait_committed(kube, namespace, stream["metadata"]["name"], latest, timeout=120)
    assert assert_exactly_once(s3, s3_prefix, kafka.bootstrap, latest) >= 2
