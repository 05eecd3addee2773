"""The one driver loop, shared by local mode and the operator.

It owns the schedule — ticks every ``batchInterval``, the next batch at once while a backlog
waits, caught-up detection, suspend, stop at a batch boundary, backoff while Kafka or the
offsets database is away — and asks its :class:`~.ports.Host` for what differs: where the spec
comes from, how to wait, and what to do when it cannot go on (exit, or wait for a change).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from directstream.executor.contract import PermanentError
from directstream.executor.contract.redact import scrub

from ..core import events as ev
from ..core.errors import Fenced, KafkaUnavailable, KubeApiError, OffsetStoreUnavailable, StateUnreadable
from ..core.planning import TopicPartition
from ..core.spec import SpecError, StreamSpec
from ..core.state import StreamState
from .batch import Driver
from .outcomes import Exit, Halt, HaltReason, Retry, RunMode, RunOutcome, Step, WaitForChange
from .ports import Host
from .settings import DEFAULT_SETTINGS, DriverSettings, backoff

log = logging.getLogger(__name__)
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
        self._internal = 0  # consecutive turns that ended in an unexpected exception

    async def run(self) -> RunOutcome:
        host = self._host
        while not host.stopping():
            try:
                end = await self._turn()
                self._internal = 0
            except Fenced:
                raise  # the host starts again from the stored state (hosts/leading.py)
            except Exception as exc:  # any bug becomes a condition and a bounded retry, never a crash loop
                end = await self._internal_error(exc)
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

    async def _internal_error(self, exc: Exception) -> RunOutcome | None:
        """An unexpected exception: a condition and an event with its type and a scrubbed message,
        then the same turn again after the capped backoff (offsets only move in a completed step)."""
        self._internal += 1
        wait = backoff(self._settings.unavailable_backoff_s, self._internal)
        text = scrub(str(exc)) or "no message"
        message = f"internal error {type(exc).__name__}: {text}; trying again in {wait:.0f}s"
        log.error("%s", message, exc_info=log.isEnabledFor(logging.DEBUG))
        self._host.observe(ev.InternalError(message=message, error_type=type(exc).__name__))
        halt = Halt("internal-error", message, self._internal, before_first_batch=self._state is None)
        decision = self._host.on_halt(halt)
        try:
            await self._host.checkpoint()
        except Fenced:
            raise
        except Exception as write_error:
            # No traceback: its frames may hold secret values.
            log.error("the status could not be written either: %s", scrub(str(write_error)))  # noqa: TRY400
        match decision:
            case Exit(ok=ok):
                return RunOutcome(ok, "internal-error", message)
            case Retry():
                await self._host.pause(wait)
            case WaitForChange(at_most=at_most):
                await self._host.wait_for_change(at_most)
        return None

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
        except StateUnreadable as exc:
            host.observe(ev.StateUnreadable(message=str(exc)))
            return await self._halt("state-unreadable", str(exc))
        except PermanentError as exc:
            # The spec passed the parser, but what it points to cannot be used (a Secret's keys,
            # client settings librdkafka refuses).
            host.observe(ev.InvalidSpec(message=f"invalid spec: {exc}"))
            return await self._halt("invalid-spec", str(exc))
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
