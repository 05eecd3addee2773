"""The DirectStream's status, following Kubernetes conventions (pure).

- ``set_condition``: Ready / Progressing / Degraded with reason, message, observedGeneration and a
  ``lastTransitionTime`` that moves only when the condition's status changes.
- ``build_status`` / ``state_from_status``: the stream state in the resource's status and back.
- what a driver event does to conditions and phase: :mod:`.status_fold`.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from .errors import StateUnreadable
from .job_results import JobProgress
from .planning import TopicPartition
from .state import LEGACY_STATE_VERSION, STATE_VERSION, StreamState

__all__ = [
    "CONDITION_TYPES",
    "LAG_PARTITIONS_LIMIT",
    "PHASES",
    "Phase",
    "bounded",
    "build_status",
    "describe_state_change",
    "durable_state",
    "format_time",
    "get_condition",
    "lag_of",
    "lag_summary",
    "set_condition",
    "state_from_status",
]

Phase = Literal["Pending", "Running", "Suspended", "Completed", "Failed"]
PHASES: tuple[Phase, ...] = ("Pending", "Running", "Suspended", "Completed", "Failed")
CONDITION_TYPES = ("Ready", "Progressing", "Degraded")
CONDITION_STATUSES = ("True", "False", "Unknown")
LAG_PARTITIONS_LIMIT = 100
# Kubernetes Event messages are cut at 1 KiB; conditions use the same bound to stay readable.
MESSAGE_LIMIT = 1024
# The status keys that hold the stream's durable state (StreamState.to_json).
STATE_KEYS = (
    "version",
    "committedOffsets",
    "committed",  # state version 1
    "pending",
    "nextBatchId",
    "history",
    "rate",
    "recordsTotal",
    "skippedTotal",
    "deadLetteredTotal",
    "appliedReset",
    "topics",
    "scale",
)
_REASON = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")  # metav1.Condition's reason


def format_time(moment: datetime) -> str:
    """An API timestamp: RFC 3339 in UTC, whole seconds (``2026-01-01T00:00:00Z``)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bounded(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"


def get_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> dict[str, Any] | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return dict(condition)
    return None


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: str | bool,
    reason: str,
    message: str,
    *,
    generation: int,
    now_iso: str,
) -> list[dict[str, Any]]:
    """``conditions`` with ``type_`` set (a new list; the others are kept as they are, in order).

    ``lastTransitionTime`` is ``now_iso`` only when the status changes (or the condition is new).
    """
    if type_ not in CONDITION_TYPES:
        raise ValueError(f"unknown condition type {type_!r}; expected one of {', '.join(CONDITION_TYPES)}")
    status_text = ("True" if status else "False") if isinstance(status, bool) else status
    if status_text not in CONDITION_STATUSES:
        raise ValueError(f"condition status must be True, False or Unknown, got {status!r}")
    if not _REASON.fullmatch(reason):
        raise ValueError(f"condition reason must be CamelCase, got {reason!r}")
    updated = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": bounded(message),
        "lastTransitionTime": now_iso,
        "observedGeneration": generation,
    }
    result: list[dict[str, Any]] = []
    replaced = False
    for condition in conditions:
        if condition.get("type") != type_:
            result.append(dict(condition))
        elif not replaced:  # a duplicate of the type (hand-edited status) is dropped
            if condition.get("status") == status_text and condition.get("lastTransitionTime"):
                updated["lastTransitionTime"] = condition["lastTransitionTime"]
            result.append(updated)
            replaced = True
    if not replaced:
        result.append(updated)
    return result


def lag_of(
    committed: Mapping[TopicPartition, int], latest: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """The one definition of lag: records from the committed offset to the latest, per partition.

    A partition with nothing committed yet counts as no lag: the stream has not claimed it (it
    starts where ``startingOffsets`` says when the first batch plans it).
    """
    return {tp: max(0, end - committed.get(tp, end)) for tp, end in latest.items()}


def lag_summary(
    committed: Mapping[TopicPartition, int],
    latest: Mapping[TopicPartition, int],
    now_iso: str,
    limit: int = LAG_PARTITIONS_LIMIT,
) -> dict[str, Any]:
    """``{total, partitions, updatedAt}``: the total lag and the ``limit`` largest per-partition lags
    (see :func:`lag_of`); the list is bounded so status stays small with thousands of partitions.
    """
    behind = [(lag, tp) for tp, lag in lag_of(committed, latest).items() if lag > 0]
    top = heapq.nsmallest(limit, behind, key=lambda item: (-item[0], item[1]))
    return {
        "total": sum(lag for lag, _ in behind),
        "partitions": [{"topic": tp[0], "partition": tp[1], "lag": lag} for lag, tp in top],
        "updatedAt": now_iso,
    }


def _last_committed_batch(state: StreamState) -> int:
    if state.ledger:
        return state.ledger[-1].batch_id
    if state.pending is not None:
        return state.pending.plan.batch_id - 1
    return state.next_batch_id - 1


def build_status(
    state: StreamState,
    *,
    generation: int,
    phase: str,
    conditions: Sequence[Mapping[str, Any]],
    latest: Mapping[TopicPartition, int] | None,
    job_name: str | None,
    now_iso: str,
    executors: JobProgress | None = None,
) -> dict[str, Any]:
    """The whole ``status`` of a DirectStream.

    The status is written whole, so everything it should keep comes in here. ``latest`` (offsets
    per partition) gives ``lag``; ``job_name`` is recorded as ``pending.job`` while a batch is
    pending; ``executors`` adds the running Job's counts.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
    status = state.to_json()
    if job_name is not None and status.get("pending") is not None:
        status["pending"]["job"] = job_name
    status["observedGeneration"] = generation
    status["phase"] = phase
    status["conditions"] = [dict(condition) for condition in conditions]
    status["batch"] = _last_committed_batch(state)
    if latest is not None:
        status["lag"] = lag_summary(state.committed, latest, now_iso)
    if executors is not None:
        status["executors"] = {
            "active": executors.active + executors.pending,
            "succeeded": executors.succeeded,
            "failed": executors.failed,
        }
    return status


def state_from_status(status: Mapping[str, Any] | None) -> StreamState:
    """The stream state kept in ``status`` (the inverse of ``build_status``); a new stream's
    state when the status holds none. Raises ``ValueError`` for a status of another version."""
    if not status:
        return StreamState()
    doc = {key: status[key] for key in STATE_KEYS if status.get(key) is not None}
    if not doc:
        return StreamState()
    doc.setdefault("version", _version_by_shape(doc))
    try:
        return StreamState.from_json(doc)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        field = _malformed_field(doc)
        raise StateUnreadable(
            f"status.{field} is malformed ({type(exc).__name__}: {exc}): the stream moves no offsets "
            f"until it is fixed (kubectl edit --subresource=status, or remove status.{field})",
            field,
        ) from exc


def _version_by_shape(doc: Mapping[str, Any]) -> int:
    """A status without ``version`` (edited by hand): the version its offsets are written in."""
    return LEGACY_STATE_VERSION if "committed" in doc and "committedOffsets" not in doc else STATE_VERSION


def _malformed_field(doc: Mapping[str, Any]) -> str:
    """The first state key that cannot be read on its own (``pending`` with the committed offsets)."""
    for key in STATE_KEYS:
        if key not in doc or key == "version":
            continue
        probe = {"version": doc["version"], key: doc[key]}
        for offsets in ("committedOffsets", "committed"):
            if key == "pending" and offsets in doc:
                probe[offsets] = doc[offsets]
        try:
            StreamState.from_json(probe)
        except Exception:
            return key
    return "version"


def durable_state(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """The part of a status that moves only when a driver commits, records a plan or retries it:
    the stream state (committed offsets, the recorded plan and its attempt, batch ids, history,
    rate), normalised through ``StreamState`` so that the API server's rendering of numbers does
    not matter. Conditions, phase, lag and ``pending.job`` are not part of it."""
    try:
        return state_from_status(status).to_json()
    except ValueError as exc:
        return {"malformed": str(exc)}


def describe_state_change(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """What differs between two ``durable_state`` documents, for a person."""

    def plan(doc: Mapping[str, Any]) -> str:
        pending = doc.get("pending")
        if not isinstance(pending, Mapping):
            return "none"
        return f"batch {pending.get('batch')} attempt {pending.get('attempt')}"

    parts = []
    if before.get("committedOffsets") != after.get("committedOffsets"):
        parts.append("the committed offsets")
    if before.get("pending") != after.get("pending"):
        parts.append(f"the recorded plan ({plan(before)} -> {plan(after)})")
    parts += sorted(
        key
        for key in set(before) | set(after)
        if key not in ("committedOffsets", "pending") and before.get(key) != after.get(key)
    )
    return ", ".join(parts) or "nothing"
