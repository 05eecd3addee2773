"""A stream's kopf daemon under leader election.

- A standby (another operator holds the Lease) drives nothing: its daemon waits for the Lease.
- The leader runs the driver loop (``run_cluster_stream``).
- A leader that loses the Lease stops driving at once: the loop is cancelled wherever it is, even
  mid-batch. It writes nothing more (the status store, the Kafka group and the offsets table all
  refuse without the Lease, and every status write is conditional on the resourceVersion it read).
  The batch stays recorded in ``status.pending`` and its Job keeps running; the next leader resumes
  that recorded plan and adopts the Job by its name (batch and attempt), so the attempt is not run
  twice and the batch commits once.
- A leader whose status write was fenced (another writer moved the state) reports it and starts
  again from the state as stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from ..adapters.kube.api import AsyncKubeApi
from ..core import events as ev
from ..core.errors import Fenced
from ..driver import DEFAULT_SETTINGS, DriverSettings
from ..driver.settings import backoff
from .cluster import STOP_CHECK_S, StreamContext, no_metrics, run_cluster_stream
from .waits import wait_for_any

log = logging.getLogger(__name__)
FENCES_FORGOTTEN_AFTER_S = 600.0  # fencings longer ago than this do not lengthen the next wait


class Leadership(Protocol):
    """What a stream's daemon needs to know about the election (``adapters.kube.lease``)."""

    became_leader: asyncio.Event
    became_standby: asyncio.Event

    @property
    def leading(self) -> bool: ...

    def standby_reason(self) -> str: ...


async def drive_while_leading(
    kube: AsyncKubeApi,
    ctx: StreamContext,
    leadership: Leadership,
    settings: DriverSettings = DEFAULT_SETTINGS,
) -> None:
    """The daemon's body: wait for the Lease, drive while holding it, until kopf stops the daemon."""
    where = f"{ctx.namespace}/{ctx.name}"
    loop = asyncio.get_running_loop()
    fences: list[float] = []
    announce: ev.Event | None = None
    standby_said = False
    while not ctx.stopped():
        if not leadership.leading:
            if not standby_said:
                log.info("%s: standby, not driving this stream: %s", where, leadership.standby_reason())
                standby_said = True
            await wait_for_any(STOP_CHECK_S, leadership.became_leader)
            continue
        standby_said = False
        ctx.metrics = ctx.start_metrics()
        try:
            stopped = await _drive_until_deposed(kube, ctx, leadership, settings, announce)
        except Fenced as exc:
            stopped = False
            if leadership.leading:
                now = loop.time()
                fences = [t for t in fences if now - t < FENCES_FORGOTTEN_AFTER_S] + [now]
                wait = backoff(settings.unavailable_backoff_s, len(fences))
                message = f"stopped driving: {exc}; starting again from the stored state in {wait:.0f}s"
                log.warning("%s: %s", where, message)
                announce = ev.Fenced(message=message)  # reported by the next run, with its condition
                await _wait(ctx, wait, leadership.became_standby)
                continue
        announce = None
        if stopped:
            return
        ctx.stop_metrics()  # the next leader exports them
        ctx.metrics = no_metrics
        log.warning(
            "%s: this operator lost the leader Lease: it stopped driving the stream at once; a recorded "
            "batch stays in status.pending and the next leader resumes it, adopting its Job",
            where,
        )


async def _drive_until_deposed(
    kube: AsyncKubeApi,
    ctx: StreamContext,
    leadership: Leadership,
    settings: DriverSettings,
    announce: ev.Event | None,
) -> bool:
    """Run the loop until it stops (True) or the Lease is lost (False: the loop is cancelled)."""
    run = asyncio.create_task(run_cluster_stream(kube, ctx, settings, announce))
    deposed = asyncio.ensure_future(leadership.became_standby.wait())
    try:
        await asyncio.wait({run, deposed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        deposed.cancel()
        if not run.done():
            run.cancel()
            # Whatever the cancelled loop raises on its way out (its writes are refused now).
            with contextlib.suppress(asyncio.CancelledError, Fenced):
                await run
    if run.cancelled():
        return False
    exc = run.exception()
    if isinstance(exc, Fenced) and not leadership.leading:
        return False  # refused for want of the Lease: the same as being cancelled
    run.result()  # a fencing (or any other error) goes to the caller
    return True


async def _wait(ctx: StreamContext, seconds: float, wake: asyncio.Event) -> None:
    """Up to ``seconds``, ended early by ``wake`` or a stop."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not ctx.stopped():
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0 or await wait_for_any(min(remaining, STOP_CHECK_S), wake):
            return
