"""The chart with warm executors on (``pool.enabled``, ``networkPolicy.enabled``): ``helm install`` into a
namespace under the `restricted` Pod Security Standard, then a ``mode: pool`` stream processes its backlog
exactly once through executor pods that long-poll the operator pod, with the executor ServiceAccount
still holding no API permission; uninstall leaves nothing.

The dev node has no CNI plugin that enforces NetworkPolicies (pods share the host network), so the
policies are checked as the API server stored them, not for their effect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import EXECUTOR_IMAGE, Kube
from tests.harness.local_mode import group_offsets, latest_offsets
from tests.harness.operator_fixtures import stream_manifest, wait_committed, wait_until
from tests.integration.test_helm import (
    FULLNAME,
    Release,
    assert_exactly_once,
    chart_values,
    free_port,
    helm,  # noqa: F401 (fixture)
    operator_log,
    release,  # noqa: F401 (fixture)
    released_objects,
    restricted_namespace,
)

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]

EXECUTOR_SA = "directstream-executor"
POOL_SELECTOR = "directstream.io/pool"


def pool_pods(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    out = kube.kubectl("get", "pods", "-n", namespace, "-l", POOL_SELECTOR, "-o", "json").stdout
    pods: list[dict[str, Any]] = json.loads(out)["items"]
    return pods


def can_i(kube: Kube, namespace: str, verb: str, resource: str) -> bool:
    who = f"system:serviceaccount:{namespace}:{EXECUTOR_SA}"
    answer = kube.kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", who, check=False)
    return answer.stdout.strip() == "yes"


def test_helm_install_with_the_pool_runs_a_pool_stream_exactly_once_under_restricted(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    release: Release,  # noqa: F811
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
) -> None:
    restricted_namespace(kube, namespace)
    pool_port = free_port()
    values = chart_values(
        namespace,
        kube,
        pool={"enabled": True, "port": pool_port, "host": "127.0.0.1"},
        networkPolicy={
            "enabled": True,
            "executorEgress": [{"to": [{"ipBlock": {"cidr": "127.0.0.1/32"}}], "ports": [{"port": 9092}]}],
        },
    )
    release.install(values)
    policies = {
        p["metadata"]["name"]: p
        for p in json.loads(kube.kubectl("get", "networkpolicies", "-n", namespace, "-o", "json").stdout)[
            "items"
        ]
    }
    assert set(policies) == {FULLNAME, f"{FULLNAME}-executors"}
    ingress_ports = [
        port["port"] for rule in policies[FULLNAME]["spec"]["ingress"] for port in rule.get("ports", [])
    ]
    assert pool_port in ingress_ports
    egress_ports = [
        port["port"]
        for rule in policies[f"{FULLNAME}-executors"]["spec"]["egress"]
        for port in rule.get("ports", [])
    ]
    assert pool_port in egress_ports and 9092 in egress_ports

    kafka.create_topic(topic_name, partitions=3)
    kafka.produce(topic_name, 1_200, partitions=3)
    host_volumes.provide(namespace, "clicks-output", tmp_path / "volume")
    stream = stream_manifest(
        "clicks",
        namespace,
        kafka.bootstrap,
        {
            "topics": [topic_name],
            "groupId": topic_name,
            "batchInterval": "200ms",
            "rate": {"maxPerPartition": 1000},  # 200 a partition a batch: several batches on warm pods
            "executors": {
                "mode": "pool",
                "min": 2,
                "max": 2,
                "serviceAccountName": EXECUTOR_SA,
                "volumes": [{"name": "output", "persistentVolumeClaim": {"claimName": "clicks-output"}}],
                "volumeMounts": [{"name": "output", "mountPath": "/data"}],
            },
            "processor": {"sink": "jsonl", "options": {"directory": "/data/clicks"}},
        },
    )
    kube.kubectl("apply", "-f", "-", input=stream)
    latest = latest_offsets(kafka.bootstrap, topic_name)
    done = wait_committed(kube, namespace, "clicks", latest, timeout=240)
    assert done["status"]["batch"] >= 2, "the backlog took several batches"
    assert_exactly_once(tmp_path / "volume" / "clicks", latest)
    assert group_offsets(kafka.bootstrap, topic_name, topic_name) == latest

    pods = pool_pods(kube, namespace)
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    assert len(running) == 2, [p["metadata"]["name"] for p in pods]
    uid = done["metadata"]["uid"]
    for pod in running:
        assert [o["uid"] for o in pod["metadata"]["ownerReferences"]] == [uid], "owned by the stream"
        (container,) = pod["status"]["containerStatuses"]
        assert container["image"].endswith(EXECUTOR_IMAGE) and container["restartCount"] == 0
        args = " ".join(
            pod["spec"]["containers"][0].get("args", []) + pod["spec"]["containers"][0]["command"]
        )
        assert f"http://127.0.0.1:{pool_port}" in args, args
        assert pod["spec"]["serviceAccountName"] == EXECUTOR_SA
    # Warm: several batches ran on the same two pods, no Job was made for them.
    assert kube.kubectl("get", "jobs", "-n", namespace, "-o", "name").stdout.strip() == ""
    for verb, resource in [("get", "pods"), ("get", "secrets"), ("list", "directstreams.directstream.io")]:
        assert not can_i(kube, namespace, verb, resource), f"the executor may {verb} {resource}"
    log = operator_log(kube, namespace)
    assert "forbidden" not in log.lower(), log[-3000:]

    release.uninstall()
    wait_until("the pool pods to go with the stream", lambda: pool_pods(kube, namespace) == [], 120)
    wait_until("no objects of the release left", lambda: released_objects(kube, namespace) == [], 60)
