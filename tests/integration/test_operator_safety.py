"""What a DirectStream cannot make the operator do, on the real API server and a real Kafka broker:
refused settings stop at the API server or become an InvalidSpec condition (no Job, no commit) while
another stream keeps going, and a password in an executor's error never reaches status, events or
the operator's log."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import group_offsets, latest_offsets
from tests.harness.operator_fixtures import (
    OperatorProcess,
    committed_of,
    condition,
    get_stream,
    stream_manifest,
    wait_committed,
    wait_until,
)

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]


def apply(kube: Kube, manifest: str, *, check: bool = True) -> Any:
    return kube.kubectl("apply", "-f", "-", input=manifest, check=check)


def invalid_spec(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    degraded = condition(get_stream(kube, namespace, name), "Degraded")
    return degraded if degraded.get("reason") == "InvalidSpec" else None


def jobs_of(kube: Kube, namespace: str) -> list[str]:
    out = kube.kubectl("get", "jobs", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}").stdout
    return out.split()


def events_text(kube: Kube, namespace: str) -> str:
    return kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout


def test_refused_settings_reach_no_job_and_no_commit_while_another_stream_progresses(
    kube: Kube, kafka: KafkaBroker, namespace: str, operator: OperatorProcess, topic_name: str
) -> None:
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 200, partitions=2)

    def stream(name: str, kafka_extra: dict[str, Any]) -> str:
        spec = {
            "kafka": {"bootstrapServers": kafka.bootstrap, **kafka_extra},
            "topics": [topic_name],
            "batchInterval": "1s",
            "processor": {"sink": "count"},
        }
        return stream_manifest(name, namespace, kafka.bootstrap, spec)

    # The API server refuses what loads code or holds a secret, with the parser's message.
    refused = apply(kube, stream("plugin", {"config": {"plugin.library.paths": "/tmp/x.so"}}), check=False)
    assert refused.returncode != 0
    assert "'plugin.library.paths' is refused: it makes the client load shared libraries" in refused.stderr
    secret = apply(kube, stream("inline-secret", {"config": {"sasl.password": "Hunter2Inline"}}), check=False)
    assert secret.returncode != 0 and "'sasl.password' is a secret and is refused here" in secret.stderr
    assert "Hunter2Inline" not in secret.stderr

    # What the CRD admits but the operator cannot use: InvalidSpec, with the reason.
    kube.kubectl(
        "create", "secret", "generic", "not-librdkafka", "-n", namespace,
        "--from-literal=username=app", "--from-literal=password=Hunter2FromSecret",
    )  # fmt: skip
    apply(kube, stream("unknown-key", {"config": {"no.such.setting": "1"}}))
    apply(
        kube,
        stream(
            "oidc",
            {
                "config": {
                    "sasl.oauthbearer.method": "oidc",
                    "sasl.oauthbearer.token.endpoint.url": "http://127.0.0.1:9/t",
                }
            },
        ),
    )
    apply(kube, stream("bad-secret", {"configFrom": {"secretRef": {"name": "not-librdkafka"}}}))
    apply(kube, stream("good", {}))

    reasons = {
        "unknown-key": "'no.such.setting' is not a librdkafka client setting",
        "oidc": "--allow-kafka-oidc",
        "bad-secret": "Secret not-librdkafka key 'password' is not a librdkafka client setting",
    }
    for name, fragment in reasons.items():
        degraded = wait_until(f"{name} InvalidSpec", lambda name=name: invalid_spec(kube, namespace, name))
        assert fragment in degraded["message"], degraded
        shown = yaml.safe_load(
            kube.kubectl("get", "directstream", name, "-n", namespace, "-o", "yaml").stdout
        )
        reasons_shown = {c["type"]: c["reason"] for c in shown["status"]["conditions"]}
        assert reasons_shown.get("Degraded") == "InvalidSpec", shown["status"]
    latest = latest_offsets(kafka.bootstrap, topic_name)
    wait_committed(kube, namespace, "good", latest)
    time.sleep(2)  # a few more turns of the refused streams' loops
    for name in reasons:
        status = get_stream(kube, namespace, name).get("status") or {}
        assert not committed_of(status) and not status.get("pending"), status
        assert group_offsets(kafka.bootstrap, name, topic_name) == {}
        assert not [job for job in jobs_of(kube, namespace) if job.startswith(f"{name}-")]
    events = events_text(kube, namespace)
    assert '"reason": "InvalidSpec"' in events
    everything = events + operator.log() + json.dumps(get_stream(kube, namespace, "bad-secret"))
    assert "Hunter2FromSecret" not in everything
    assert operator.proc is not None and operator.proc.poll() is None, "the operator is still running"


def test_a_password_in_an_executor_error_never_reaches_status_events_or_logs(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
) -> None:
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 10, partitions=1)
    (tmp_path / "leaky.py").write_text(
        "class Leaky:\n"
        "    def __init__(self, options, unit):\n"
        "        pass\n"
        "    def process(self, records, rng):\n"
        "        raise RuntimeError('cannot reach postgresql://app:Pa55wordLeak@127.0.0.1:1/db '\n"
        "                           '(host=127.0.0.1 password=Pa55wordLeak)')\n"
    )
    apply(
        kube,
        stream_manifest(
            "leaky",
            namespace,
            kafka.bootstrap,
            {
                "topics": [topic_name],
                "batchInterval": "1s",
                "maxAttempts": 2,
                "executors": host_volumes.code(namespace, tmp_path),  # the pods get leaky.py
                "processor": {"sink": "python", "options": {"entryPoint": "leaky:Leaky"}},
            },
        ),
    )

    def gave_up() -> dict[str, Any] | None:
        stream = get_stream(kube, namespace, "leaky")
        return stream if condition(stream, "Degraded").get("reason") == "BatchFailed" else None

    stream = wait_until("the batch to fail for good", gave_up, timeout=120)
    last_error = stream["status"]["pending"]["lastError"]
    assert "postgresql://app:***@127.0.0.1:1/db" in last_error and "password=***" in last_error
    shown = json.dumps(stream) + events_text(kube, namespace) + operator.log()
    assert "Pa55wordLeak" not in shown
    assert group_offsets(kafka.bootstrap, "leaky", topic_name) == {}
