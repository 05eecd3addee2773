"""Executor pods as a real deployment needs them, on the real control plane: Jobs the API server admits in a
namespace that enforces the `restricted` Pod Security Standard, durable jsonl output on a
PersistentVolumeClaim, InvalidSpec for a jsonl directory on no volume, and the operator's default image."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from directstream.executor.contract import KafkaClientSettings, OffsetRange, ProcessorSettings, WorkUnit
from directstream.operator.core.executor_pod import (
    DEFAULT_CONTAINER_SECURITY_CONTEXT,
    DEFAULT_EXECUTOR_REPOSITORY,
    DEFAULT_POD_SECURITY_CONTEXT,
    default_executor_image,
)
from directstream.operator.core.manifests import build_executor_job, build_work_units_configmap
from directstream.operator.core.spec import parse_stream
from directstream.operator.core.status import state_from_status
from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import EXECUTOR_IMAGE, Kube, enforce_restricted
from tests.harness.local_mode import group_offsets, jsonl_offsets, latest_offsets
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
POD_SECURITY_WARNING = "would violate PodSecurity"


def job_for(namespace: str, bootstrap: str, topic: str, executors: dict[str, Any]) -> dict[str, Any]:
    """The operator's Job for one count-sink unit over ``topic`` partition 0, offsets [0, 10)."""
    doc = yaml.safe_load(
        stream_manifest(
            "pods",
            namespace,
            bootstrap,
            {"topics": [topic], "executors": executors, "processor": {"sink": "count"}},
        )
    )
    spec = parse_stream(doc)
    unit = unit_for(topic, bootstrap)
    owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": "00000000-0000-0000-0000-000000000000",
    }
    job = build_executor_job(
        spec,
        [unit],
        namespace=namespace,
        owner=owner,
        image=EXECUTOR_IMAGE,
        secret_name=None,
        secret_keys=[],
    )
    del job["metadata"]["ownerReferences"]  # no DirectStream here: the Job stands alone
    return job


def unit_for(topic: str, bootstrap: str) -> WorkUnit:
    return WorkUnit(
        stream="pods",
        batch_id=0,
        attempt=1,
        index=0,
        ranges=(OffsetRange(topic, 0, 0, 10),),
        kafka=KafkaClientSettings(bootstrap),
        processor=ProcessorSettings("count", {}),
    )


def create_and_start(kube: Kube, namespace: str, job: dict[str, Any], topic: str, bootstrap: str) -> str:
    """What the operator's launcher does: create the Job (suspended), its work units' ConfigMap owned
    by it, then resume it. Returns kubectl's stderr of the Job's create (admission warnings)."""
    created = kube.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(job))
    job_doc = json.loads(created.stdout)
    units = build_work_units_configmap([unit_for(topic, bootstrap)], job=job_doc, digest="")
    kube.kubectl("create", "-f", "-", input=json.dumps(units))
    resume = json.dumps({"spec": {"suspend": False}})
    kube.kubectl("patch", "job", job["metadata"]["name"], "-n", namespace, "--type=merge", "-p", resume)
    return created.stderr


def events(kube: Kube, namespace: str, kind: str) -> str:
    return kube.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.kind={kind}", "-o", "json"
    ).stdout


def test_executor_jobs_are_admitted_and_run_where_restricted_is_enforced(
    kube: Kube, kafka: KafkaBroker, namespace: str, topic_name: str
) -> None:
    enforce_restricted(kube, namespace)
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 10)
    job = job_for(namespace, kafka.bootstrap, topic_name, {})
    warnings = create_and_start(kube, namespace, job, topic_name, kafka.bootstrap)
    assert POD_SECURITY_WARNING not in warnings, warnings
    name = job["metadata"]["name"]
    kube.kubectl("wait", f"job/{name}", "-n", namespace, "--for=condition=Complete", "--timeout=120s")
    pod = json.loads(
        kube.kubectl("get", "pods", "-n", namespace, "-l", f"job-name={name}", "-o", "json").stdout
    )
    (item,) = pod["items"]
    assert item["spec"]["securityContext"] == DEFAULT_POD_SECURITY_CONTEXT
    assert item["spec"]["containers"][0]["securityContext"] == DEFAULT_CONTAINER_SECURITY_CONTEXT
    result = json.loads(item["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
    assert result["records"] == 10

    # The same check refuses a stream that gives up the profile: a warning, and no pod is ever created.
    root = job_for(
        namespace, kafka.bootstrap, topic_name, {"securityContext": {"runAsNonRoot": False, "runAsUser": 0}}
    )
    root["metadata"]["name"] = "as-root"
    refused = create_and_start(kube, namespace, root, topic_name, kafka.bootstrap)
    assert POD_SECURITY_WARNING in refused and "runAsNonRoot != true" in refused, refused
    wait_until(
        "FailedCreate for the root Job",
        lambda: (
            "violates PodSecurity" in events(kube, namespace, "Job")
            and "as-root" in events(kube, namespace, "Job")
        ),
        timeout=60,
    )
    pods = kube.kubectl("get", "pods", "-n", namespace, "-l", "job-name=as-root", "-o", "name").stdout
    assert pods == ""


def jsonl_spec(topic: str, **executors: Any) -> dict[str, Any]:
    return {
        "topics": [topic],
        "batchInterval": "1s",
        "executors": {"max": 2, **executors},
        "processor": {"sink": "jsonl", "options": {"directory": "/data/clicks"}},
    }


def test_jsonl_without_a_volume_is_refused_and_runs_once_one_is_mounted(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
) -> None:
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 200, partitions=2)
    kube.kubectl(
        "apply",
        "-f",
        "-",
        input=stream_manifest("clicks", namespace, kafka.bootstrap, jsonl_spec(topic_name)),
    )

    def refused() -> dict[str, Any] | None:
        ready = condition(get_stream(kube, namespace, "clicks"), "Ready")
        return ready if ready.get("reason") == "InvalidSpec" else None

    ready = wait_until("InvalidSpec", refused, timeout=60)
    assert ready["status"] == "False"
    message = str(ready["message"])
    assert (
        "spec.processor.options.directory: /data/clicks is not on a volume mounted in the executor pods"
        in message
    )
    assert "persistentVolumeClaim" in message and "volumeMounts" in message, message
    posted = json.loads(events(kube, namespace, "DirectStream"))["items"]
    assert any(
        e["reason"] == "InvalidSpec" and e["type"] == "Warning" and "/data/clicks" in e["message"]
        for e in posted
    )
    # Nothing ran: no plan, no Job, no commit.
    status = get_stream(kube, namespace, "clicks")["status"]
    assert not status.get("pending") and not committed_of(status)
    assert kube.kubectl("get", "jobs", "-n", namespace, "-o", "name").stdout == ""
    assert group_offsets(kafka.bootstrap, "clicks", topic_name) == {}

    # The fix the message names: a PersistentVolumeClaim mounted there. The stream goes on by itself.
    volume = tmp_path / "volume"
    host_volumes.provide(namespace, "clicks-output", volume)
    host_volumes.wait_bound(namespace, "clicks-output")
    fixed = jsonl_spec(
        topic_name,
        volumes=[{"name": "output", "persistentVolumeClaim": {"claimName": "clicks-output"}}],
        volumeMounts=[{"name": "output", "mountPath": "/data"}],
    )
    kube.kubectl("apply", "-f", "-", input=stream_manifest("clicks", namespace, kafka.bootstrap, fixed))
    latest = latest_offsets(kafka.bootstrap, topic_name)
    wait_committed(kube, namespace, "clicks", latest, timeout=120)
    wait_until("no Jobs left", lambda: not kube.kubectl("get", "jobs", "-n", namespace, "-o", "name").stdout)
    # The files are on the volume after every Job and pod is gone, each record in exactly one.
    seen = jsonl_offsets(volume / "clicks")
    assert set(seen) == {(t, p, o) for (t, p), end in latest.items() for o in range(end)}
    assert max(seen.values()) == 1


def test_the_operator_without_executor_image_runs_the_image_of_its_version(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    topic_name: str,
    tmp_path: Path,
    host_volumes: HostVolumes,
) -> None:
    assert operator.executor_image is None  # started as users start it: no --executor-image
    version = importlib.metadata.version("directstream")
    image = default_executor_image(DEFAULT_EXECUTOR_REPOSITORY, version)
    assert image == f"directstream/executor:{version}"
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 20)
    # A sink slow enough that the running Job can be looked at.
    (tmp_path / "slowsink.py").write_text(
        "import time\n"
        "class Slow:\n"
        "    def __init__(self, options, unit):\n"
        "        pass\n"
        "    def process(self, records, rng):\n"
        "        time.sleep(3)\n"
    )
    spec = {
        "topics": [topic_name],
        "executors": host_volumes.code(namespace, tmp_path),
        "processor": {"sink": "python", "options": {"entryPoint": "slowsink:Slow"}},
    }
    kube.kubectl("apply", "-f", "-", input=stream_manifest("plain", namespace, kafka.bootstrap, spec))

    def running_job() -> dict[str, Any] | None:
        pending = (get_stream(kube, namespace, "plain").get("status") or {}).get("pending") or {}
        if not pending.get("job"):
            return None
        out = kube.kubectl("get", "job", pending["job"], "-n", namespace, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None

    job = wait_until("the running Job", running_job, timeout=60)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == image
    assert pod["securityContext"] == DEFAULT_POD_SECURITY_CONTEXT  # none in the stream's spec
    assert f"executor image for streams without spec.executors.image: {image}" in operator.log()
    wait_committed(kube, namespace, "plain", latest_offsets(kafka.bootstrap, topic_name), timeout=120)


def test_a_missing_priority_class_fails_the_attempt_after_the_pending_timeout(
    kube: Kube, kafka: KafkaBroker, namespace: str, operator: OperatorProcess, topic_name: str
) -> None:
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 10)
    spec = {
        "topics": [topic_name],
        "maxAttempts": 1,
        "executors": {"pendingTimeout": "3s", "priorityClassName": "no-such-class"},
        "processor": {"sink": "count"},
    }
    kube.kubectl("apply", "-f", "-", input=stream_manifest("unranked", namespace, kafka.bootstrap, spec))

    def failed() -> dict[str, Any] | None:
        found = condition(get_stream(kube, namespace, "unranked"), "Degraded")
        return found if found.get("reason") == "BatchFailed" else None

    degraded = wait_until("the attempt to fail", failed, timeout=120)
    assert "no pod created yet (check the Job's events)" in str(degraded["message"]), degraded
    # The Job controller could not create the pod; the API server said why.
    assert "no PriorityClass with name no-such-class" in events(kube, namespace, "Job")
    assert state_from_status(get_stream(kube, namespace, "unranked")["status"]).committed == {}
