"""The DirectStream's status, following Kubernetes conventions (pure).

- ``set_condition``: Ready / Progressing / Degraded with reason, message, observedGeneration and a
  ``lastTransitionTime`` that moves only when the condition's status changes.
- ``build_status`` / ``state_from_status``: the stream state in the resource's status and back.
- ``outcome_for_event``: what a driver event means for the conditions, the phase and the
  Kubernetes Event to record. Driver events arrive as plain strings (kind, message, warning):
  the core does not import the driver's ports.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from .job_results import JobProgress
from .planning import TopicPartition
from .state import STATE_VERSION, StreamState

__all__ = [
    "CONDITION_TYPES",
    "KNOWN_EVENT_KINDS",
    "LAG_PARTITIONS_LIMIT",
    "PHASES",
    "ConditionUpdate",
    "EventOutcome",
    "apply_outcome",
    "build_status",
    "format_time",
    "get_condition",
    "lag_summary",
    "outcome_for_event",
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
    "committed",
    "pending",
    "nextBatchId",
    "history",
    "rate",
    "recordsTotal",
    "appliedReset",
)
_REASON = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")  # metav1.Condition's reason


def format_time(moment: datetime) -> str:
    """An API timestamp: RFC 3339 in UTC, whole seconds (``2026-01-01T00:00:00Z``)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bounded(message: str) -> str:
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
        "message": _bounded(message),
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


def lag_summary(
    committed: Mapping[TopicPartition, int],
    latest: Mapping[TopicPartition, int],
    now_iso: str,
    limit: int = LAG_PARTITIONS_LIMIT,
) -> dict[str, Any]:
    """``{total, partitions, updatedAt}``: the total lag and the ``limit`` largest per-partition lags.

    A partition with nothing committed yet counts as no lag (as the driver counts it); the list is
    bounded so status stays small with thousands of partitions.
    """
    lags = [(end - committed.get(tp, end), tp) for tp, end in latest.items()]
    behind = [(lag, tp) for lag, tp in lags if lag > 0]
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
    applied_reset: str | None,
    now_iso: str,
    executors: JobProgress | None = None,
) -> dict[str, Any]:
    """The whole ``status`` of a DirectStream.

    ``latest`` (offsets per partition) refreshes ``lag``; without it ``lag`` is left out, so a merge
    patch keeps the previous value. ``job_name`` is recorded as ``pending.job`` while a batch is
    pending; ``applied_reset`` overrides the state's own. ``executors`` adds the running Job's counts.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
    status = state.to_json()
    if applied_reset is not None:
        status["appliedReset"] = applied_reset
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
    doc.setdefault("version", STATE_VERSION)
    try:
        return StreamState.from_json(doc)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"the status holds a malformed stream state: {exc!r}") from exc


# -- driver events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConditionUpdate:
    type: str
    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What one driver event changes. ``emit_event`` is False for per-batch routine (planned,
    committed, idle...): one Kubernetes Event per batch every few seconds would only flood etcd;
    those show in conditions, status and metrics instead."""

    reason: str
    event_type: Literal["Normal", "Warning"]
    message: str
    conditions: tuple[ConditionUpdate, ...]
    phase: Phase | None  # None = unchanged
    emit_event: bool


def _updates(*triples: tuple[str, str, str]) -> tuple[ConditionUpdate, ...]:
    return tuple(ConditionUpdate(type_, status, reason) for type_, status, reason in triples)


def _healthy(reason: str, progressing: str = "True") -> tuple[ConditionUpdate, ...]:
    return _updates(
        ("Ready", "True", reason), ("Progressing", progressing, reason), ("Degraded", "False", reason)
    )


# kind -> (reason, Warning?, condition updates, phase, emit a Kubernetes Event?)
_EVENTS: dict[str, tuple[str, bool, tuple[ConditionUpdate, ...], Phase | None, bool]] = {
    "started": ("Started", False, _updates(("Progressing", "True", "Started")), "Running", True),
    "resumed": ("BatchResumed", False, _updates(("Progressing", "True", "BatchResumed")), "Running", True),
    "planned": ("BatchPlanned", False, _updates(("Progressing", "True", "BatchPlanned")), "Running", False),
    "launched": (
        "ExecutorsLaunched",
        False,
        _updates(("Progressing", "True", "ExecutorsLaunched")),
        "Running",
        False,
    ),
    "retrying": (
        "BatchRetrying",
        True,
        _updates(("Progressing", "True", "BatchRetrying"), ("Degraded", "True", "BatchRetrying")),
        "Running",
        True,
    ),
    "committed": ("BatchCommitted", False, _healthy("BatchCommitted"), "Running", False),
    "positions": ("PositionsCommitted", False, _healthy("PositionsCommitted"), "Running", False),
    "idle": ("NoNewRecords", False, _healthy("NoNewRecords", progressing="False"), "Running", False),
    "data-loss": ("DataLoss", True, _updates(("Degraded", "True", "DataLoss")), None, True),
    "failed": (
        "BatchFailed",
        True,
        _updates(("Ready", "False", "BatchFailed"), ("Progressing", "False", "BatchFailed"))
        + _updates(("Degraded", "True", "BatchFailed")),
        "Failed",
        True,
    ),
    "caught-up": ("CaughtUp", False, _healthy("CaughtUp", progressing="False"), "Completed", True),
    "drift": ("OffsetsDrift", True, _updates(("Degraded", "True", "OffsetsDrift")), None, True),
    "kafka-unavailable": (
        "KafkaUnavailable",
        True,
        _updates(("Ready", "False", "KafkaUnavailable"), ("Degraded", "True", "KafkaUnavailable")),
        None,
        True,
    ),
    "kube-api-error": (
        "KubernetesApiError",
        True,
        _updates(("Ready", "False", "KubernetesApiError"), ("Degraded", "True", "KubernetesApiError")),
        None,
        True,
    ),
    "store-unavailable": (
        "OffsetStoreUnavailable",
        True,
        _updates(
            ("Ready", "False", "OffsetStoreUnavailable"), ("Degraded", "True", "OffsetStoreUnavailable")
        ),
        None,
        True,
    ),
    "stopped": ("Stopped", False, _updates(("Progressing", "False", "Stopped")), None, True),
    "rewound": ("Rewound", False, _updates(("Progressing", "True", "Rewound")), "Running", True),
    # Raised by the operator itself rather than the driver loop.
    "suspended": (
        "Suspended",
        False,
        _updates(("Ready", "False", "Suspended"), ("Progressing", "False", "Suspended")),
        "Suspended",
        True,
    ),
    "invalid-spec": (
        "InvalidSpec",
        True,
        _updates(("Ready", "False", "InvalidSpec"), ("Progressing", "False", "InvalidSpec"))
        + _updates(("Degraded", "True", "InvalidSpec")),
        "Failed",
        True,
    ),
}


KNOWN_EVENT_KINDS = frozenset(_EVENTS)


def camel_case(kind: str) -> str:
    """``kafka-unavailable`` -> ``KafkaUnavailable``, a valid Event/condition reason."""
    words = [word for word in re.split(r"[^A-Za-z0-9]+", kind) if word]
    reason = "".join(word[:1].upper() + word[1:] for word in words)
    return reason if reason[:1].isalpha() else f"Event{reason}"


def outcome_for_event(kind: str, message: str, warning: bool = False) -> EventOutcome:
    """What the driver event ``kind`` means. An unknown kind still gets an Event (its reason the
    kind in CamelCase), but changes no condition."""
    known = _EVENTS.get(kind)
    if known is None:
        event_type: Literal["Normal", "Warning"] = "Warning" if warning else "Normal"
        return EventOutcome(camel_case(kind), event_type, _bounded(message), (), None, True)
    reason, is_warning, updates, phase, emit = known
    return EventOutcome(
        reason, "Warning" if is_warning or warning else "Normal", _bounded(message), updates, phase, emit
    )


def apply_outcome(
    conditions: Sequence[Mapping[str, Any]], outcome: EventOutcome, *, generation: int, now_iso: str
) -> list[dict[str, Any]]:
    """``conditions`` after ``outcome``'s updates, each carrying the event's message."""
    result = [dict(condition) for condition in conditions]
    for update in outcome.conditions:
        result = set_condition(
            result,
            update.type,
            update.status,
            update.reason,
            outcome.message,
            generation=generation,
            now_iso=now_iso,
        )
    return result
