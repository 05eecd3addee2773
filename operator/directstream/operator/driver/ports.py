"""What the driver needs from the outside world. Local mode and the operator each provide these;
the driver knows neither files nor Kubernetes."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from directstream.executor.contract import ExecutorResult

from ..core.events import Event
from ..core.leases import PoolBackend
from ..core.pinning import AttemptRun
from ..core.planning import TopicPartition, Watermarks
from ..core.spec import StreamSpec
from ..core.state import StreamState
from ..core.topic_lifecycle import TopicInfo

if TYPE_CHECKING:
    from .batch import Driver
    from .outcomes import Decision, Halt


class OffsetsPort(Protocol):
    async def partitions(self) -> list[TopicPartition]: ...
    async def topics(self, names: list[str]) -> dict[str, TopicInfo]:
        """Each named topic's id and partitions; a topic that does not exist is left out."""

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

    async def forget(self, tps: Sequence[TopicPartition]) -> None:
        """Delete the chains of partitions the stream no longer reads."""


class StatePort(Protocol):
    async def load(self) -> StreamState: ...

    async def save(self, state: StreamState) -> None:
        """Durably store ``state``; returns only once it would survive a crash."""


class LauncherPort(Protocol):
    async def run(self, attempt: AttemptRun) -> list[ExecutorResult]:
        """Run every unit of one batch attempt and return one result per unit. A unit whose
        executor died without a result gets a failed result that says how it died."""

    async def release(self, batch_id: int) -> None:
        """The batch is committed durably: remove what its attempts left (Jobs, files)."""


class PoolTransportPort(Protocol):
    """Where warm executors fetch units and report results (``executors.mode: pool``)."""

    async def start(self, backend: PoolBackend, token: str) -> str:
        """Serve ``backend`` to holders of ``token``; the URL executors reach it at."""

    async def close(self) -> None: ...


class ExecutorScalePort(Protocol):
    """A pool whose executor count the driver sets before each batch (lag-driven scaling).

    The local pool starts and stops processes; a cluster pool can implement it by setting a
    replica count, as long as it ends only executors that hold no lease.
    """

    def executors(self) -> int:
        """Executors running now that take units (ones being drained do not count)."""

    async def resize(self, count: int) -> None:
        """Keep ``count`` executors from now on: start the missing ones; shrink only by ending
        executors that hold no lease (they get no new one first). Returns without waiting for a
        unit to finish."""


class ExecutorProcessesPort(Protocol):
    """Long-lived executors (local mode: processes) that serve a pool's transport."""

    def watch(self, on_exit: Callable[[str, str], None]) -> None:
        """Call ``on_exit(executor_id, how it died)`` when an executor ends without ``stop``."""

    def layout(self, attempt: AttemptRun) -> Hashable:
        """What of ``attempt`` its executors are built from (local mode: the pinned executor
        settings; a cluster also the pods' Secret references): the pool is replaced when it changes."""

    async def start(self, executor_id: str, url: str, token: str, stream: str, attempt: AttemptRun) -> None:
        """Start one executor built for ``attempt``'s layout (it serves any attempt of that layout)."""

    async def stop(self, executor_id: str) -> None:
        """End the executor (SIGTERM, then SIGKILL) and wait for it; ``on_exit`` is not called.
        The pool stops an executor that holds a lease only when that lease ran out or was revoked."""

    def alive(self) -> set[str]: ...

    async def close(self) -> None:
        """Every executor is stopped: release what the pool keeps besides them (a cluster: a Secret)."""


class Observer(Protocol):
    def __call__(self, event: Event) -> None: ...


class Host(Protocol):
    """What differs between local mode and the operator; the loop (``loop.run_stream``) is one.

    - where the spec comes from (a file, or the live object) and the driver built for it;
    - how to wait and be woken (a stop; in the operator also spec changes and Job events);
    - the terminal policy: exit with a code, or set conditions and wait for a change.
    """

    def observe(self, event: Event) -> None: ...

    async def read_spec(self) -> StreamSpec:
        """The spec as it is now; raises ``SpecError`` for an invalid one."""

    async def driver_for(self, spec: StreamSpec) -> Driver:
        """The driver for ``spec``, rebuilt when its connections change."""

    async def checkpoint(self) -> None:
        """Persist what the events since the last call changed (the operator's status)."""

    def stopping(self) -> bool: ...

    async def sleep(self, seconds: float) -> None:
        """Wait; only a stop ends it early."""

    async def pause(self, seconds: float) -> None:
        """Wait; a stop or anything that may change what to do next (a Job event) ends it early."""

    async def wait_for_change(self, at_most: float) -> None:
        """Wait until the spec changes, a stop, or ``at_most`` seconds."""

    def on_halt(self, halt: Halt) -> Decision:
        """What to do when the loop cannot go on as it is."""
