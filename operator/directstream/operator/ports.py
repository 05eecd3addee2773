"""What the driver loop needs from the outside world. Local mode and the operator each
provide these; the loop itself knows neither files nor Kubernetes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from directstream.executor.contract import ExecutorResult, WorkUnit

from .core.planning import TopicPartition, Watermarks
from .core.state import StreamState


class KafkaUnavailable(RuntimeError):
    """Kafka could not answer (unreachable, unknown topic, authorisation...)."""


class OffsetStoreUnavailable(RuntimeError):
    """The user's offsets database could not be read or written."""


class OffsetsPort(Protocol):
    async def partitions(self) -> list[TopicPartition]: ...
    async def watermarks(self, tps: list[TopicPartition]) -> dict[TopicPartition, Watermarks]: ...
    async def offsets_for_timestamp(
        self, tps: list[TopicPartition], timestamp_ms: int
    ) -> dict[TopicPartition, int]: ...
    async def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None: ...
    async def committed(self, group: str) -> dict[TopicPartition, int]:
        """The group's committed offsets for the partitions the stream reads now."""


class ExternalOffsetsPort(Protocol):
    """Offsets kept by the sink in the user's database (``spec.offsets.store: postgres``)."""

    async def read(self) -> dict[TopicPartition, int]: ...

    async def move(self, moves: Mapping[TopicPartition, tuple[int | None, int]]) -> None:
        """Start or move chains ``{tp: (expected, new)}``, each only if still at ``expected``."""

    async def force(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Set chains unconditionally (a rewind)."""


class StatePort(Protocol):
    async def load(self) -> StreamState: ...

    async def save(self, state: StreamState) -> None:
        """Durably store ``state``; returns only once it would survive a crash."""


class LauncherPort(Protocol):
    async def run(self, units: Sequence[WorkUnit]) -> list[ExecutorResult]:
        """Run every unit of one batch attempt and return one result per unit. A unit whose
        executor died without a result gets a failed result that says how it died."""


EventKind = Literal[
    "started",
    "planned",
    "resumed",
    "launched",
    "retrying",
    "committed",
    "positions",
    "idle",
    "data-loss",
    "failed",
    "caught-up",
    "drift",
    "kafka-unavailable",
    "stopped",
    "rewound",
    "store-unavailable",
    "kube-api-error",
]


@dataclass(frozen=True)
class DriverEvent:
    kind: EventKind
    message: str
    batch_id: int | None = None
    warning: bool = False
    fields: Mapping[str, Any] = field(default_factory=dict)


class Observer(Protocol):
    def __call__(self, event: DriverEvent) -> None: ...
