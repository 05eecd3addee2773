"""Reading one attempt's Job back: per completion index, the executor's result (pure).

Input is what the API returns (camelCase dicts): the Job and its pods. Each executor reports
an ``ExecutorResult`` through its termination message; a pod that died without one (OOM,
eviction, deadline, an image that cannot be pulled, garbage in the message) gets a failed
result that says how it died, so the driver can retry the attempt with a useful reason.

The attempt is finished when the Job says so (``Complete`` / ``Failed``), when every index has
a result, as soon as one index has failed (with ``backoffLimit: 0`` the attempt is lost; waiting
for the rest only delays the retry; the caller deletes the Job before the next attempt), or when
a pod has been Pending longer than ``spec.executors.pendingTimeout``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from directstream.executor.contract import ContractError, ExecutorResult

from .manifests import (
    ANNOTATION_DIGEST,
    ANNOTATION_UNITS,
    COMPLETION_INDEX_ANNOTATION,
    EXECUTOR_CONTAINER,
    LABEL_ATTEMPT,
    LABEL_BATCH,
)
from .pinning import AttemptRun
from .pod_identity import why_not_from_job

__all__ = ["JobProgress", "foreign_job", "parse_executor_results", "read_job_progress"]

# Waiting reasons a pod does not recover from by waiting (the image or its config is wrong).
FATAL_WAITING_REASONS = {
    "ImagePullBackOff": "check spec.executors.image and the image pull access",
    "InvalidImageName": "check spec.executors.image",
    "ErrImageNeverPull": "check spec.executors.image (imagePullPolicy Never and the image is absent)",
    "CreateContainerConfigError": "a referenced Secret or ConfigMap (key) is probably missing: check "
    "spec.kafka.configFrom.secretRef and spec.executors.env",
    "CreateContainerError": "the container could not be created",
}
# Ways to die without writing a result, with what to change.
KILLED_REASONS = {
    "OOMKilled": "raise spec.executors.resources.limits.memory or read fewer records per executor",
    "DeadlineExceeded": "raise spec.executors.timeout or plan smaller batches",
    "Evicted": "the node ran short of resources; set spec.executors.resources.requests",
    "ContainerCannotRun": "the container could not start",
    "StartError": "the container could not start",
}
JOB_FAILURE_HINTS = {
    "DeadlineExceeded": "the attempt ran longer than spec.executors.timeout",
    "BackoffLimitExceeded": "an executor pod failed",
}
OUTPUT_EXCERPT_CHARS = 1000


@dataclass(frozen=True, slots=True)
class JobProgress:
    """Where one attempt's Job stands. ``results`` has one entry per index once ``finished``."""

    finished: bool
    results: tuple[ExecutorResult, ...]
    active: int  # running executors
    succeeded: int
    failed: int
    pending: int  # pods not running yet (or not created yet)
    pending_since: datetime | None  # creation of the oldest pending pod (the Job for a missing pod)
    message: str
    ignored: tuple[str, ...] = ()  # pods that claim an index but are not the Job's, and why

    @property
    def ok(self) -> bool:
        return self.finished and bool(self.results) and all(result.ok for result in self.results)


@dataclass(frozen=True, slots=True)
class _IndexState:
    kind: Literal["done", "running", "pending"]
    result: ExecutorResult | None = None
    since: datetime | None = None  # pending only
    detail: str = ""  # pending only: why


def parse_time(text: object) -> datetime | None:
    """An API timestamp (``2026-01-01T00:00:00Z``) as an aware datetime; ``None`` if absent or bad."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _int_label(job: Mapping[str, Any], key: str) -> int:
    value = ((job.get("metadata") or {}).get("labels") or {}).get(key)
    return int(value) if isinstance(value, str) and value.isdigit() else -1


def _pod_index(pod: Mapping[str, Any]) -> int | None:
    metadata = pod.get("metadata") or {}
    for source in (metadata.get("annotations") or {}, metadata.get("labels") or {}):
        value = source.get(COMPLETION_INDEX_ANNOTATION)
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _latest_pods(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], expected: int
) -> tuple[dict[int, Any], tuple[str, ...]]:
    """The newest pod of each index the Job made (a replaced pod's successor is what counts),
    and why each other pod that claims an index of the Job was ignored."""
    latest: dict[int, Mapping[str, Any]] = {}
    ignored: list[str] = []

    def age_key(pod: Mapping[str, Any]) -> tuple[datetime, str]:
        metadata = pod.get("metadata") or {}
        created = parse_time(metadata.get("creationTimestamp")) or datetime.min.replace(tzinfo=UTC)
        return created, str(metadata.get("name", ""))

    for pod in pods:
        index = _pod_index(pod)
        if index is None or not 0 <= index < expected:
            continue
        why_not = why_not_from_job(pod, job)
        if why_not is not None:
            name = (pod.get("metadata") or {}).get("name", "?")
            ignored.append(f"pod {name} (index {index}): {why_not}")
            continue
        if index not in latest or age_key(pod) > age_key(latest[index]):
            latest[index] = pod
    return latest, tuple(ignored)


def _executor_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == EXECUTOR_CONTAINER:
            return dict(status)
    return {}


def _excerpt(text: str) -> str:
    """The end of what a pod printed (its last lines matter most), on one line."""
    flat = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return flat if len(flat) <= OUTPUT_EXCERPT_CHARS else "…" + flat[-OUTPUT_EXCERPT_CHARS:]


def _failed(batch_id: int, attempt: int, index: int, error: str) -> ExecutorResult:
    return ExecutorResult(batch_id, attempt, index, ok=False, error=error)


def _result_from_terminated(
    terminated: Mapping[str, Any], pod_name: str, batch_id: int, attempt: int, index: int
) -> ExecutorResult:
    code = terminated.get("exitCode")
    reason = str(terminated.get("reason") or "")
    message = str(terminated.get("message") or "")
    if reason in KILLED_REASONS:
        return _failed(
            batch_id,
            attempt,
            index,
            f"executor pod {pod_name} was {reason} (exit code {code}): {KILLED_REASONS[reason]}",
        )
    try:
        reported = ExecutorResult.loads(message.strip())
    except ContractError:
        said = f"; it printed: {_excerpt(message)}" if message.strip() else " and left no output"
        why = f" ({reason})" if reason and reason not in {"Error", "Completed"} else ""
        return _failed(
            batch_id,
            attempt,
            index,
            f"executor pod {pod_name} exited with code {code}{why} without a result{said}",
        )
    if not reported.ok:
        # Bad-input results may not know the batch; the index is ours.
        return replace(reported, batch_id=batch_id, attempt=attempt, index=index)
    if (reported.batch_id, reported.attempt, reported.index) != (batch_id, attempt, index):
        return _failed(
            batch_id,
            attempt,
            index,
            f"executor pod {pod_name} reported batch {reported.batch_id} attempt {reported.attempt} "
            f"index {reported.index}, expected batch {batch_id} attempt {attempt} index {index}",
        )
    if code != 0:
        return _failed(
            batch_id, attempt, index, f"executor pod {pod_name} reported success but exited with code {code}"
        )
    return reported


def _scheduling_detail(pod: Mapping[str, Any], waiting: Mapping[str, Any]) -> str:
    if waiting.get("reason"):
        return f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason', 'Unschedulable')}: {condition.get('message', '')}".rstrip(": ")
    return ""


def _index_state(
    pod: Mapping[str, Any] | None, job_created: datetime | None, batch_id: int, attempt: int, index: int
) -> _IndexState:
    if pod is None:
        return _IndexState("pending", since=job_created, detail="no pod created yet (check the Job's events)")
    name = str((pod.get("metadata") or {}).get("name", f"for index {index}"))
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    state = _executor_status(pod).get("state") or {}
    if state.get("terminated"):
        return _IndexState(
            "done", _result_from_terminated(state["terminated"], name, batch_id, attempt, index)
        )
    if phase in {"Failed", "Succeeded"}:
        reason = str(status.get("reason") or phase)
        hint = KILLED_REASONS.get(reason, "")
        said = ": ".join(part for part in (status.get("message"), hint) if part)
        return _IndexState(
            "done",
            _failed(batch_id, attempt, index, f"executor pod {name} {reason} without a result: {said}"),
        )
    waiting = state.get("waiting") or {}
    reason = str(waiting.get("reason") or "")
    if reason in FATAL_WAITING_REASONS:
        said = f"{waiting.get('message', '')} ({FATAL_WAITING_REASONS[reason]})".strip()
        return _IndexState("done", _failed(batch_id, attempt, index, f"executor pod {name} {reason}: {said}"))
    if phase == "Running" or state.get("running"):
        return _IndexState("running")
    created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    return _IndexState("pending", since=created, detail=_scheduling_detail(pod, waiting))


def _same_digest(state: _IndexState, digest: str, batch_id: int, attempt: int, index: int) -> _IndexState:
    """A success counts only for the pinned attempt the Job runs (its digest)."""
    result = state.result
    if result is None or not result.ok or result.digest == digest:
        return state
    message = (
        f"executor {index} reported the results of attempt digest {result.digest!r}, expected {digest!r}"
    )
    return _IndexState("done", _failed(batch_id, attempt, index, message))


def foreign_job(job: Mapping[str, Any], owner_uid: str, attempt: AttemptRun) -> str | None:
    """Why an existing Job of an attempt's name is not that attempt (None when it is)."""
    metadata = job.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    owners = [ref.get("uid") for ref in metadata.get("ownerReferences") or [] if ref.get("controller")]
    if owner_uid not in owners:
        return f"owned by {owners or 'nobody'}, not by this stream ({owner_uid})"
    if annotations.get(ANNOTATION_DIGEST) != attempt.digest:
        return f"attempt digest {annotations.get(ANNOTATION_DIGEST)!r}, expected {attempt.digest!r}"
    if annotations.get(ANNOTATION_UNITS) != str(len(attempt.units)):
        return f"{annotations.get(ANNOTATION_UNITS)} units, expected {len(attempt.units)}"
    return None


def _job_condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def _job_failure_text(condition: Mapping[str, Any]) -> str:
    reason = str(condition.get("reason") or "Failed")
    parts = [
        f"the Job failed ({reason})",
        str(condition.get("message") or ""),
        JOB_FAILURE_HINTS.get(reason, ""),
    ]
    return ": ".join(part for part in parts if part)


def read_job_progress(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    expected: int,
    *,
    now: datetime | None = None,
    pending_timeout_seconds: float | None = None,
) -> JobProgress:
    """Where the Job of one attempt with ``expected`` work units stands.

    With ``now`` and ``pending_timeout_seconds``, an index Pending for longer than the timeout
    finishes the attempt with a failed result naming why (unschedulable, quota, ...).
    """
    batch_id, attempt = _int_label(job, LABEL_BATCH), _int_label(job, LABEL_ATTEMPT)
    job_created = parse_time((job.get("metadata") or {}).get("creationTimestamp"))
    latest, ignored = _latest_pods(job, pods, expected)
    digest = str(((job.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_DIGEST, ""))
    states = [
        _same_digest(
            _index_state(latest.get(i), job_created, batch_id, attempt, i), digest, batch_id, attempt, i
        )
        for i in range(expected)
    ]
    done = [s.result for s in states if s.result is not None]
    failures = [(i, s.result) for i, s in enumerate(states) if s.result is not None and not s.result.ok]
    pending_times = [s.since for s in states if s.kind == "pending" and s.since is not None]
    pending_since = min(pending_times) if pending_times else None

    if now is not None and now.tzinfo is None:
        now = now.replace(tzinfo=UTC)

    def overdue(state: _IndexState) -> float | None:
        if now is None or pending_timeout_seconds is None or state.kind != "pending" or state.since is None:
            return None
        waited = (now - state.since).total_seconds()
        return waited if waited > pending_timeout_seconds else None

    job_failed, job_complete = _job_condition(job, "Failed"), _job_condition(job, "Complete")
    timed_out = any(overdue(s) is not None for s in states)
    finished = bool(job_failed or job_complete or failures or timed_out or len(done) == expected)
    counts = {kind: sum(1 for s in states if s.kind == kind) for kind in ("running", "pending")}
    succeeded = sum(1 for result in done if result.ok)

    if not finished:
        waiting = [f"index {i}: {s.detail}" for i, s in enumerate(states) if s.kind == "pending" and s.detail]
        message = f"{succeeded}/{expected} done, {counts['running']} running, {counts['pending']} pending"
        return JobProgress(
            False,
            (),
            counts["running"],
            succeeded,
            0,
            counts["pending"],
            pending_since,
            "; ".join([message, *waiting[:3]]),
            ignored,
        )

    results: list[ExecutorResult] = []
    abandoned: set[int] = set()  # stopped only because another index failed
    for index, state in enumerate(states):
        if state.result is not None:
            results.append(state.result)
            continue
        waited = overdue(state)
        if waited is not None:
            why = f": {state.detail}" if state.detail else ""
            error = (
                f"executor pod for index {index} was Pending for {waited:.0f}s, longer than "
                f"spec.executors.pendingTimeout ({pending_timeout_seconds:g}s){why}"
            )
        elif job_failed is not None:
            error = f"index {index} did not finish: {_job_failure_text(job_failed)}"
        elif job_complete is not None:
            error = f"the Job completed but no executor pod reported a result for index {index}"
        else:
            culprit = (
                failures[0][0]
                if failures
                else next(i for i, s in enumerate(states) if overdue(s) is not None)
            )
            error = f"index {index} abandoned: the attempt failed at index {culprit}"
            abandoned.add(index)
        results.append(_failed(batch_id, attempt, index, error))

    failed = [(i, r) for i, r in enumerate(results) if not r.ok]
    if not failed:
        message = f"{expected} executor(s) succeeded"
    else:
        first_index, first = next(((i, r) for i, r in failed if i not in abandoned), failed[0])
        message = f"{len(failed)}/{expected} executor(s) failed; index {first_index}: {first.error}"
        if job_failed is not None and job_failed.get("reason") == "DeadlineExceeded":
            message = f"{_job_failure_text(job_failed)}; {message}"
    return JobProgress(
        True,
        tuple(results),
        counts["running"],
        expected - len(failed),
        len(failed),
        counts["pending"],
        pending_since,
        message,
        ignored,
    )


def parse_executor_results(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], expected: int
) -> tuple[list[ExecutorResult], str | None]:
    """``(one result per index, None)`` once the Job is finished; ``([], what it waits for)`` before.

    Pending timeouts need a clock: use ``read_job_progress`` for them.
    """
    progress = read_job_progress(job, pods, expected)
    if not progress.finished:
        return [], progress.message
    return list(progress.results), None
