"""The executor Job's manifest and reading its pods back into results (pure builders)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from directstream.executor.contract import (
    ExecutorResult,
    FailedAt,
    KafkaClientSettings,
    OffsetRange,
    ProcessorSettings,
    WorkUnit,
)
from directstream.operator.core.executor_pod import (
    DEFAULT_CONTAINER_SECURITY_CONTEXT,
    DEFAULT_POD_SECURITY_CONTEXT,
)
from directstream.operator.core.job_results import parse_executor_results, read_job_progress
from directstream.operator.core.manifests import (
    JOB_TTL_SECONDS,
    MAX_JOB_NAME_LENGTH,
    MAX_WORK_UNITS_BYTES,
    ManifestError,
    WorkUnitsTooLarge,
    build_executor_job,
    build_work_units_configmap,
    job_labels,
    job_name,
    job_selector,
    label_value,
    secret_env_for,
    stream_labels,
)
from directstream.operator.core.spec import ExecutorsSpec, KafkaSpec, StreamSpec

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
OWNER = {"apiVersion": "directstream.io/v1alpha1", "kind": "DirectStream", "name": "clicks", "uid": "u-1"}
SECRET_KEYS = ["sasl.username", "sasl.password"]
SPEC = StreamSpec(
    name="clicks",
    namespace="prod",
    kafka=KafkaSpec(
        "kafka:9092", config={"security.protocol": "SASL_SSL"}, config_from_secret="kafka-client"
    ),
    topics=("clicks",),
    executors=ExecutorsSpec(max=3, timeout_seconds=90.5),
)


def make_units(
    n: int = 3,
    *,
    secret_keys: list[str] | None = None,
    batch: int = 7,
    attempt: int = 2,
    ranges_each: int = 1,
) -> list[WorkUnit]:
    kafka = KafkaClientSettings(
        "kafka:9092",
        config={"security.protocol": "SASL_SSL"},
        secret_env=secret_env_for(SECRET_KEYS if secret_keys is None else secret_keys),
    )
    return [
        WorkUnit(
            stream="clicks",
            batch_id=batch,
            attempt=attempt,
            index=i,
            ranges=tuple(OffsetRange("clicks", i * ranges_each + r, 100, 200) for r in range(ranges_each)),
            kafka=kafka,
            processor=ProcessorSettings("jsonl", {"directory": "/data/out"}),
        )
        for i in range(n)
    ]


def build(spec: StreamSpec = SPEC, units: list[WorkUnit] | None = None, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "namespace": "prod",
        "owner": OWNER,
        "image": "directstream:default",
        "secret_name": "kafka-client",
        "secret_keys": SECRET_KEYS,
    }
    arguments.update(overrides)
    return build_executor_job(spec, make_units() if units is None else units, **arguments)


def container_of(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


# -- names and labels ------------------------------------------------------------------------

stream_names = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=253),
    st.text(min_size=0, max_size=253),
)


@settings(max_examples=300, deadline=None)
@given(stream_names, st.integers(0, 2**63 - 1), st.integers(1, 10**6))
def test_job_names_are_short_valid_and_deterministic(stream: str, batch: int, attempt: int) -> None:
    name = job_name(stream, batch, attempt)
    assert DNS_LABEL.fullmatch(name)
    assert len(name) <= MAX_JOB_NAME_LENGTH
    assert len(f"{name}-999-abcde") <= 63  # the Job controller's pod name for the largest index
    assert name == job_name(stream, batch, attempt)
    assert name.endswith(f"-b{batch}-a{attempt}")


@settings(max_examples=200, deadline=None)
@given(stream_names, stream_names, st.integers(0, 10**6), st.integers(1, 50))
def test_different_streams_get_different_job_names(a: str, b: str, batch: int, attempt: int) -> None:
    if a != b:
        assert job_name(a, batch, attempt) != job_name(b, batch, attempt)
    assert job_name(a, batch, attempt) != job_name(a, batch + 1, attempt)
    assert job_name(a, batch, attempt) != job_name(a, batch, attempt + 1)


@settings(max_examples=200, deadline=None)
@given(stream_names)
def test_label_values_are_valid(stream: str) -> None:
    value = label_value(stream)
    assert LABEL_VALUE.fullmatch(value)
    assert len(value) <= 63
    assert stream_labels(stream)["directstream.io/stream"] == value


def test_readable_names_stay_readable_and_long_ones_get_a_stable_hash() -> None:
    assert job_name("clicks", 7, 2) == "clicks-b7-a2"
    long_name = "a" * 60
    shortened = job_name(long_name, 7, 2)
    assert shortened.startswith("a" * 20) and shortened.endswith("-b7-a2")
    assert shortened == job_name(long_name, 7, 2)
    assert job_name("Clicks.EU", 1, 1) != job_name("clicks-eu", 1, 1)


def test_job_name_refuses_impossible_inputs() -> None:
    with pytest.raises(ValueError, match="batch -1"):
        job_name("clicks", -1, 1)
    with pytest.raises(ValueError, match="attempt 0"):
        job_name("clicks", 1, 0)


def test_labels() -> None:
    assert stream_labels("clicks") == {
        "app.kubernetes.io/name": "directstream",
        "app.kubernetes.io/instance": "clicks",
        "app.kubernetes.io/component": "executor",
        "app.kubernetes.io/managed-by": "directstream-operator",
        "directstream.io/stream": "clicks",
    }
    labels = job_labels("clicks", 7, 2)
    assert labels["directstream.io/batch"] == "7" and labels["directstream.io/attempt"] == "2"
    assert job_selector("clicks", 7, 2) == (
        "directstream.io/stream=clicks,directstream.io/batch=7,directstream.io/attempt=2"
    )


# -- the Job ---------------------------------------------------------------------------------


def test_job_shape() -> None:
    units = make_units()
    job = build(units=units)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    metadata = job["metadata"]
    assert metadata["name"] == "clicks-b7-a2"
    assert metadata["namespace"] == "prod"
    assert metadata["labels"] == job_labels("clicks", 7, 2)
    assert metadata["annotations"]["directstream.io/batch"] == "7"
    assert metadata["annotations"]["directstream.io/attempt"] == "2"
    assert metadata["ownerReferences"] == [{**OWNER, "controller": True, "blockOwnerDeletion": True}]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 3
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 91
    assert spec["ttlSecondsAfterFinished"] == JOB_TTL_SECONDS
    template = spec["template"]
    assert template["metadata"]["labels"] == job_labels("clicks", 7, 2)
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    for absent in ("serviceAccountName", "nodeSelector", "tolerations", "priorityClassName", "affinity"):
        assert absent not in pod
    # Restricted by default (tests/unit/test_executor_pod.py has the details).
    assert pod["securityContext"] == DEFAULT_POD_SECURITY_CONTEXT
    assert pod["volumes"] == [
        {"name": "directstream-tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "directstream-work-units", "configMap": {"name": "clicks-b7-a2-units"}},
    ]
    assert job["spec"]["suspend"] is True  # resumed once the units' ConfigMap exists
    container = container_of(job)
    assert container["name"] == "executor"
    assert container["command"] == ["directstream-executor"]
    assert container["image"] == "directstream:default"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["securityContext"] == DEFAULT_CONTAINER_SECURITY_CONTEXT
    assert container["volumeMounts"] == [
        {"name": "directstream-tmp", "mountPath": "/tmp"},
        {"name": "directstream-work-units", "mountPath": "/var/run/directstream/units", "readOnly": True},
    ]
    assert "imagePullPolicy" not in container
    env = {entry["name"]: entry for entry in container["env"]}
    assert env["TMPDIR"] == {"name": "TMPDIR", "value": "/tmp"}
    assert container["env"][0] == {
        "name": "DIRECTSTREAM_WORK_UNITS_FILE",
        "value": "/var/run/directstream/units/units.json",
    }
    assert not any(len(json.dumps(entry)) > 1000 for entry in container["env"])  # no units in the env
    assert "JOB_COMPLETION_INDEX" in env
    assert json.dumps(job) == json.dumps(build(units=units))  # deterministic
    assert json.loads(json.dumps(job)) == job  # plain JSON


def test_pod_settings_pass_through() -> None:
    executors = ExecutorsSpec(
        image="registry/executor:1",
        resources={"limits": {"memory": "512Mi"}},
        env=({"name": "TZ", "value": "UTC"}, {"name": "DIRECTSTREAM_STALL_TIMEOUT", "value": "30"}),
        service_account_name="executors",
        node_selector={"pool": "batch"},
        tolerations=({"key": "batch", "operator": "Exists"},),
        security_context={"runAsUser": 1000, "fsGroup": 2000},
        container_security_context={"readOnlyRootFilesystem": False},
    )
    job = build(replace(SPEC, executors=executors))
    pod = job["spec"]["template"]["spec"]
    container = container_of(job)
    assert container["image"] == "registry/executor:1"  # the spec wins over the operator default
    assert container["resources"] == {"limits": {"memory": "512Mi"}}
    assert pod["serviceAccountName"] == "executors"
    assert pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["tolerations"] == [{"key": "batch", "operator": "Exists"}]
    assert container["securityContext"] == {
        **DEFAULT_CONTAINER_SECURITY_CONTEXT,
        "readOnlyRootFilesystem": False,
    }
    assert pod["securityContext"] == {**DEFAULT_POD_SECURITY_CONTEXT, "runAsUser": 1000, "fsGroup": 2000}
    names = [entry["name"] for entry in container["env"]]
    assert names[-3:] == ["TZ", "DIRECTSTREAM_STALL_TIMEOUT", "TMPDIR"]  # the user's env comes after ours
    assert names[0] == "DIRECTSTREAM_WORK_UNITS_FILE"


@pytest.mark.parametrize(
    "name",
    [
        "DIRECTSTREAM_WORK_UNITS",
        "DIRECTSTREAM_WORK_UNITS_FILE",
        "DIRECTSTREAM_KAFKA_SECRET_0",
        "JOB_COMPLETION_INDEX",
    ],
)
def test_user_env_cannot_override_ours(name: str) -> None:
    executors = ExecutorsSpec(env=({"name": name, "value": "[]"},))
    with pytest.raises(ManifestError, match=rf"spec.executors.env\[0\]: {name} is set by directstream"):
        build(replace(SPEC, executors=executors))


def test_user_env_entries_need_a_name() -> None:
    with pytest.raises(ManifestError, match="needs a name"):
        build(replace(SPEC, executors=ExecutorsSpec(env=({"value": "x"},))))


def test_kafka_secrets_come_from_secret_key_refs_only() -> None:
    password = "s3cr3t-Password"  # what the Secret holds: the builder never sees it
    job = build()
    text = json.dumps(job)
    assert password not in text
    env = container_of(job)["env"]
    refs = {
        entry["name"]: entry["valueFrom"]["secretKeyRef"] for entry in env if "secretKeyRef" in str(entry)
    }
    assert refs == {
        "DIRECTSTREAM_KAFKA_SECRET_0": {"name": "kafka-client", "key": "sasl.password"},
        "DIRECTSTREAM_KAFKA_SECRET_1": {"name": "kafka-client", "key": "sasl.username"},
    }
    assert all("value" not in entry for entry in env if entry["name"] in refs)
    job["metadata"]["uid"] = "job-uid"
    configmap = build_work_units_configmap(make_units(), job=job, digest="d")
    assert password not in json.dumps(configmap)
    unit = json.loads(configmap["data"]["units.json"])[0]
    assert unit["kafka"]["secretEnv"] == {
        "sasl.password": "DIRECTSTREAM_KAFKA_SECRET_0",
        "sasl.username": "DIRECTSTREAM_KAFKA_SECRET_1",
    }


def test_secret_env_mapping_is_independent_of_key_order_and_checked() -> None:
    assert (
        secret_env_for(["b", "a", "a"])
        == secret_env_for(["a", "b"])
        == {
            "a": "DIRECTSTREAM_KAFKA_SECRET_0",
            "b": "DIRECTSTREAM_KAFKA_SECRET_1",
        }
    )
    with pytest.raises(ManifestError, match=r"group\.id.*spec\.groupId"):
        secret_env_for(["sasl.password", "group.id"])
    with pytest.raises(ManifestError, match="invalid keys"):
        secret_env_for(["bad key"])


def test_units_must_carry_the_jobs_secret_mapping() -> None:
    with pytest.raises(ManifestError, match="maps Kafka secrets"):
        build(units=make_units(secret_keys=[]))
    job = build(units=make_units(secret_keys=[]), secret_name=None, secret_keys=[])
    assert "secretKeyRef" not in json.dumps(job)


def test_image_is_required() -> None:
    with pytest.raises(ManifestError, match=r"spec\.executors\.image.*--executor-image"):
        build(image="")


@pytest.mark.parametrize(
    ("units", "match"),
    [
        ([], "at least one"),
        (list(reversed(make_units())), "has index"),
        ([make_units()[0], make_units(attempt=3)[1]], "attempt 3"),
    ],
)
def test_units_must_form_one_attempt(units: list[WorkUnit], match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        build(units=units)


def test_owner_reference_is_complete() -> None:
    with pytest.raises(ManifestError, match="uid"):
        build(owner={**OWNER, "uid": ""})


def test_work_units_size_is_guarded() -> None:
    fits = make_units(4, ranges_each=2500)  # 10,000 partitions: far past the old env-var wall (~2,900)
    build(units=fits)
    too_many = make_units(4, ranges_each=15000)
    with pytest.raises(WorkUnitsTooLarge, match=r"60000 ranges.*partitions read per batch") as caught:
        build(units=too_many)
    assert str(MAX_WORK_UNITS_BYTES) in str(caught.value)


def test_work_units_configmap_is_owned_by_its_job_and_carries_the_attempt() -> None:
    units = make_units()
    job = {**build(units=units)}
    job["metadata"] = {**job["metadata"], "uid": "job-uid-1"}
    configmap = build_work_units_configmap(units, job=job, digest="d-1")
    metadata = configmap["metadata"]
    assert metadata["name"] == "clicks-b7-a2-units"
    assert metadata["namespace"] == "prod"
    assert metadata["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "clicks-b7-a2", "uid": "job-uid-1"}
    ]
    assert metadata["annotations"]["directstream.io/digest"] == "d-1"
    assert metadata["labels"] == job_labels("clicks", 7, 2)
    assert configmap["immutable"] is True
    listed = json.loads(configmap["data"]["units.json"])
    assert [WorkUnit.from_json(doc) for doc in listed] == units
    # The Job mounts exactly this ConfigMap, at the file its env names.
    volume = job["spec"]["template"]["spec"]["volumes"][-1]
    assert volume["configMap"]["name"] == metadata["name"]
    assert len(json.dumps(configmap)) < 1024 * 1024


def test_work_units_configmap_needs_a_created_job() -> None:
    units = make_units()
    with pytest.raises(ManifestError, match="uid"):
        build_work_units_configmap(units, job=build(units=units), digest="d-1")


# -- reading results back --------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


# What the Job controller copies from the template into each pod (it adds JOB_COMPLETION_INDEX).
POD_SPEC: dict[str, Any] = {
    "containers": [{"name": "executor", "image": "executor:1", "command": ["directstream-executor"]}]
}


def job_doc(*conditions: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "clicks-b7-a2",
            "uid": "job-uid",
            "creationTimestamp": iso(0),
            "labels": job_labels("clicks", 7, 2),
        },
        "spec": {"template": {"spec": POD_SPEC}},
        "status": {"conditions": list(conditions)},
    }


def pod_doc(
    index: int,
    *,
    created: float = 1,
    phase: str = "Succeeded",
    state: dict[str, Any] | None = None,
    owner: str = "job-uid",
    **status: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"clicks-b7-a2-{index}-{int(created):05d}",
            "creationTimestamp": iso(created),
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "ownerReferences": [{"kind": "Job", "uid": owner, "controller": True}],
        },
        "spec": POD_SPEC,
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "executor", "state": state or {}}],
            **status,
        },
    }


def ok_result(index: int, records: int = 10) -> ExecutorResult:
    return ExecutorResult(7, 2, index, ok=True, records=records, bytes=records * 3, seconds=0.5)


def terminated(
    index: int, result: ExecutorResult | None = None, *, code: int = 0, **extra: Any
) -> dict[str, Any]:
    message = (result or ok_result(index)).dumps()
    return pod_doc(index, state={"terminated": {"exitCode": code, "message": message, **extra}})


def test_all_succeeded() -> None:
    pods = [terminated(i) for i in range(3)]
    progress = read_job_progress(job_doc(), pods, 3)
    assert progress.finished and progress.ok
    assert list(progress.results) == [ok_result(i) for i in range(3)]
    assert (progress.succeeded, progress.failed, progress.active) == (3, 0, 0)
    assert parse_executor_results(job_doc(), pods, 3) == ([ok_result(i) for i in range(3)], None)


def test_one_failed_with_message() -> None:
    failure = ExecutorResult(
        7, 2, 1, ok=False, records=4, error="sink failed", failed_at=FailedAt("clicks", 1, 104)
    )
    pods = [terminated(0), terminated(1, failure, code=1), pod_doc(2, phase="Running", state={"running": {}})]
    progress = read_job_progress(job_doc(), pods, 3)
    assert progress.finished and not progress.ok
    assert progress.results[1] == failure
    assert "abandoned" in (progress.results[2].error or "")
    assert "index 1: sink failed" in progress.message


def test_garbage_termination_message() -> None:
    pod = pod_doc(
        0,
        phase="Failed",
        state={"terminated": {"exitCode": 1, "reason": "Error", "message": "Traceback\nValueError: boom\n"}},
    )
    (result,), _ = parse_executor_results(job_doc(), [pod], 1)
    assert not result.ok and result.index == 0 and result.batch_id == 7
    assert "exited with code 1 without a result; it printed: Traceback | ValueError: boom" in (
        result.error or ""
    )


def test_empty_termination_message() -> None:
    pod = pod_doc(0, phase="Failed", state={"terminated": {"exitCode": 139, "reason": "Error"}})
    (result,), _ = parse_executor_results(job_doc(), [pod], 1)
    assert "code 139 without a result and left no output" in (result.error or "")


def test_oom_killed() -> None:
    pod = pod_doc(
        0, phase="Failed", state={"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "x"}}
    )
    (result,), _ = parse_executor_results(job_doc(), [pod], 1)
    assert "OOMKilled (exit code 137)" in (result.error or "")
    assert "limits.memory" in (result.error or "")


def test_job_deadline_exceeded() -> None:
    job = job_doc({"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too long"})
    pods = [terminated(0), pod_doc(1, phase="Running", state={"running": {}})]
    progress = read_job_progress(job, pods, 2)
    assert progress.finished and not progress.ok
    assert "DeadlineExceeded" in (progress.results[1].error or "")
    assert progress.message.startswith("the Job failed (DeadlineExceeded): too long: ")
    assert "spec.executors.timeout" in progress.message


def test_pod_deadline_exceeded_and_evicted() -> None:
    pods = [
        pod_doc(0, phase="Failed", reason="DeadlineExceeded", message="Pod was active too long"),
        pod_doc(1, phase="Failed", reason="Evicted", message="The node was low on resource: memory."),
    ]
    progress = read_job_progress(job_doc(), pods, 2)
    errors = [result.error or "" for result in progress.results]
    assert "DeadlineExceeded" in errors[0] and "spec.executors.timeout" in errors[0]
    assert "Evicted" in errors[1] and "low on resource" in errors[1]


def test_pending_too_long() -> None:
    unschedulable = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/1 nodes",
    }
    pods = [terminated(0), pod_doc(1, created=10, phase="Pending", conditions=[unschedulable])]
    early = read_job_progress(
        job_doc(), pods, 2, now=T0 + timedelta(seconds=100), pending_timeout_seconds=120
    )
    assert not early.finished and early.pending == 1
    assert early.pending_since == T0 + timedelta(seconds=10)
    assert "Unschedulable: 0/1 nodes" in early.message
    late = read_job_progress(job_doc(), pods, 2, now=T0 + timedelta(seconds=200), pending_timeout_seconds=120)
    assert late.finished and not late.ok
    error = late.results[1].error or ""
    assert "Pending for 190s" in error and "pendingTimeout (120s)" in error and "0/1 nodes" in error


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "CreateContainerConfigError"])
def test_pods_that_cannot_start_fail_at_once(reason: str) -> None:
    waiting = {"waiting": {"reason": reason, "message": "details here"}}
    pods = [terminated(0), pod_doc(1, phase="Pending", state=waiting)]
    progress = read_job_progress(job_doc(), pods, 2)
    assert progress.finished and not progress.ok
    assert reason in (progress.results[1].error or "") and "details here" in (progress.results[1].error or "")


def test_latest_pod_of_an_index_wins() -> None:
    old = pod_doc(0, created=1, phase="Failed", state={"terminated": {"exitCode": 1, "message": "boom"}})
    new = terminated(0)
    new["metadata"]["creationTimestamp"] = iso(50)
    for pods in ([old, new], [new, old]):
        progress = read_job_progress(job_doc(), pods, 1)
        assert progress.ok and progress.results == (ok_result(0),)


def test_pods_of_another_job_are_ignored() -> None:
    stale = pod_doc(0, phase="Failed", owner="old-job", state={"terminated": {"exitCode": 1}})
    progress = read_job_progress(job_doc(), [stale, terminated(0)], 1)
    assert progress.ok


def test_missing_index() -> None:
    running = read_job_progress(job_doc(), [terminated(0)], 2)
    assert not running.finished and running.pending == 1
    assert running.pending_since == T0  # the Job's creation: no pod was created
    assert parse_executor_results(job_doc(), [terminated(0)], 2)[0] == []
    complete = job_doc({"type": "Complete", "status": "True"})
    results, waiting = parse_executor_results(complete, [terminated(0)], 2)
    assert waiting is None and results[0].ok
    assert "no executor pod reported a result for index 1" in (results[1].error or "")


def test_running_job_is_not_finished() -> None:
    pods = [terminated(0), pod_doc(1, phase="Running", state={"running": {}})]
    progress = read_job_progress(job_doc(), pods, 2)
    assert not progress.finished and progress.results == ()
    assert (progress.active, progress.succeeded, progress.pending) == (1, 1, 0)
    assert progress.message.startswith("1/2 done, 1 running")


def test_results_that_do_not_add_up_are_failures() -> None:
    lying = terminated(0, code=143)
    wrong_index = terminated(1, ok_result(0))
    progress = read_job_progress(job_doc(), [lying, wrong_index], 2)
    assert "reported success but exited with code 143" in (progress.results[0].error or "")
    assert "expected batch 7 attempt 2 index 1" in (progress.results[1].error or "")


def test_bad_input_results_get_the_jobs_ids() -> None:
    bad = ExecutorResult(-1, -1, 0, ok=False, error="invalid work unit")
    (result,), _ = parse_executor_results(job_doc(), [terminated(0, bad, code=2)], 1)
    assert (result.batch_id, result.attempt, result.index, result.error) == (7, 2, 0, "invalid work unit")


# -- the parquet sink's credentials ----------------------------------------------------------------------


def parquet_units(options: dict[str, Any]) -> list[WorkUnit]:
    return [replace(unit, processor=ProcessorSettings("parquet", options)) for unit in make_units(2)]


def test_parquet_credentials_reach_the_pods_by_reference_only() -> None:
    units = parquet_units({"url": "s3://lake/raw", "credentialsSecret": "s3-creds"})
    job = build_executor_job(
        SPEC,
        units,
        namespace="prod",
        owner=OWNER,
        image="img",
        secret_name="kafka-client",
        secret_keys=SECRET_KEYS,
    )
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
        assert env[key]["valueFrom"]["secretKeyRef"]["key"] == key
        assert "value" not in env[key]
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    without = build_executor_job(
        SPEC,
        parquet_units({"url": "s3://lake/raw"}),
        namespace="prod",
        owner=OWNER,
        image="img",
        secret_name="kafka-client",
        secret_keys=SECRET_KEYS,
    )
    names = {e["name"] for e in without["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not any(name.startswith("AWS_") for name in names)


def test_parquet_credentials_and_user_env_may_not_both_set_a_variable() -> None:
    spec = replace(
        SPEC, executors=replace(SPEC.executors, env=({"name": "AWS_SECRET_ACCESS_KEY", "value": "x"},))
    )
    units = parquet_units({"url": "s3://lake/raw", "credentialsSecret": "s3-creds"})
    with pytest.raises(ManifestError, match=r"AWS_SECRET_ACCESS_KEY.*credentialsSecret"):
        build_executor_job(
            spec,
            units,
            namespace="prod",
            owner=OWNER,
            image="img",
            secret_name="kafka-client",
            secret_keys=SECRET_KEYS,
        )
    # Without credentialsSecret the user's own AWS env is how credentials arrive.
    job = build_executor_job(
        spec,
        parquet_units({"url": "s3://lake/raw"}),
        namespace="prod",
        owner=OWNER,
        image="img",
        secret_name="kafka-client",
        secret_keys=SECRET_KEYS,
    )
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "AWS_SECRET_ACCESS_KEY", "value": "x"} in env
