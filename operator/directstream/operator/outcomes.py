"""What one turn of the driver loop, and a whole run, can end in."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from directstream.executor.contract import ExecutorResult

from .core.planning import BatchPlan
from .core.state import StreamState


class RunMode(Enum):
    FOREVER = "forever"
    ONCE = "once"
    UNTIL_CAUGHT_UP = "until-caught-up"


class BatchFailed(RuntimeError):
    """A batch failed ``maxAttempts`` times; its plan stays recorded, nothing was committed."""

    def __init__(self, message: str, state: StreamState) -> None:
        super().__init__(message)
        self.state = state


StepOutcome = Literal["batch", "idle", "reset", "caught-up", "data-loss", "batch-failed", "kafka-unavailable"]


@dataclass(frozen=True)
class Step:
    state: StreamState
    outcome: StepOutcome
    plan: BatchPlan | None = None
    message: str = ""
    backlog: bool = False  # a rate cap left records behind: the next batch may start at once


@dataclass(frozen=True)
class RunOutcome:
    ok: bool
    reason: str  # caught-up | once | stopped | suspended | data-loss | batch-failed | kafka-unavailable
    message: str


def describe_failures(results: list[ExecutorResult]) -> str:
    parts = []
    for r in results:
        where = (
            f" at {r.failed_at.topic}[{r.failed_at.partition}] offset {r.failed_at.offset}"
            if r.failed_at
            else ""
        )
        parts.append(f"executor {r.index}{where}: {r.error or 'failed without a message'}")
    return "; ".join(parts)
