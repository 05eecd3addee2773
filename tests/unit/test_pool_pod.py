"""A cluster pool's pods and token Secret (pure builders), and how a pod's death is read."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from directstream.executor.contract import KafkaClientSettings, OffsetRange, ProcessorSettings, WorkUnit
from directstream.executor.contract.pool import ENV_POOL_TOKEN
from directstream.operator.adapters.kube.pool_pods import pod_death
from directstream.operator.core.executor_pod import DEFAULT_POD_SECURITY_CONTEXT
from directstream.operator.core.manifests import LABEL_STREAM, MANAGED_BY
from directstream.operator.core.pool_pod import (
    LABEL_POOL,
    build_pool_executor_pod,
    build_pool_token_secret,
    pool_layout,
    pool_token_secret_name,
)
from directstream.operator.core.spec import StreamSpec, parse_stream
from tests.crd_support import MINIMAL

OWNER = {"apiVersion": "directstream.io/v1alpha1", "kind": "DirectStream", "name": "clicks", "uid": "u-1"}
TOKEN = "the-secret-pool-token-value"


def spec(**executors: Any) -> StreamSpec:
    doc = copy.deepcopy(MINIMAL)
    doc["spec"]["executors"] = {"mode": "pool", **executors}
    return parse_stream(doc)


def unit(secret_env: dict[str, str] | None = None) -> WorkUnit:
    return WorkUnit(
        stream="clicks",
        batch_id=4,
        attempt=2,
        index=0,
        ranges=(OffsetRange("clicks", 0, 0, 10),),
        kafka=KafkaClientSettings("k:9092", secret_env=secret_env or {}),
        processor=ProcessorSettings("jsonl", {"directory": "/data/out"}),
    )


def pod(stream: StreamSpec, template: WorkUnit | None = None, secret: str | None = None) -> dict[str, Any]:
    return build_pool_executor_pod(
        stream,
        template or unit(),
        namespace="prod",
        owner=OWNER,
        image="img:1",
        run="ab12cd34",
        executor_id="1-3",
        url="http://10.0.0.7:8470/streams/prod/clicks",
        kafka_secret=secret,
    )


def test_a_pool_pod_is_restricted_owned_by_the_stream_and_gets_the_token_only_by_reference() -> None:
    built = pod(spec(serviceAccountName="clicks-executor"))
    assert TOKEN not in json.dumps(built)
    meta, pod_spec = built["metadata"], built["spec"]
    assert meta["name"] == "clicks-pool-ab12cd34-1-3" and meta["namespace"] == "prod"
    assert meta["ownerReferences"][0]["uid"] == "u-1" and meta["ownerReferences"][0]["controller"] is True
    assert meta["labels"][LABEL_STREAM] == "clicks" and meta["labels"][LABEL_POOL] == "ab12cd34"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == MANAGED_BY
    assert pod_spec["restartPolicy"] == "Never", "a dead executor is a dead pod"
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["serviceAccountName"] == "clicks-executor"
    assert pod_spec["securityContext"] == dict(DEFAULT_POD_SECURITY_CONTEXT)
    container = pod_spec["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["args"] == [
        "--url",
        "http://10.0.0.7:8470/streams/prod/clicks",
        "--executor-id",
        "1-3",
        "--stream",
        "clicks",
    ]
    token = next(e for e in container["env"] if e["name"] == ENV_POOL_TOKEN)
    assert token == {
        "name": ENV_POOL_TOKEN,
        "valueFrom": {"secretKeyRef": {"name": pool_token_secret_name("clicks"), "key": "token"}},
    }


def test_the_token_secret_is_owned_by_the_stream_and_kafka_secrets_reach_pods_by_reference() -> None:
    secret = build_pool_token_secret("clicks", namespace="prod", owner=OWNER, run="ab12cd34", token=TOKEN)
    assert secret["metadata"]["name"] == "clicks-pool-token" and secret["stringData"] == {"token": TOKEN}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    template = unit({"sasl.password": "DIRECTSTREAM_KAFKA_SECRET_0"})
    env = pod(spec(), template, "kafka-client")["spec"]["containers"][0]["env"]
    assert {
        "name": "DIRECTSTREAM_KAFKA_SECRET_0",
        "valueFrom": {"secretKeyRef": {"name": "kafka-client", "key": "sasl.password"}},
    } in env
    assert pool_layout(spec(), template, "kafka-client") != pool_layout(spec(), unit(), None), (
        "other Secret keys replace the pool"
    )


def test_a_pod_is_dead_once_it_ended_vanished_or_stayed_pending_too_long() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    created = {"creationTimestamp": (now - timedelta(seconds=30)).isoformat()}
    running = {"metadata": created, "status": {"phase": "Running"}}
    assert pod_death(running, 10, now) is None
    assert pod_death(None, 10, now) == "was deleted"
    killed = {
        "metadata": created,
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"state": {"terminated": {"exitCode": 137, "reason": "Error"}}}],
        },
    }
    assert pod_death(killed, 10, now) == "exited with code 137 (Error)"
    terminating = {
        "metadata": {**created, "deletionTimestamp": now.isoformat()},
        "status": {"phase": "Running"},
    }
    assert pod_death(terminating, 10, now) is None, "alive until its container ended"
    waiting = {"reason": "ErrImagePull", "message": "no such image"}
    pending = {
        "metadata": created,
        "status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": waiting}}]},
    }
    assert pod_death(pending, 60, now) is None
    assert pod_death(pending, 10, now) == "stayed Pending for more than 10s (ErrImagePull: no such image)"
