"""Pinned and fenced attempts: what a retry, a resume or an adoption runs, and which Jobs and
results count (pure parts, and the driver loop over fakes)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

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
        "status": {},
    }


def finished_pod(result: ExecutorResult, references: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"clicks-b4-a1-{result.index}-x",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(result.index)},
            "ownerReferences": references,
        },
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
