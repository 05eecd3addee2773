"""Pinned and fenced attempts: what a retry, a resume or an adoption runs, and which Jobs and
results count (pure parts, and the driver loop over fakes)."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from typing import Any

import pytest

from directstream.executor.contract import ExecutorResult, OffsetRange
from directstream.operator.core import events as ev
from directstream.operator.core.job_results import foreign_job, read_job_progress
from directstream.operator.core.manifests import ANNOTATION_DIGEST, ANNOTATION_UNITS, job_labels
from directstream.operator.core.pinning import AttemptRun, PinnedAttempt, pin, work_units
from directstream.operator.core.planning import BatchPlan
from directstream.operator.core.spec import StreamSpec, parse_spec
from directstream.operator.core.state import StreamState
from directstream.operator.core.work import executor_kafka_settings
from directstream.operator.driver import DriverSettings, RunMode, run_stream
from directstream.operator.testing import FakeKafka, MemoryHost, MemoryState

T0, T1 = ("t", 0), ("t", 1)
FAST = DriverSettings(retry_backoff_s=(0.1,), failed_retry_s=1.0)


def spec(**fields: Any) -> StreamSpec:
    doc: dict[str, Any] = {
        "kafka": {"bootstrapServers": "fake:9092"},
        "topics": ["t"],
        "processor": {"sink": "jsonl", "options": {"directory": "/out"}},
    }
    doc.update(fields)
    return parse_spec("clicks", doc)


PLAN = BatchPlan(batch_id=4, ranges=(OffsetRange("t", 0, 0, 3000), OffsetRange("t", 1, 100, 600)))


def test_the_pinned_layout_round_trips_and_rebuilds_the_same_units() -> None:
    stream = spec(executors={"max": 3, "maxRecords": 1000})
    pinned = pin(stream, PLAN)
    again = PinnedAttempt.from_json(pinned.to_json())
    assert again == pinned
    kafka = executor_kafka_settings(stream)
    units = work_units("clicks", PLAN, again, 2, kafka)
    assert [sorted(u.ranges) for u in units] == [
        sorted(u.ranges) for u in work_units("clicks", PLAN, pinned, 2, kafka)
    ]
    pieces = sorted(r for u in units for r in u.ranges if r.partition == 0)
    assert [(r.from_offset, r.until_offset) for r in pieces] == [(0, 1000), (1000, 2000), (2000, 3000)]
    assert {u.digest for u in units} == {pinned.digest}


def test_the_digest_moves_with_what_outputs_depend_on_and_not_with_connections() -> None:
    base = pin(spec(), PLAN)
    assert pin(spec(executors={"max": 1}), PLAN).digest != base.digest
    assert (
        pin(spec(processor={"sink": "jsonl", "options": {"directory": "/other"}}), PLAN).digest != base.digest
    )
    assert pin(spec(kafka={"bootstrapServers": "elsewhere:9092"}), PLAN).digest == base.digest
    assert pin(spec(batchInterval="1m", rate={"maxPerPartition": 5}), PLAN).digest == base.digest


def job_doc(digest: str, units: int = 1, owner: str = "stream-uid") -> dict[str, Any]:
    return {
        "metadata": {
            "name": "clicks-b4-a1",
            "uid": "job-uid",
            "labels": job_labels("clicks", 4, 1),
            "annotations": {ANNOTATION_DIGEST: digest, ANNOTATION_UNITS: str(units)},
            "ownerReferences": [{"kind": "DirectStream", "uid": owner, "controller": True}],
        },
        "spec": {"template": {"spec": copy.deepcopy(EXECUTOR_POD)}},
        "status": {},
    }


# The Job template's pod spec, as the API server stores it; the Job controller copies it into
# each pod and adds JOB_COMPLETION_INDEX.
EXECUTOR_POD: dict[str, Any] = {
    "containers": [
        {
            "name": "executor",
            "image": "directstream/executor:1",
            "command": ["directstream-executor"],
            "env": [{"name": "DIRECTSTREAM_SINK", "value": "jsonl"}],
            "volumeMounts": [
                {
                    "name": "directstream-work-units",
                    "mountPath": "/var/run/directstream/units",
                    "readOnly": True,
                },
                {"name": "out", "mountPath": "/data"},
            ],
        }
    ],
    "volumes": [
        {"name": "directstream-work-units", "configMap": {"name": "clicks-b4-a1-units", "defaultMode": 420}},
        {"name": "out", "persistentVolumeClaim": {"claimName": "out"}},
    ],
}


def pod_spec_made_by_the_job() -> dict[str, Any]:
    spec = copy.deepcopy(EXECUTOR_POD)
    spec["containers"][0]["env"].append({"name": "JOB_COMPLETION_INDEX", "value": "0"})
    return spec


def finished_pod(
    result: ExecutorResult, references: list[dict[str, Any]], pod_spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"clicks-b4-a1-{result.index}-x",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(result.index)},
            "ownerReferences": references,
        },
        "spec": pod_spec if pod_spec is not None else pod_spec_made_by_the_job(),
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "executor", "state": {"terminated": {"exitCode": 0, "message": result.dumps()}}}
            ],
        },
    }


def test_a_forged_pod_without_the_job_as_controller_is_not_a_result() -> None:
    forged = finished_pod(ExecutorResult(4, 1, 0, ok=True, records=5, digest="d1"), [])
    progress = read_job_progress(job_doc("d1"), [forged], 1)
    assert not progress.finished and progress.pending == 1
    impostor = finished_pod(
        ExecutorResult(4, 1, 0, ok=True, digest="d1"),
        [{"kind": "Job", "uid": "job-uid", "controller": False}],
    )
    assert not read_job_progress(job_doc("d1"), [impostor], 1).finished
    real = finished_pod(
        ExecutorResult(4, 1, 0, ok=True, digest="d1"), [{"kind": "Job", "uid": "job-uid", "controller": True}]
    )
    assert read_job_progress(job_doc("d1"), [real], 1).ok


JOB_CONTROLS = [{"kind": "Job", "uid": "job-uid", "controller": True, "blockOwnerDeletion": True}]


def forged_spec(change: Any) -> dict[str, Any]:
    spec = pod_spec_made_by_the_job()
    change(spec, spec["containers"][0])
    return spec


FORGERIES = {
    "another image": lambda _, c: c.update(image="attacker/echo:1"),
    "another command": lambda _, c: c.update(command=["python3", "-c", "print('ok')"]),
    "arguments": lambda _, c: c.update(args=["--units", "/tmp/mine.json"]),
    "a changed variable": lambda _, c: c["env"].__setitem__(
        0, {"name": "DIRECTSTREAM_SINK", "value": "count"}
    ),
    "other units": lambda s, _: s["volumes"][0]["configMap"].update(name="mine"),
    "units mounted over": lambda s, c: (
        s["volumes"].append({"name": "mine", "configMap": {"name": "mine"}}),
        c["volumeMounts"].append({"name": "mine", "mountPath": "/var/run/directstream/units/units.json"}),
    ),
    "the sink's volume hidden": lambda s, c: (
        s["volumes"].append({"name": "scratch", "emptyDir": {}}),
        c["volumeMounts"].append({"name": "scratch", "mountPath": "/data/out"}),
    ),
    "no executor": lambda s, c: c.update(name="sidecar"),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_pod_claiming_the_job_as_controller_counts_only_if_it_runs_the_jobs_executor(forgery: str) -> None:
    forged = finished_pod(
        ExecutorResult(4, 1, 0, ok=True, records=5, digest="d1"),
        JOB_CONTROLS,
        forged_spec(FORGERIES[forgery]),
    )
    progress = read_job_progress(job_doc("d1"), [forged], 1)
    assert not progress.finished and progress.pending == 1
    assert len(progress.ignored) == 1 and forged["metadata"]["name"] in progress.ignored[0]


def test_what_admission_adds_to_the_jobs_pods_does_not_make_them_forgeries() -> None:
    def webhooks(spec: dict[str, Any], container: dict[str, Any]) -> None:
        spec["hostNetwork"] = True
        spec["volumes"].append({"name": "aws-token", "projected": {"sources": []}})
        container["env"].append({"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::1:role/x"})
        container["volumeMounts"].append({"name": "aws-token", "mountPath": "/var/run/secrets/aws"})
        container["resources"] = {"limits": {"cpu": "1"}}

    real = finished_pod(ExecutorResult(4, 1, 0, ok=True, digest="d1"), JOB_CONTROLS, forged_spec(webhooks))
    progress = read_job_progress(job_doc("d1"), [real], 1)
    assert progress.ok and progress.ignored == ()


def test_a_result_of_another_pinned_attempt_fails_the_attempt() -> None:
    pod = finished_pod(
        ExecutorResult(4, 1, 0, ok=True, digest="old"),
        [{"kind": "Job", "uid": "job-uid", "controller": True}],
    )
    progress = read_job_progress(job_doc("new"), [pod], 1)
    assert progress.finished and not progress.ok
    assert "digest 'old', expected 'new'" in (progress.results[0].error or "")


def test_an_existing_job_is_adopted_only_when_it_is_the_same_attempt() -> None:
    pinned = pin(spec(), PLAN)
    attempt = AttemptRun(
        work_units("clicks", PLAN, pinned, 1, executor_kafka_settings(spec())),
        pinned.executors,
        pinned.digest,
    )
    assert len(attempt.units) == 2
    assert foreign_job(job_doc(pinned.digest, units=2), "stream-uid", attempt) is None
    assert "not by this stream" in (
        foreign_job(job_doc(pinned.digest, units=2, owner="old-uid"), "stream-uid", attempt) or ""
    )
    assert "digest" in (foreign_job(job_doc("other", units=2), "stream-uid", attempt) or "")
    assert "units" in (foreign_job(job_doc(pinned.digest, units=3), "stream-uid", attempt) or "")


# -- through the driver loop ----------------------------------------------------------------------


def run(host: MemoryHost, mode: RunMode = RunMode.UNTIL_CAUGHT_UP) -> Any:
    host.mode = mode
    return asyncio.run(run_stream(host, mode, host.settings, clock=host.clock))


def test_a_spec_edit_while_a_batch_is_pending_applies_from_the_next_batch() -> None:
    kafka = FakeKafka({T0: 3000, T1: 600})
    planned = spec(executors={"max": 3, "maxRecords": 1000})
    first = MemoryHost(planned, kafka=kafka, settings=FAST)
    first.launcher.fail_attempts(99)  # the driver "dies" with the batch recorded: maxAttempts fail
    run(first)
    recorded = first.store.state
    assert recorded.pending is not None
    layout = [sorted(u.ranges) for u in first.launcher.launches[0].units]
    edited = replace(
        planned,
        executors=replace(planned.executors, max=1, max_records=0),
        processor=replace(planned.processor, options={"directory": "/elsewhere"}),
        max_attempts=9,
    )
    kafka.produce(T0, 10)
    second = MemoryHost(edited, kafka=kafka, state=MemoryState(recorded), settings=FAST)
    assert run(second).ok
    resumed = second.launcher.launches[0]
    assert [sorted(u.ranges) for u in resumed.units] == layout, "the recorded split, not the edited one"
    assert {u.processor.options["directory"] for u in resumed.units} == {"/out"}
    assert len(second.of_type(ev.SpecChangeDeferred)) == 1
    after = second.launcher.launches[-1]
    assert after.units[0].batch_id == recorded.pending.plan.batch_id + 1
    assert len(after.units) == 1 and after.units[0].processor.options["directory"] == "/elsewhere"


def test_max_attempts_is_a_persisted_cap_renewed_only_by_a_spec_change() -> None:
    kafka = FakeKafka({T0: 10})
    stream = spec(maxAttempts=2)
    host = MemoryHost(stream, kafka=kafka, settings=FAST)
    host.launcher.fail_attempts(99)
    assert run(host).reason == "batch-failed"
    assert len(host.launcher.launches) == 2
    restarted = MemoryHost(stream, kafka=kafka, state=MemoryState(host.store.state), settings=FAST)
    restarted.launcher.fail_attempts(99)
    assert run(restarted).reason == "batch-failed"
    assert restarted.launcher.launches == [], "a restart does not start the count again"
    operator = MemoryHost(
        stream, kafka=kafka, state=MemoryState(host.store.state), settings=FAST, policy="cluster", max_turns=4
    )
    run(operator, RunMode.FOREVER)
    assert operator.launcher.launches == [], "the operator does not rerun a failed batch on a timer"
    changed = MemoryHost(
        replace(stream, max_attempts=3), kafka=kafka, state=MemoryState(host.store.state), settings=FAST
    )
    assert run(changed).ok
    assert [launch.units[0].attempt for launch in changed.launcher.launches] == [3], "attempt numbers go on"


def test_the_attempts_resources_are_released_only_after_the_commit_is_stored() -> None:
    kafka = FakeKafka({T0: 10})
    host = MemoryHost(spec(), kafka=kafka, settings=FAST)
    run(host)
    assert [(batch, state.committed) for batch, state in host.launcher.released] == [(1, {T0: 10})]
    assert all(state.pending is None for _, state in host.launcher.released)


def test_a_plan_recorded_without_pinned_settings_is_pinned_before_it_runs() -> None:
    kafka = FakeKafka({T0: 10})
    plan = BatchPlan(batch_id=1, ranges=(OffsetRange("t", 0, 0, 10),))
    legacy = StreamState(next_batch_id=1).with_plan(plan, 0.0)
    assert legacy.pending is not None and legacy.pending.pinned is None
    host = MemoryHost(spec(), kafka=kafka, state=MemoryState(legacy), settings=FAST)
    assert run(host).ok
    assert host.launcher.launches[0].recorded.pending is not None
    assert host.launcher.launches[0].recorded.pending.pinned is not None
