"""A SIGKILL around a batch's commit on the cluster (issue #11, item 2, "a kill between Job
deletion and commit").

A batch ends: status commit, Kafka group commit, deletion of the attempt's Job. The test holds
the operator in the last gap deterministically: a ValidatingAdmissionPolicy refuses to delete
the namespace's Jobs, so the operator commits the batch and then cannot delete its Job; the
test kills it there, lifts the policy and starts it again. On restart the Job and its units
ConfigMap go, nothing runs twice, the next batch starts where the commit left and the status
equals the Kafka group."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import group_offsets, latest_offsets
from tests.harness.operator_fixtures import OperatorProcess, stream_manifest, wait_committed, wait_until

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]

ROWS_SINK = (
    "class Rows:\n"
    "    def __init__(self, options, unit):\n"
    "        self.out, self.unit = options['out'], unit\n"
    "    def process(self, records, rng):\n"
    "        with open(self.out, 'a') as f:\n"
    "            f.writelines(f'{self.unit.batch_id} {self.unit.attempt} {r.partition()} {r.offset()}\\n'\n"
    "                         for r in records)\n"
)


def hold_job_deletions(kube: Kube, namespace: str) -> str:
    name = f"hold-jobs-{namespace}"[:63]
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["batch"],
                        "apiVersions": ["v1"],
                        "operations": ["DELETE"],
                        "resources": ["jobs"],
                    }
                ]
            },
            "validations": [{"expression": "false", "message": "the test holds this namespace's Jobs"}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    for doc in (policy, binding):
        kube.kubectl("create", "-f", "-", input=json.dumps(doc))
    # A Job to try deletions on (server-side dry run) until the policy applies.
    probe = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "probe"},
        "spec": {
            "suspend": True,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "none"}]}},
        },
    }
    kube.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(probe))
    refused = ["delete", "job", "probe", "-n", namespace, "--dry-run=server"]
    wait_until(
        "the policy to refuse Job deletions", lambda: kube.kubectl(*refused, check=False).returncode != 0
    )
    return name


def lift(kube: Kube, namespace: str, name: str) -> None:
    kube.kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found", check=False)
    kube.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found", check=False)
    allowed = ["delete", "job", "probe", "-n", namespace, "--dry-run=server"]
    wait_until("Job deletions to be allowed", lambda: kube.kubectl(*allowed, check=False).returncode == 0)
    kube.kubectl("delete", "job", "probe", "-n", namespace, check=False)


def exists(kube: Kube, namespace: str, kind: str, name: str) -> bool:
    return kube.kubectl("get", kind, name, "-n", namespace, check=False).returncode == 0


def test_a_kill_after_the_commit_before_the_job_is_deleted_leaves_nothing_behind(
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
    kafka.produce(topic_name, 40, partitions=2)
    first = latest_offsets(kafka.bootstrap, topic_name)
    (tmp_path / "rowssink.py").write_text(ROWS_SINK)
    out = tmp_path / "rows"
    spec = {
        "topics": [topic_name],
        "batchInterval": "1s",
        "executors": {"max": 2, **host_volumes.code(namespace, tmp_path)},
        "processor": {"sink": "python", "options": {"entryPoint": "rowssink:Rows", "out": str(out)}},
    }
    policy = hold_job_deletions(kube, namespace)
    try:
        kube.kubectl("apply", "-f", "-", input=stream_manifest("killed", namespace, kafka.bootstrap, spec))
        wait_committed(kube, namespace, "killed", first, timeout=240)
        wait_until(
            "the operator to be refused the Job's deletion",
            lambda: "the test holds this namespace's Jobs" in operator.log(),
            60,
        )
        assert group_offsets(kafka.bootstrap, "killed", topic_name) == first, "the group commit came first"
        assert exists(kube, namespace, "job", "killed-b1-a1") and exists(
            kube, namespace, "configmap", "killed-b1-a1-units"
        )
        operator.kill()  # committed twice over, the Job still there
        held_at = time.monotonic()
    finally:
        lift(kube, namespace, policy)
    operator.start()

    wait_until(
        "the committed batch's Job and units ConfigMap to go",
        lambda: (
            not exists(kube, namespace, "job", "killed-b1-a1")
            and not exists(kube, namespace, "configmap", "killed-b1-a1-units")
        ),
        60,
    )
    cleaned_at = time.monotonic()
    kafka.produce(topic_name, 20, partitions=2)
    latest = latest_offsets(kafka.bootstrap, topic_name)
    stream = wait_committed(kube, namespace, "killed", latest, timeout=120)
    print(
        f"\ncommitted and held {held_at - started:.1f}s after the start; Job gone "
        f"{cleaned_at - held_at:.1f}s after the restart; "
        f"next batch committed {time.monotonic() - cleaned_at:.1f}s later"
    )

    rows = [line.split() for line in out.read_text().splitlines()]
    offsets = [(int(p), int(o)) for _, _, p, o in rows]
    assert sorted(offsets) == sorted({(p, o) for (_, p), end in latest.items() for o in range(end)}), (
        "every record once"
    )
    assert {(r[0], r[1]) for r in rows if int(r[3]) < first[(topic_name, int(r[2]))]} == {("1", "1")}
    later = [(int(p), int(o)) for b, _, p, o in rows if b != "1"]
    for (_, partition), end in first.items():
        assert min(o for p, o in later if p == partition) == end, "the next batch starts at the commit"
    assert group_offsets(kafka.bootstrap, "killed", topic_name) == latest, "status equals the Kafka group"
    history = [(h["batch"], h["attempts"]) for h in stream["status"]["history"]]
    assert history[0] == (1, 1) and all(batch > 1 for batch, _ in history[1:]), "batch 1 committed once"
    jobs = json.loads(kube.kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"]
    assert [j["metadata"]["name"] for j in jobs if j["metadata"]["name"].startswith("killed-b1-")] == []


def group_member(bootstrap: str, group: str, topic: str) -> Consumer:
    """A consumer that joins ``group`` and stays a member: Kafka refuses offset commits from outside
    a group that has members, so the operator's group commit fails after its status commit."""
    member = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "max.poll.interval.ms": 600_000,
            "log_level": 3,
        }
    )
    member.subscribe([topic])
    deadline = time.monotonic() + 60
    while not member.assignment():
        assert time.monotonic() < deadline, f"the member never joined group {group}"
        member.poll(0.2)
    return member


def test_a_kill_between_the_status_commit_and_the_group_commit_is_put_right_on_restart(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
):
    """The state a SIGKILL between the two commits leaves: the status holds the batch, the Kafka
    group does not. Held there deterministically by a member in the group (the operator's commit
    is refused), then the operator is killed and restarted with the group empty again."""
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 40, partitions=2)
    first = latest_offsets(kafka.bootstrap, topic_name)
    (tmp_path / "rowssink.py").write_text(ROWS_SINK)
    out = tmp_path / "rows"
    spec = {
        "topics": [topic_name],
        "batchInterval": "1s",
        "executors": {"max": 2, **host_volumes.code(namespace, tmp_path)},
        "processor": {"sink": "python", "options": {"entryPoint": "rowssink:Rows", "out": str(out)}},
    }
    member = group_member(kafka.bootstrap, "gap", topic_name)
    try:
        kube.kubectl("apply", "-f", "-", input=stream_manifest("gap", namespace, kafka.bootstrap, spec))
        wait_committed(kube, namespace, "gap", first, timeout=240)
        wait_until(
            "the group commit to be refused",
            lambda: "could not be updated" in operator.log(),
            60,
        )
        assert group_offsets(kafka.bootstrap, "gap", topic_name) != first, "the group stayed behind"
        operator.kill()
    finally:
        member.close()  # leaves the group: commits from outside are accepted again
    operator.start()

    wait_until(
        "the restarted operator to put the group right",
        lambda: group_offsets(kafka.bootstrap, "gap", topic_name) == first,
        120,
    )
    reasons = kube.kubectl(
        "get", "events", "-n", namespace, "-o", "jsonpath={range .items[*]}{.reason}: {.message}{'\\n'}{end}"
    ).stdout
    assert "OffsetsDrift: consumer group gap differs from the stored offsets" in reasons, reasons
    kafka.produce(topic_name, 20, partitions=2)
    latest = latest_offsets(kafka.bootstrap, topic_name)
    stream = wait_committed(kube, namespace, "gap", latest, timeout=120)

    rows = [line.split() for line in out.read_text().splitlines()]
    offsets = [(int(p), int(o)) for _, _, p, o in rows]
    assert sorted(offsets) == sorted({(p, o) for (_, p), end in latest.items() for o in range(end)}), (
        "every record once: the restart did not run batch 1 again"
    )
    assert group_offsets(kafka.bootstrap, "gap", topic_name) == latest, "status equals the Kafka group"
    history = [(h["batch"], h["attempts"]) for h in stream["status"]["history"]]
    assert history[0] == (1, 1), "batch 1 committed once, in its first attempt"
