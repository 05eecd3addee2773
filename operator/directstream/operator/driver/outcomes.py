"""What one turn of the driver loop, and a whole run, can end in."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from directstream.executor.contract import ExecutorResult, PermanentError
from directstream.executor.contract.redact import scrub

from ..core import events as ev
from ..core.planning import BatchPlan
from ..core.spec import StreamSpec
from ..core.state import LedgerEntry, PendingBatch, StreamState


class RunMode(Enum):
    FOREVER = "forever"
    ONCE = "once"
    UNTIL_CAUGHT_UP = "until-caught-up"


def gave_up_message(state: StreamState, max_attempts: int) -> str:
    """Why a recorded batch stops being retried: it failed ``maxAttempts`` times."""
    assert state.pending is not None
    pending = state.pending
    return (
        f"batch {pending.plan.batch_id} failed {pending.failed_attempts} time(s) (maxAttempts "
        f"{max_attempts}); committed offsets unchanged; it runs again after a spec change "
        f"or a reset: {pending.first_error}"
    )


class BatchFailed(PermanentError):
    """A batch failed ``maxAttempts`` times; its plan stays recorded, nothing was committed."""

    def __init__(self, message: str, state: StreamState) -> None:
        super().__init__(message)
        self.state = state


StepOutcome = Literal[
    "batch",
    "idle",
    "reset",
    "caught-up",
    "data-loss",
    "batch-failed",
    "kafka-unavailable",
    "store-unavailable",
    "kube-error",
    "invalid-spec",
]
# Why the loop cannot simply go on; the host decides what follows (Host.on_halt).
HaltReason = Literal[
    "suspended",
    "invalid-spec",
    "caught-up",
    "data-loss",
    "batch-failed",
    "kafka-unavailable",
    "store-unavailable",
    "kube-error",
    "state-unreadable",
    "internal-error",
]


@dataclass(frozen=True)
class Step:
    state: StreamState
    outcome: StepOutcome
    plan: BatchPlan | None = None
    message: str = ""
    backlog: bool = False  # a rate cap left records behind: the next batch may start at once


@dataclass(frozen=True)
class Halt:
    reason: HaltReason
    message: str
    failures: int = 0  # consecutive failures of this kind (unavailable servers)
    before_first_batch: bool = False  # the stream's state could not even be loaded


@dataclass(frozen=True)
class Exit:
    """End the run with this outcome."""

    ok: bool


@dataclass(frozen=True)
class Retry:
    """Back off (the settings' unavailable backoff) and try again."""


@dataclass(frozen=True)
class WaitForChange:
    """Wait for a spec change (or ``at_most`` seconds), then look again."""

    at_most: float


Decision = Exit | Retry | WaitForChange


@dataclass(frozen=True)
class RunOutcome:
    ok: bool
    reason: str  # caught-up | once | stopped | suspended | data-loss | batch-failed | kafka-unavailable ...
    message: str


def describe_failures(results: list[ExecutorResult]) -> str:
    parts = []
    for r in results:
        where = (
            f" at {r.failed_at.topic}[{r.failed_at.partition}] offset {r.failed_at.offset}"
            if r.failed_at
            else ""
        )
        parts.append(f"executor {r.index}{where}: {scrub(r.error or 'failed without a message')}")
    return "; ".join(parts)


def dead_letter_event(entry: LedgerEntry, pending: PendingBatch, spec: StreamSpec) -> ev.DeadLettered | None:
    """The event of a committed batch that dead-lettered records (the pinned policy's topic)."""
    if not entry.dead_lettered:
        return None
    policy = pending.pinned.processor.poison if pending.pinned is not None else spec.processor.poison
    topic = policy.dead_letter.topic if policy.dead_letter is not None else "?"
    return ev.DeadLettered(
        message=f"batch {entry.batch_id} sent {entry.dead_lettered} poison record(s) to the dead-letter "
        f"topic {topic}; the other records were committed",
        batch_id=entry.batch_id,
        records=entry.dead_lettered,
        topic=topic,
    )


def poison_note(entry: LedgerEntry) -> str:
    """The committed message's tail for a batch that dropped poison records."""
    if not (entry.skipped or entry.dead_lettered):
        return ""
    return f"; poison records: {entry.skipped} skipped, {entry.dead_lettered} dead-lettered"
