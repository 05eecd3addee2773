"""The one driver loop, shared by local mode and the operator.

It owns the schedule — ticks every ``batchInterval``, the next batch at once while a backlog
waits, caught-up detection, suspend, stop at a batch boundary, backoff while Kafka or the
offsets database is away — and asks its :class:`~.ports.Host` for what differs: where the spec
comes from, how to wait, and what to do when it cannot go on (exit, or wait for a change).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..core import events as ev
from ..core.errors import KafkaUnavailable, KubeApiError, OffsetStoreUnavailable
from ..core.planning import TopicPartition
from ..core.spec import SpecError, StreamSpec
from ..core.state import StreamState
from .batch import Driver
from .outcomes import Exit, Halt, HaltReason, Retry, RunMode, RunOutcome, Step, WaitForChange
from .ports import Host
from .settings import DEFAULT_SETTINGS, DriverSettings, backoff

_UNAVAILABLE: tuple[HaltReason, ...] = ("kafka-unavailable", "store-unavailable")


class _Schedule:
    """When the next batch is due: every interval, or at once while a backlog waits."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._next = clock()

    def now_again(self) -> None:
        self._next = self._clock()

    def seconds_to_next(self, interval: float) -> float:
        now = self._clock()
        self._next = max(self._next + interval, now - 1e-3)
        return self._next - now


async def run_stream(
    host: Host,
    mode: RunMode = RunMode.FOREVER,
    settings: DriverSettings = DEFAULT_SETTINGS,
    clock: Callable[[], float] = time.monotonic,
) -> RunOutcome:
    """Drive one stream until the host stops it or its terminal policy says exit."""
    return await StreamLoop(host, mode, settings, clock).run()


class StreamLoop:
    def __init__(
        self, host: Host, mode: RunMode, settings: DriverSettings, clock: Callable[[], float]
    ) -> None:
        self._host = host
        self._mode = mode
        self._settings = settings
        self._schedule = _Schedule(clock)
        self._state: StreamState | None = None
        self._targets: dict[TopicPartition, int] | None = None
        self._failures = 0  # consecutive turns with Kafka or the offsets database away
        self._completed = False  # caught up with the ends of a stopAt: latest run
        self._suspended = False

    async def run(self) -> RunOutcome:
        host = self._host
        while not host.stopping():
            end = await self._turn()
            if end is not None:
                return end
        host.observe(ev.Stopped(message="stopped at a batch boundary"))
        await host.checkpoint()
        return RunOutcome(True, "stopped", "stopped at a batch boundary")

    async def _turn(self) -> RunOutcome | None:
        """One turn at a batch boundary; an outcome ends the run."""
        host = self._host
        try:
            spec = await host.read_spec()
        except SpecError as exc:
            host.observe(ev.InvalidSpec(message=f"invalid spec: {exc}"))
            return await self._halt("invalid-spec", str(exc))
        if spec.suspend:
            if not self._suspended:
                self._suspended = True
                host.observe(ev.Suspended(message="suspended (spec.suspend: true) at a batch boundary"))
            return await self._halt(
                "suspended", "the stream is suspended (spec.suspend: true); nothing to run"
            )
        self._suspended = False
        until_latest = self._mode is RunMode.UNTIL_CAUGHT_UP or spec.stop_at == "latest"
        if not until_latest:
            self._targets, self._completed = None, False
        prepared = await self._prepare(spec, until_latest)
        if isinstance(prepared, RunOutcome) or prepared is None:
            return prepared
        driver, state = prepared
        if self._completed:
            await host.wait_for_change(self._settings.idle_recheck_s)
            return None
        result = await driver.step(state, self._targets)
        self._state = result.state
        self._failures = self._failures + 1 if result.outcome in _UNAVAILABLE else 0
        self._completed = result.outcome == "caught-up"
        return await self._after_step(spec, result)

    async def _prepare(
        self, spec: StreamSpec, until_latest: bool
    ) -> tuple[Driver, StreamState] | RunOutcome | None:
        """The driver and the loaded state, and the ends to reach for a run until caught up."""
        host = self._host
        try:
            driver = await host.driver_for(spec)
            if self._state is None:
                self._state = await driver.load_state()
                host.observe(ev.Started(message=f"driving stream {spec.name} (group {spec.group_id})"))
            if until_latest and self._targets is None:
                self._targets = {tp: m.latest for tp, m in (await driver.watermarks_now()).items()}
        except KafkaUnavailable as exc:
            self._failures += 1
            host.observe(ev.KafkaUnreachable(message=str(exc)))
            return await self._halt("kafka-unavailable", str(exc))
        except OffsetStoreUnavailable as exc:
            self._failures += 1
            host.observe(ev.OffsetStoreUnreachable(message=str(exc)))
            return await self._halt("store-unavailable", str(exc))
        except KubeApiError as exc:
            host.observe(ev.KubeApiRefused(message=f"Kubernetes API: {exc}"))
            return await self._halt("kube-error", str(exc))
        return driver, self._state

    async def _after_step(self, spec: StreamSpec, result: Step) -> RunOutcome | None:
        """What follows a step: the host's decision for a failure, else the schedule's wait."""
        match result.outcome:
            case (
                "data-loss"
                | "batch-failed"
                | "invalid-spec"
                | "caught-up"
                | "kafka-unavailable"
                | "store-unavailable"
                | "kube-error"
            ):
                return await self._halt(result.outcome, result.message)
            case "reset":
                await self._host.checkpoint()
                return None
        await self._host.checkpoint()
        if self._mode is RunMode.ONCE:
            return RunOutcome(True, "once", "one batch done" if result.plan else "no new records")
        if result.backlog:
            self._schedule.now_again()  # a backlog: start the next batch right away
            return None
        await self._host.pause(self._schedule.seconds_to_next(spec.batch_interval_seconds))
        return None

    async def _halt(self, reason: HaltReason, message: str) -> RunOutcome | None:
        """Ask the host what follows; None means go round again (after waiting as it decided)."""
        halt = Halt(reason, message, self._failures, before_first_batch=self._state is None)
        decision = self._host.on_halt(halt)
        await self._host.checkpoint()
        match decision:
            case Exit(ok=ok):
                return RunOutcome(ok, reason, message)
            case Retry():
                await self._host.pause(backoff(self._settings.unavailable_backoff_s, self._failures))
            case WaitForChange(at_most=at_most):
                await self._host.wait_for_change(at_most)
        return None
