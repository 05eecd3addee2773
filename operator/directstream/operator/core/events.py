"""What the driver loop reports: one frozen dataclass per kind of event.

Status, metrics and the CLI's progress are folds over these events, each a ``match`` over the
classes below, so a new event is a type error in every consumer until it is handled. ``message``
is what a person reads (a condition's message, an Event, a CLI line); the other fields are the
figures consumers count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    message: str
    batch_id: int | None = None
    warning: ClassVar[bool] = False


# -- the life of a batch ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Started(Event):
    """The loop took charge of the stream (or resumed from the Kafka group's offsets)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Planned(Event):
    offsets: int
    ranges: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Resumed(Event):
    """A recorded plan is run again after a restart."""

    attempt: int
    offsets: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Launched(Event):
    attempt: int
    executors: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Retrying(Event):
    warning: ClassVar[bool] = True
    attempt: int  # the attempt about to run
    failures: int  # executors that failed the last one


@dataclass(frozen=True, kw_only=True, slots=True)
class Committed(Event):
    records: int
    bytes: int
    seconds: float
    lag: int
    attempts: int
    positions_only: bool = False  # no record was read: only positions moved (a data-loss skip)
    skipped: int = 0  # poison records dropped (onError: skip)
    dead_lettered: int = 0  # poison records sent to the dead-letter topic


@dataclass(frozen=True, kw_only=True, slots=True)
class DeadLettered(Event):
    """A committed batch sent poison records to the dead-letter topic (one event per batch)."""

    warning: ClassVar[bool] = True
    records: int
    topic: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Idle(Event):
    lag: int


@dataclass(frozen=True, kw_only=True, slots=True)
class CaughtUp(Event):
    """The committed offsets reached the ends seen when the run started."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Rewound(Event):
    partitions: int
    moved: int


@dataclass(frozen=True, kw_only=True, slots=True)
class TopicsDropped(Event):
    """Stored offsets of topics the stream no longer reads (deleted, no longer listed or
    matched) were dropped: never compared with the group or committed again."""

    topics: tuple[str, ...]
    partitions: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ExecutorsScaled(Event):
    """A pool's executor count changes (lag-driven scaling, ``core/scaling.py``); the message says why."""

    previous: int
    target: int


@dataclass(frozen=True, kw_only=True, slots=True)
class SpecChangeDeferred(Event):
    """A pending batch keeps the settings it was planned with; the spec edit applies next batch."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Stopped(Event):
    """The loop stopped at a batch boundary."""


# -- what went wrong -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class DataLossSkipped(Event):
    """``onDataLoss: earliest`` skipped offsets that were gone before they were read."""

    warning: ClassVar[bool] = True
    lost: int


@dataclass(frozen=True, kw_only=True, slots=True)
class DataLossRefused(Event):
    """``onDataLoss: fail``: the batch is not planned; nothing moves."""

    warning: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchGaveUp(Event):
    """A batch failed ``maxAttempts`` times; its plan stays recorded."""

    warning: ClassVar[bool] = True
    failures: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Drift(Event):
    """The consumer group or the offsets table disagrees with the stored offsets."""

    warning: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True, slots=True)
class KafkaUnreachable(Event):
    warning: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True, slots=True)
class OffsetStoreUnreachable(Event):
    warning: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True, slots=True)
class KubeApiRefused(Event):
    warning: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True, slots=True)
class Fenced(Event):
    """Another writer changed the stream's state under this operator (a second operator, or the
    previous leader's last write landing late): it stopped driving and starts again from the
    state as stored."""

    warning: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True, slots=True)
class Suspended(Event):
    """``spec.suspend: true`` took effect at a batch boundary."""


@dataclass(frozen=True, kw_only=True, slots=True)
class InvalidSpec(Event):
    warning: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True, slots=True)
class StateTooLarge(Event):
    """A plan was not recorded: the state with it would not fit safely in one Kubernetes object."""

    warning: ClassVar[bool] = True
    size: int  # bytes the state would take with the plan
    limit: int


@dataclass(frozen=True, kw_only=True, slots=True)
class StateUnreadable(Event):
    """The stored state cannot be read (which field, why): no offsets move until it is fixed."""

    warning: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True, slots=True)
class InternalError(Event):
    """An unexpected exception in the stream's loop (its type and a scrubbed message); the turn is
    tried again after a capped backoff."""

    warning: ClassVar[bool] = True
    error_type: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Note(Event):
    """A line for the person watching (the CLI); it changes no status."""


EVENT_TYPES: tuple[type[Event], ...] = (
    Started,
    Planned,
    Resumed,
    Launched,
    Retrying,
    Committed,
    DeadLettered,
    Idle,
    CaughtUp,
    Rewound,
    TopicsDropped,
    ExecutorsScaled,
    SpecChangeDeferred,
    Stopped,
    DataLossSkipped,
    DataLossRefused,
    BatchGaveUp,
    Drift,
    KafkaUnreachable,
    OffsetStoreUnreachable,
    KubeApiRefused,
    Fenced,
    Suspended,
    InvalidSpec,
    StateTooLarge,
    StateUnreadable,
    InternalError,
    Note,
)
