"""In-memory fakes of every port of the driver, for tests that run the real loop in milliseconds.

- :class:`FakeKafka` (``OffsetsPort``): partitions with earliest/latest offsets, topic ids, a
  consumer group, records produced and deleted, topics deleted and recreated, and outages
  (``fail_next``). Given the stream's spec (``MemoryHost`` passes it) it lists the partitions
  the stream reads as the real adapter does.
- :class:`MemoryState` (``StatePort``): the state, and every state saved, in order.
- :class:`FakeLauncher` (``LauncherPort``): runs nothing; answers each unit with a result from a
  script, and records the units and the state recorded when they were launched.
- :class:`FakeClock`: time that moves only when the loop sleeps.
- :class:`FakeTransport` and :class:`FakeExecutorProcesses` (the pool's ports): executors as
  tasks that lease units from the pool and answer from a script; they can be killed or hang.
- :class:`FakeScaler` (``ExecutorScalePort``): a pool's executor count, and every resize.
- :class:`MemoryHost` (``Host``): a spec that tests may change, the events seen, a stop after a
  number of turns, and either terminal policy (exit like local mode, or wait like the operator).

Nothing here does I/O; the loop, the driver and the pure core under test are the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace

from directstream.executor.contract import ExecutorResult, KafkaClientSettings, WorkUnit

from .core.errors import KafkaUnavailable, KubeApiError
from .core.events import Event
from .core.leases import PoolBackend
from .core.pinning import AttemptRun
from .core.planning import TopicPartition, Watermarks
from .core.spec import StreamSpec
from .core.state import StreamState
from .core.topic_lifecycle import TopicInfo
from .driver import DEFAULT_SETTINGS, Driver, DriverSettings
from .driver.outcomes import Decision, Halt, RunMode
from .driver.policies import exit_policy, wait_policy


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class FakeKafka:
    """Topics as ``{(topic, partition): Watermarks}``; topic ids; a group's commits; scripted outages."""

    def __init__(self, partitions: Mapping[TopicPartition, int] | None = None) -> None:
        self.marks: dict[TopicPartition, Watermarks] = {
            tp: Watermarks(0, latest) for tp, latest in (partitions or {}).items()
        }
        self.groups: dict[str, dict[TopicPartition, int]] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.ids: dict[str, str] = {}
        self._created = 0
        for topic in sorted({tp[0] for tp in self.marks}):
            self._new_id(topic)
        self.spec: StreamSpec | None = None  # the stream's topics or pattern (None: every partition)
        self._failures = 0
        self.calls = 0

    def _new_id(self, topic: str) -> None:
        self._created += 1
        self.ids[topic] = f"{topic}-id{self._created}"

    def produce(self, tp: TopicPartition, records: int) -> None:
        if tp[0] not in self.ids:
            self._new_id(tp[0])
        mark = self.marks.get(tp, Watermarks(0, 0))
        self.marks[tp] = replace(mark, latest=mark.latest + records)

    def delete_records(self, tp: TopicPartition, before: int) -> None:
        """Retention: offsets below ``before`` are gone."""
        self.marks[tp] = replace(self.marks[tp], earliest=before)

    def delete_topic(self, topic: str) -> None:
        """The topic, its id and every group's offsets for it are gone (as Kafka deletes them)."""
        self.marks = {tp: m for tp, m in self.marks.items() if tp[0] != topic}
        self.ids.pop(topic, None)
        for offsets in self.groups.values():
            for tp in [tp for tp in offsets if tp[0] == topic]:
                del offsets[tp]

    def recreate_topic(self, topic: str, records: Mapping[int, int]) -> None:
        """Delete ``topic`` and create it again (a new id) with ``records`` per partition."""
        self.delete_topic(topic)
        self._new_id(topic)
        for partition, count in records.items():
            self.marks[(topic, partition)] = Watermarks(0, count)

    def fail_next(self, calls: int) -> None:
        """The next ``calls`` requests find Kafka unreachable."""
        self._failures = calls

    def _request(self) -> None:
        self.calls += 1
        if self._failures > 0:
            self._failures -= 1
            raise KafkaUnavailable("cannot reach Kafka at fake:9092: connection refused")

    async def partitions(self) -> list[TopicPartition]:
        self._request()
        return self._reading()

    def _reading(self) -> list[TopicPartition]:
        spec = self.spec
        if spec is not None and spec.topics:
            missing = [t for t in spec.topics if t not in self.ids]
            if missing:
                raise KafkaUnavailable(f"topic(s) {', '.join(missing)} do not exist on fake:9092")
        return sorted(tp for tp in self.marks if spec is None or spec.matches_topic(tp[0]))

    async def topics(self, names: list[str]) -> dict[str, TopicInfo]:
        self._request()
        return {
            name: TopicInfo(self.ids[name], tuple(sorted(p for t, p in self.marks if t == name)))
            for name in names
            if name in self.ids
        }

    async def watermarks(self, tps: list[TopicPartition]) -> dict[TopicPartition, Watermarks]:
        self._request()
        return {tp: self.marks[tp] for tp in tps}

    async def offsets_for_timestamp(
        self, tps: list[TopicPartition], timestamp_ms: int
    ) -> dict[TopicPartition, int]:
        self._request()
        return {tp: self.marks[tp].earliest for tp in tps}

    async def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        self._request()
        unknown = sorted(tp for tp in offsets if tp not in self.marks)
        if unknown:
            raise KafkaUnavailable(
                f"committing offsets of group {group} failed for "
                + ", ".join(f"{t}[{p}]: Broker: Unknown topic or partition" for t, p in unknown)
            )
        self.groups.setdefault(group, {}).update(offsets)
        self.commits.append(dict(offsets))

    async def committed(self, group: str) -> dict[TopicPartition, int]:
        self._request()
        reading = set(self._reading())
        return {tp: off for tp, off in self.groups.get(group, {}).items() if tp in reading}


class MemoryState:
    def __init__(self, state: StreamState | None = None) -> None:
        self.state = state or StreamState()
        self.saved: list[StreamState] = []

    async def load(self) -> StreamState:
        return self.state

    async def save(self, state: StreamState) -> None:
        self.state = state
        self.saved.append(state)


Script = Callable[[WorkUnit], ExecutorResult | Exception]


def succeed(unit: WorkUnit) -> ExecutorResult:
    """Every record of the unit processed."""
    records = sum(r.count for r in unit.ranges)
    return ExecutorResult(unit.batch_id, unit.attempt, unit.index, ok=True, records=records, bytes=records)


@dataclass
class Launch:
    units: tuple[WorkUnit, ...]
    recorded: StreamState  # the state stored when the executors started (the write-ahead log)
    attempt: AttemptRun


@dataclass
class FakeLauncher:
    """Answers every unit from ``script`` (a result, or an exception the launcher raises)."""

    state: MemoryState
    script: Script = succeed
    launches: list[Launch] = field(default_factory=list)
    released: list[tuple[int, StreamState]] = field(default_factory=list)  # (batch, state stored then)

    def fail_attempts(self, attempts: int, error: str = "boom") -> None:
        """The first ``attempts`` attempts of every batch fail on unit 0."""

        def script(unit: WorkUnit) -> ExecutorResult:
            if unit.attempt <= attempts and unit.index == 0:
                return ExecutorResult(unit.batch_id, unit.attempt, unit.index, ok=False, error=error)
            return succeed(unit)

        self.script = script

    async def run(self, attempt: AttemptRun) -> list[ExecutorResult]:
        self.launches.append(Launch(attempt.units, self.state.state, attempt))
        results = []
        for unit in attempt.units:
            answer = self.script(unit)
            if isinstance(answer, Exception):
                raise answer
            results.append(answer)
        return results

    async def release(self, batch_id: int) -> None:
        self.released.append((batch_id, self.state.state))


@dataclass
class FakeScaler:
    """``ExecutorScalePort``: the count it was last resized to, and every resize, in order."""

    count: int = 0
    resizes: list[int] = field(default_factory=list)

    def executors(self) -> int:
        return self.count

    async def resize(self, count: int) -> None:
        self.resizes.append(count)
        self.count = count


class MemoryHost:
    """The loop's host over fakes, with the real terminal policies: ``"local"`` (exit) or
    ``"cluster"`` (wait for a change)."""

    def __init__(
        self,
        spec: StreamSpec,
        *,
        kafka: FakeKafka,
        state: MemoryState | None = None,
        settings: DriverSettings = DEFAULT_SETTINGS,
        policy: str = "local",
        mode: RunMode = RunMode.FOREVER,
        max_turns: int = 1_000,
        scaler: FakeScaler | None = None,
    ) -> None:
        self.spec = spec
        self.kafka = kafka
        self.store = state or MemoryState()
        self.launcher = FakeLauncher(self.store)
        self.clock = FakeClock()
        self.settings = settings
        self.policy = policy
        self.mode = mode  # for the local policy; pass the same mode to run_stream
        self.events: list[Event] = []
        self.halts: list[Halt] = []
        self.sleeps: list[float] = []  # sleep(): the driver's retry backoff
        self.pauses: list[float] = []  # pause(): the schedule and the unavailable backoff
        self.waits: list[float] = []  # wait_for_change()
        self.checkpoints = 0
        self.turns_left = max_turns
        self.on_wait: Callable[[MemoryHost], None] | None = None  # e.g. change the spec while waiting
        self.driver = Driver(
            spec,
            offsets=kafka,
            state=self.store,
            launcher=self.launcher,
            executor_kafka=KafkaClientSettings(bootstrap_servers="fake:9092"),
            observe=self.observe,
            clock=self.clock,
            sleep=self.sleep,
            settings=settings,
            scaler=scaler,
        )

    def of_type(self, event_type: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, event_type)]

    # -- the Host protocol ----------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        self.events.append(event)

    async def read_spec(self) -> StreamSpec:
        self.turns_left -= 1
        return self.spec

    async def driver_for(self, spec: StreamSpec) -> Driver:
        self.driver.spec = spec
        self.kafka.spec = spec
        return self.driver

    async def checkpoint(self) -> None:
        self.checkpoints += 1

    def stopping(self) -> bool:
        return self.turns_left <= 0

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)

    async def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.clock.advance(seconds)

    async def wait_for_change(self, at_most: float) -> None:
        self.waits.append(at_most)
        self.clock.advance(at_most)
        if self.on_wait is not None:
            self.on_wait(self)

    def on_halt(self, halt: Halt) -> Decision:
        self.halts.append(halt)
        if self.policy == "cluster":
            return wait_policy(halt, self.settings)
        return exit_policy(halt, self.mode, self.settings)


def refused(message: str = "403 jobs.batch is forbidden") -> Exception:
    """What a launcher raises when the API server refuses the Job."""
    return KubeApiError(message)


class FakeTransport:
    """``PoolTransportPort``: no network; the fake executors call the backend directly."""

    def __init__(self) -> None:
        self.backend: PoolBackend | None = None
        self.token = ""
        self.closed = False

    async def start(self, backend: PoolBackend, token: str) -> str:
        self.backend, self.token = backend, token
        return "fake://pool"

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeExecutor:
    executor_id: str
    task: asyncio.Task[None]
    units: list[WorkUnit] = field(default_factory=list)  # every unit it was leased


class FakeExecutorProcesses:
    """``ExecutorProcessesPort``: each executor is a task that leases units from the transport's
    backend and answers them from ``script``; ``kill`` ends one as a SIGKILL would (mid-unit
    with ``hang``: it holds the lease and never answers)."""

    def __init__(self, transport: FakeTransport, script: Script = succeed) -> None:
        self.transport = transport
        self.script = script
        self.executors: dict[str, FakeExecutor] = {}
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.hang: set[int] = set()  # unit indexes the executors sit on without answering
        self.refuse: str | None = None  # start raises KubeApiError with this (a pod refused by admission)
        self.closed = False
        self._on_exit: Callable[[str, str], None] = lambda executor_id, how: None

    def watch(self, on_exit: Callable[[str, str], None]) -> None:
        self._on_exit = on_exit

    def alive(self) -> set[str]:
        return set(self.executors)

    def layout(self, attempt: AttemptRun) -> Hashable:
        return attempt.executors

    async def close(self) -> None:
        self.closed = True

    async def start(self, executor_id: str, url: str, token: str, stream: str, attempt: AttemptRun) -> None:
        assert token == self.transport.token, "executors get the transport's token"
        if self.refuse is not None:
            raise KubeApiError(self.refuse)
        self.started.append(executor_id)
        task = asyncio.get_running_loop().create_task(self._serve(executor_id))
        self.executors[executor_id] = FakeExecutor(executor_id, task)

    async def stop(self, executor_id: str) -> None:
        executor = self.executors.pop(executor_id, None)
        if executor is not None:
            self.stopped.append(executor_id)
            executor.task.cancel()

    def kill(self, executor_id: str) -> None:
        executor = self.executors.pop(executor_id)
        executor.task.cancel()
        self._on_exit(executor_id, "was killed by SIGKILL")

    def holding(self, index: int) -> str:
        """The executor that last leased unit ``index``."""
        for executor in self.executors.values():
            if executor.units and executor.units[-1].index == index:
                return executor.executor_id
        raise LookupError(index)

    async def _serve(self, executor_id: str) -> None:
        backend = self.transport.backend
        assert backend is not None
        while True:
            lease = await backend.lease(executor_id, 1.0)
            if lease is None:
                continue
            self.executors[executor_id].units.append(lease.unit)
            if lease.unit.index in self.hang:
                await asyncio.sleep(3600)
            answer = self.script(lease.unit)
            if isinstance(answer, Exception):
                raise answer
            backend.complete(executor_id, lease.lease_id, replace(answer, digest=lease.unit.digest))
