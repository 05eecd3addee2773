"""Warm executors (``spec.executors.mode: pool``): a launcher that hands units to long-lived executors.

The direct model is unchanged: the driver still plans, records the plan, then calls ``run`` for one
attempt and commits only once every unit's result came back ok. Which mode runs an attempt is
what its write-ahead record pinned, so a batch planned in ``job`` mode replays in ``job`` mode.

The pool keeps the executor count the driver asks for (``resize``, lag-driven: ``core/scaling.py``;
``executors.max`` until it asks) for the pinned executor settings and replaces all of them when an
attempt pins a different layout (``ExecutorProcessesPort.layout``), and one that died (its unit is
leased again, in the same attempt). A lease that runs out (a hung executor) gets its executor
stopped and replaced. Shrinking drains: an executor chosen to go gets no new lease, and only
executors that hold none are stopped. A ``job`` attempt retires the pool (a spec changed back to ``job``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Hashable

from directstream.executor.contract import ExecutorResult
from directstream.executor.contract.errors import DirectStreamError
from directstream.executor.contract.redact import scrub

from ..core.leases import DEFAULT_LEASE_SECONDS, Lease, LeaseBook
from ..core.pinning import AttemptRun
from ..core.spec import ExecutorsSpec
from .ports import ExecutorProcessesPort, LauncherPort, PoolTransportPort

log = logging.getLogger(__name__)
REAP_INTERVAL_S = 0.5
# Executors that die before taking any unit, in a row, per executor kept, before waiting units fail.
CRASHES_PER_EXECUTOR = 3


class PoolLauncher:
    """A :class:`~.ports.LauncherPort` (``pool`` attempts go to warm executors, others to ``job``)
    and an :class:`~.ports.ExecutorScalePort`."""

    def __init__(
        self,
        stream: str,
        job: LauncherPort,
        transport: PoolTransportPort,
        processes: ExecutorProcessesPort,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._job = job
        self._transport = transport
        self._processes = processes
        self._clock = clock
        self._book = LeaseBook(lease_seconds=lease_seconds)
        self._token = secrets.token_urlsafe(32)
        self._url = ""
        self._settings: ExecutorsSpec | None = None
        self._layout: Hashable | None = None
        self._template: AttemptRun | None = None  # the attempt whose layout the executors are built for
        self._swept = False  # what an earlier driver run's pool left was released (a cluster's pods)
        self._generation = 0
        self._serial = 0
        self._changed = asyncio.Event()
        self._crashes = 0
        self._last_death = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._target: int | None = None  # None: executors.max of the pinned settings
        self._draining: set[str] = set()  # chosen to go: they get no new lease
        self.replaced = 0  # executors started to replace one that died or hung (for tests and metrics)
        processes.watch(self._on_exit)

    # -- LauncherPort --------------------------------------------------------------------------------
    async def run(self, attempt: AttemptRun) -> list[ExecutorResult]:
        if attempt.executors.mode != "pool":
            await self._retire()
            return await self._job.run(attempt)
        if not attempt.units:
            return []
        await self._ensure_pool(attempt)
        self._book.offer(attempt.units)
        self._crashes = 0
        self._notify()
        try:
            while not self._book.done():
                await self._wait_change(REAP_INTERVAL_S)
                for holder in self._book.expired(self._clock()):
                    log.warning("executor %s let its lease run out: replacing it", holder)
                    await self._processes.stop(holder)
                    await self._start_one()
                    self.replaced += 1
            results = self._book.results()
        finally:
            holders = self._book.holders()
            self._book.clear()  # nothing of this attempt is leased or counted any more
            for holder in holders:  # cancelled mid-attempt: no unit may keep running
                await self._processes.stop(holder)
                await self._start_one()
        try:
            await self._fit()  # e.g. a replacement started while the pool was shrinking
        except DirectStreamError as exc:  # the results stand; the next attempt's start reports it
            log.warning("cannot bring the pool back to %d executors: %s", self._wanted(), scrub(str(exc)))
        return results

    async def follow(self, live: ExecutorsSpec) -> None:
        """Retire the pool once the live spec is back in ``job`` mode, between batches (called
        with no batch pending): an idle stream would otherwise keep it until its next attempt."""
        if live.mode != "pool" and self._settings is not None:
            log.info("executors.mode is job now: stopping the pool")
            await self._retire()

    async def release(self, batch_id: int) -> None:
        await self._job.release(batch_id)

    async def close(self) -> None:
        """Stop every executor and the transport (the driver's run ended)."""
        await self._retire()
        await self._transport.close()  # also when no pool attempt ever ran

    # -- ExecutorScalePort --------------------------------------------------------------------------
    def executors(self) -> int:
        return len(self._taking())

    async def resize(self, count: int) -> None:
        self._target = max(1, count)
        if self._settings is not None:  # else the first pool attempt starts this many
            await self._fit()

    # -- PoolBackend (called by the transport) -------------------------------------------------------
    async def lease(self, executor_id: str, wait_seconds: float) -> Lease | None:
        deadline = self._clock() + wait_seconds
        while True:
            if executor_id in self._taking():
                lease = self._book.lease(executor_id, self._clock())
                if lease is not None:
                    self._crashes = 0
                    return lease
            left = deadline - self._clock()
            if left <= 0:
                return None
            await self._wait_change(left)

    def renew(self, executor_id: str, lease_id: str) -> Lease | None:
        return self._book.renew(executor_id, lease_id, self._clock())

    def complete(self, executor_id: str, lease_id: str, result: ExecutorResult) -> str | None:
        refused = self._book.complete(executor_id, lease_id, result)
        self._notify()
        return refused

    def refuse(self, executor_id: str, lease_id: str, reason: str) -> None:
        log.error("executor %s refused lease %s: %s", executor_id, lease_id, reason)
        self._book.lost(executor_id, f"executor {executor_id} refused the unit: {reason}")
        self._notify()

    # -- the executors -------------------------------------------------------------------------------
    async def _ensure_pool(self, attempt: AttemptRun) -> None:
        if not self._url:
            self._url = await self._transport.start(self, self._token)
        layout = self._processes.layout(attempt)
        if self._settings is None or layout != self._layout:
            if self._settings is not None:
                log.info("the pinned executor settings changed: replacing the pool")
            await self._stop_all()
            self._layout, self._template = layout, attempt
            self._generation += 1
        self._settings = attempt.executors
        await self._fit()

    def _wanted(self) -> int:
        if self._settings is None:
            return 0
        return self._target if self._target is not None else self._settings.max

    def _taking(self) -> set[str]:
        """The executors that may take a unit: alive and not being drained."""
        return self._processes.alive() - self._draining

    async def _fit(self) -> None:
        """Start or drain executors to the wanted count; never stop one that holds a lease."""
        taking = self._taking()
        for _ in range(self._wanted() - len(taking)):
            await self._start_one()
        surplus = len(taking) - self._wanted()
        if surplus <= 0:
            return
        idle = sorted(taking - self._book.holders(), key=_newest_first)[:surplus]
        self._draining.update(idle)  # before any await: no lease reaches them from now on
        try:
            await asyncio.gather(*(self._processes.stop(e) for e in idle))
        finally:
            self._draining.difference_update(idle)
        self._notify()

    async def _retire(self) -> None:
        """Stop every executor and the transport (the run ended, or the stream went back to ``job``)."""
        if self._settings is None and not self._url and self._swept:
            return
        self._swept = True
        self._settings, self._layout, self._template = None, None, None
        await self._stop_all()
        await self._processes.close()
        await self._transport.close()
        self._url = ""

    async def _stop_all(self) -> None:
        await asyncio.gather(*(self._processes.stop(e) for e in sorted(self._processes.alive())))

    async def _start_one(self) -> None:
        if self._settings is None or self._template is None:
            return
        self._serial += 1
        executor_id = f"{self._generation}-{self._serial}"
        await self._processes.start(executor_id, self._url, self._token, self._stream, self._template)

    def _on_exit(self, executor_id: str, how: str) -> None:
        why = f"executor {executor_id} {how}"
        log.warning("%s", why)
        self._book.lost(executor_id, why)
        self._count_loss(why)

    def _count_loss(self, why: str) -> None:
        """One executor fewer (it died, or its replacement was refused): replace it after a
        backoff, or fail the waiting units with ``why`` once no executor stays up."""
        self._last_death = why
        self._crashes += 1
        if self._settings is not None and self._crashes > CRASHES_PER_EXECUTOR * self._wanted():
            self._book.fail_waiting(f"no executor of the pool stays up; last: {why}")
        elif self._settings is not None:
            self.replaced += 1
            task = asyncio.get_running_loop().create_task(self._replace_later())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._notify()

    async def _replace_later(self) -> None:
        await asyncio.sleep(min(0.05 * 2 ** min(self._crashes, 6), 2.0))  # a crash loop backs off
        if self._settings is not None and len(self._taking()) < self._wanted():
            try:
                await self._start_one()
            except DirectStreamError as exc:  # e.g. a pod refused by admission or a quota
                why = f"a replacement executor could not be started: {scrub(str(exc))}"
                log.warning("%s", why)
                self._count_loss(why)
                return
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, at_most: float) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), at_most)


def _newest_first(executor_id: str) -> tuple[int, int]:
    """Drain the newest executors first (ids are ``generation-serial``), so the oldest stay warm."""
    generation, _, serial = executor_id.partition("-")
    try:
        return (-int(generation), -int(serial))
    except ValueError:
        return (0, 0)
