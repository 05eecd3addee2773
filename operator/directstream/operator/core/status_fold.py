"""What each driver event does to a DirectStream's conditions and phase, and which Kubernetes
Event it records: ``fold(view, event)`` (pure).

Routine per-batch events (planned, launched, committed, idle) change conditions but post no
Kubernetes Event: one Event per batch every few seconds would only flood etcd; those show in
conditions, status and metrics instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from directstream.executor.contract.redact import scrub

from . import events as ev
from .status import Phase, bounded, set_condition

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True, slots=True)
class ConditionUpdate:
    type: str
    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What one event changes: conditions, phase (None = unchanged), and whether it is posted."""

    reason: str
    conditions: tuple[ConditionUpdate, ...]
    phase: Phase | None
    emit_event: bool


@dataclass(frozen=True, slots=True)
class KubeEvent:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class StatusView:
    """The part of the status that events decide."""

    phase: Phase = "Pending"
    conditions: tuple[Mapping[str, Any], ...] = ()


def _updates(*triples: tuple[str, str, str]) -> tuple[ConditionUpdate, ...]:
    return tuple(ConditionUpdate(type_, status, reason) for type_, status, reason in triples)


def _progressing(reason: str, phase: Phase | None = "Running", emit: bool = False) -> EventOutcome:
    return EventOutcome(reason, _updates(("Progressing", "True", reason)), phase, emit)


def _healthy(
    reason: str, progressing: str = "True", phase: Phase = "Running", emit: bool = False
) -> EventOutcome:
    updates = _updates(
        ("Ready", "True", reason), ("Progressing", progressing, reason), ("Degraded", "False", reason)
    )
    return EventOutcome(reason, updates, phase, emit)


def _degraded(reason: str, *, not_ready: bool = False, phase: Phase | None = None) -> EventOutcome:
    updates = (_updates(("Ready", "False", reason)) if not_ready else ()) + _updates(
        ("Degraded", "True", reason)
    )
    return EventOutcome(reason, updates, phase, True)


def _stopped(reason: str, phase: Phase, *, degraded: bool) -> EventOutcome:
    updates = _updates(("Ready", "False", reason), ("Progressing", "False", reason))
    if degraded:
        updates += _updates(("Degraded", "True", reason))
    return EventOutcome(reason, updates, phase, True)


def outcome_of(event: ev.Event) -> EventOutcome | None:
    """What ``event`` means for the status; None for an event that changes none (a CLI note)."""
    match event:
        case ev.Started():
            return _progressing("Started", emit=True)
        case ev.Resumed():
            return _progressing("BatchResumed", emit=True)
        case ev.Planned():
            return _progressing("BatchPlanned")
        case ev.Launched():
            return _progressing("ExecutorsLaunched")
        case ev.Retrying():
            reason = "BatchRetrying"
            return EventOutcome(
                reason,
                _updates(("Progressing", "True", reason), ("Degraded", "True", reason)),
                "Running",
                True,
            )
        case ev.Committed(positions_only=True):
            return _healthy("PositionsCommitted")
        case ev.Committed():
            return _healthy("BatchCommitted")
        case ev.Idle():
            return _healthy("NoNewRecords", progressing="False")
        case ev.CaughtUp():
            return _healthy("CaughtUp", progressing="False", phase="Completed", emit=True)
        case ev.Rewound():
            return _progressing("Rewound", emit=True)
        case ev.TopicsDropped():
            return EventOutcome("TopicsDropped", (), None, True)  # an Event; conditions unchanged
        case ev.ExecutorsScaled():
            return EventOutcome("ExecutorsScaled", (), None, True)  # an Event; conditions unchanged
        case ev.DeadLettered():
            return EventOutcome("DeadLettered", (), None, True)  # the batch committed: an Event only
        case ev.SpecChangeDeferred():
            return _progressing("SpecChangeDeferred", phase=None, emit=True)
        case ev.Stopped():
            return EventOutcome("Stopped", _updates(("Progressing", "False", "Stopped")), None, True)
        case ev.DataLossSkipped():
            return _degraded("DataLoss")
        case ev.DataLossRefused() | ev.BatchGaveUp():
            return _stopped("BatchFailed", "Failed", degraded=True)
        case ev.Drift():
            return _degraded("OffsetsDrift")
        case ev.KafkaUnreachable():
            return _degraded("KafkaUnavailable", not_ready=True)
        case ev.OffsetStoreUnreachable():
            return _degraded("OffsetStoreUnavailable", not_ready=True)
        case ev.KubeApiRefused():
            return _degraded("KubernetesApiError", not_ready=True)
        case ev.Fenced():
            return _degraded("Fenced")
        case ev.Suspended():
            return _stopped("Suspended", "Suspended", degraded=False)
        case ev.InvalidSpec():
            return _stopped("InvalidSpec", "Failed", degraded=True)
        case ev.StateUnreadable():
            return _stopped("StateUnreadable", "Failed", degraded=True)
        case ev.StateTooLarge():
            return _stopped("StatusTooLarge", "Failed", degraded=True)
        case ev.InternalError():
            return _degraded("InternalError", not_ready=True)
        case ev.Note():
            return None
    raise TypeError(f"no status meaning for {type(event).__name__}")  # a new event class


def fold(
    view: StatusView, event: ev.Event, *, generation: int, now_iso: str
) -> tuple[StatusView, KubeEvent | None]:
    """``view`` after ``event``, and the Kubernetes Event to post for it, if any."""
    outcome = outcome_of(event)
    if outcome is None:
        return view, None
    message = bounded(scrub(event.message))
    conditions: list[dict[str, Any]] = [dict(c) for c in view.conditions]
    for update in outcome.conditions:
        conditions = set_condition(
            conditions,
            update.type,
            update.status,
            update.reason,
            message,
            generation=generation,
            now_iso=now_iso,
        )
    folded = StatusView(outcome.phase or view.phase, tuple(conditions))
    posted = KubeEvent("Warning" if event.warning else "Normal", outcome.reason, message)
    return folded, posted if outcome.emit_event else None
