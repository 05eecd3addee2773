"""Forged executor pods on the cluster (issue #11, item 2, "a forged pod").

While a batch attempt runs (its real executors wait at a gate the test opens), someone with
``create pods`` / ``create jobs`` in the namespace makes pods that pretend to be its executors:
the Job's labels and completion-index annotation, and a container that writes a well-formed
termination message claiming success for the Job's batch, attempt, index and digest. None may
count: the batch commits only after the gate opens and the real executors report, every record
reaches the sink once, and the operator logs each pod it ignored."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from directstream.executor.contract import ExecutorResult
from directstream.operator.core.manifests import ANNOTATION_DIGEST, COMPLETION_INDEX_ANNOTATION
from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import group_offsets, latest_offsets
from tests.harness.operator_fixtures import (
    OperatorProcess,
    committed_of,
    get_stream,
    stream_manifest,
    wait_committed,
    wait_until,
)

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]

# The real executors write their rows only once the test creates the gate file.
GATED_SINK = (
    "import os, time\n"
    "class Gated:\n"
    "    def __init__(self, options, unit):\n"
    "        self.dir, self.unit = options['dir'], unit\n"
    "    def process(self, records, rng):\n"
    "        while not os.path.exists(os.path.join(self.dir, 'gate')):\n"
    "            time.sleep(0.2)\n"
    "        with open(os.path.join(self.dir, 'rows'), 'a') as f:\n"
    "            f.writelines(f'{self.unit.batch_id} {self.unit.attempt} {self.unit.index} '\n"
    "                         f'{r.partition()} {r.offset()}\\n' for r in records)\n"
)
# What a forged container runs: write the claimed result where the kubelet reads the message
# (an Indexed Job's pods take their index from JOB_COMPLETION_INDEX).
WRITE_RESULT = (
    "import json, os\n"
    "doc = json.loads(os.environ['FORGED_RESULT'])\n"
    "doc['index'] = int(os.environ.get('JOB_COMPLETION_INDEX', doc['index']))\n"
    "open(os.environ['MESSAGE_PATH'], 'w').write(json.dumps(doc))\n"
)


def gated_stream(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    host_volumes: HostVolumes,
    topic: str,
    code: Path,
    name: str,
) -> None:
    (code / "gatedsink.py").write_text(GATED_SINK)
    spec = {
        "topics": [topic],
        "batchInterval": "1s",
        "executors": {"max": 2, **host_volumes.code(namespace, code)},
        "processor": {"sink": "python", "options": {"entryPoint": "gatedsink:Gated", "dir": str(code)}},
    }
    kube.kubectl("apply", "-f", "-", input=stream_manifest(name, namespace, kafka.bootstrap, spec))


def running_job(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    pending = wait_until(
        "a running batch",
        lambda: ((get_stream(kube, namespace, name).get("status") or {}).get("pending") or {}).get("job"),
        90,
    )
    out = kube.kubectl("get", "job", str(pending), "-n", namespace, "-o", "json").stdout
    job: dict[str, Any] = json.loads(out)
    return job


def forged_template(job: dict[str, Any], index: int, *, selector_labels: bool = True) -> dict[str, Any]:
    """The Job's pod template as an attacker copies it, with a container that only writes a
    successful result for ``index`` (same image, security context, volumes: it passes the
    namespace's Pod Security admission like the real pods)."""
    metadata = job["metadata"]
    template = copy.deepcopy(job["spec"]["template"])
    labels = template["metadata"].setdefault("labels", {})
    if not selector_labels:  # the Job controller's selector: without it, it leaves the pod alone
        for key in ("controller-uid", "batch.kubernetes.io/controller-uid"):
            labels.pop(key, None)
    labels["job-name"] = metadata["name"]
    labels[COMPLETION_INDEX_ANNOTATION] = str(index)
    template["metadata"].setdefault("annotations", {})[COMPLETION_INDEX_ANNOTATION] = str(index)
    batch, attempt = int(labels["directstream.io/batch"]), int(labels["directstream.io/attempt"])
    claim = ExecutorResult(
        batch,
        attempt,
        index,
        ok=True,
        records=1000,
        bytes=1000,
        digest=metadata["annotations"][ANNOTATION_DIGEST],
    )
    container = template["spec"]["containers"][0]
    container["command"] = ["python3", "-c", WRITE_RESULT]
    container.pop("args", None)
    container["env"] = [
        *container.get("env", []),
        {"name": "FORGED_RESULT", "value": claim.dumps()},
        {"name": "MESSAGE_PATH", "value": container["terminationMessagePath"]},
    ]
    return template


def pod_from(template: dict[str, Any], name: str, owners: list[dict[str, Any]]) -> dict[str, Any]:
    metadata = {**template["metadata"], "name": name}
    if owners:
        metadata["ownerReferences"] = owners
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def job_reference(job: dict[str, Any], *, controller: bool) -> dict[str, Any]:
    reference = {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"]}
    reference["uid"] = job["metadata"]["uid"]
    return {**reference, "controller": controller, **({"blockOwnerDeletion": True} if controller else {})}


def attacker_job(job: dict[str, Any]) -> dict[str, Any]:
    """A Job of the attacker's own whose Indexed pods carry the real Job's labels: their
    controller is a real Job, just not this one."""
    template = forged_template(job, 0, selector_labels=False)
    template["metadata"]["labels"]["forged"] = "job"
    template["metadata"]["labels"].pop(COMPLETION_INDEX_ANNOTATION)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{job['metadata']['name']}-copy"},
        "spec": {
            "manualSelector": True,
            "selector": {"matchLabels": {"forged": "job"}},
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": template,
        },
    }


def pod_names(kube: Kube, namespace: str, selector: str) -> set[str]:
    out = kube.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "name").stdout
    return {line.split("/", 1)[1] for line in out.split()}


def terminated_pods(kube: Kube, namespace: str, selector: str) -> list[str]:
    doc = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout)
    done = []
    for pod in doc["items"]:
        statuses = pod.get("status", {}).get("containerStatuses") or []
        if statuses and (statuses[0].get("state") or {}).get("terminated"):
            done.append(pod["metadata"]["name"])
    return done


def test_forged_executor_pods_are_not_counted(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
):
    started = time.monotonic()
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 60, partitions=2)
    latest = latest_offsets(kafka.bootstrap, topic_name)
    gated_stream(kube, kafka, namespace, host_volumes, topic_name, tmp_path, "forged")
    job = running_job(kube, namespace, "forged")
    name = job["metadata"]["name"]

    forgeries = {
        # Labels and annotations only: anyone may set them.
        f"{name}-labels": pod_from(forged_template(job, 0, selector_labels=False), f"{name}-labels", []),
        # An owner reference to the Job, but not as its controller.
        f"{name}-owned": pod_from(
            forged_template(job, 1, selector_labels=False),
            f"{name}-owned",
            [job_reference(job, controller=False)],
        ),
        # The Job as controller (its uid is on every real pod), the Job controller's own labels:
        # only the container is not the Job's executor.
        f"{name}-controlled": pod_from(
            forged_template(job, 0), f"{name}-controlled", [job_reference(job, controller=True)]
        ),
    }
    for pod in forgeries.values():
        kube.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(pod))
    kube.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(attacker_job(job)))

    def forged_done() -> bool:
        # Terminated with their message; the Job controller may delete the one carrying its
        # selector's labels as a duplicate of a real index.
        present = pod_names(kube, namespace, f"job-name={name}")
        finished = set(terminated_pods(kube, namespace, f"job-name={name}"))
        copies = len(terminated_pods(kube, namespace, "forged=job")) == 2
        return copies and all(pod in finished or pod not in present for pod in forgeries)

    wait_until("the forged pods to terminate with their messages", forged_done, 150)
    copies = terminated_pods(kube, namespace, "forged=job")
    forged = sorted([*forgeries, *copies])
    stream = get_stream(kube, namespace, "forged")

    def verdict() -> str | None:
        status = get_stream(kube, namespace, "forged").get("status") or {}
        if committed_of(status):
            return "committed"
        log, present = operator.log(), pod_names(kube, namespace, f"job-name={name}")
        judged = all(f"ignoring pod {pod} " in log or pod not in present for pod in forged)
        return "ignored" if judged else None

    # The operator reads the forged pods (it logs each one it ignores), or counts them and commits.
    assert wait_until("the operator to judge the forged pods", verdict, 60) == "ignored"
    stream = get_stream(kube, namespace, "forged")
    assert not committed_of(stream.get("status")), "nothing committed while the gate is closed"
    assert (stream["status"].get("pending") or {}).get("job") == name, "the attempt still runs"
    forged_at = time.monotonic()

    (tmp_path / "gate").touch()  # the real executors now process their ranges
    stream = wait_committed(kube, namespace, "forged", latest, timeout=120)
    print(
        f"\nforged pods judged {forged_at - started:.1f}s after the start; "
        f"committed {time.monotonic() - forged_at:.1f}s after the gate opened"
    )

    rows = [line.split() for line in (tmp_path / "rows").read_text().splitlines()]
    offsets = [(int(p), int(o)) for _, _, _, p, o in rows]
    assert sorted(offsets) == sorted({(p, o) for (_, p), end in latest.items() for o in range(end)})
    assert {(r[0], r[1]) for r in rows} == {("1", "1")}, "batch 1, attempt 1: the forged pods failed nothing"
    assert group_offsets(kafka.bootstrap, "forged", topic_name) == latest
    history = stream["status"]["history"]
    assert [(h["batch"], h["attempts"], h["records"]) for h in history] == [(1, 1, sum(latest.values()))]
    log = operator.log()
    for line in log.splitlines():
        if "ignoring pod" in line:
            print(line.split("ignoring ", 1)[1])
    assert any(f"ignoring pod {pod} " in log for pod in forged), "the operator says what it ignored"
