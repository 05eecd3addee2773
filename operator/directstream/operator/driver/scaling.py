"""Lag-driven scaling of a pool, between the plan of a batch and its split into work units.

The policy is pure (``core/scaling.py``); this applies it: it feeds the policy what the driver
knows (lag, the ledger's last batches, the plan), reports a change, and resizes the pool.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..core import events as ev
from ..core.planning import BatchPlan, TopicPartition, split_work
from ..core.scaling import BatchSample, ScaleInputs, decide
from ..core.spec import StreamSpec
from ..core.state import PendingBatch, StreamState
from ..core.status import lag_of
from .ports import ExecutorScalePort, Observer


def scale_inputs(
    spec: StreamSpec, state: StreamState, plan: BatchPlan, latest: Mapping[TopicPartition, int], now: float
) -> ScaleInputs:
    lags = lag_of(state.committed, latest)
    ex = spec.executors
    per_partition = spec.rate.max_per_partition
    behind = sum(1 for lag in lags.values() if lag > 0)
    return ScaleInputs(
        lag=sum(lags.values()),
        # Retried batches ran with failures and backoff in their time: not a measure of the rate.
        samples=[BatchSample(e.records, e.seconds, e.executors) for e in state.ledger if e.attempts == 1],
        interval_s=spec.batch_interval_seconds,
        minimum=ex.min,
        maximum=ex.max,
        ceiling=len(split_work(plan.ranges, ex.max, ex.max_records)),
        now=now,
        rate_limit=per_partition * behind if per_partition > 0 and behind else None,
    )


async def rescale(
    spec: StreamSpec,
    state: StreamState,
    plan: BatchPlan,
    latest: Mapping[TopicPartition, int],
    *,
    scaler: ExecutorScalePort | None,
    now: float,
    observe: Observer,
) -> StreamState:
    """``state`` with the pool's scale decided for ``plan`` (the next batch); the pool resized.
    A stream not in pool mode has no scale."""
    if spec.executors.mode != "pool" or scaler is None:
        return state if state.scale is None else dataclasses.replace(state, scale=None)
    before = state.scale
    after = decide(before, scale_inputs(spec, state, plan, latest, now))
    if before is None or after.target != before.target:
        previous = scaler.executors() if before is None else before.target
        observe(
            ev.ExecutorsScaled(message=f"executors: {after.reason}", previous=previous, target=after.target)
        )
    await scaler.resize(after.target)
    return dataclasses.replace(state, scale=dataclasses.replace(after, current=scaler.executors()))


async def resume_scale(spec: StreamSpec, state: StreamState, scaler: ExecutorScalePort | None) -> None:
    """A restarted driver's pool starts at the count it had (a recorded batch replays first)."""
    if spec.executors.mode == "pool" and scaler is not None and state.scale is not None:
        await scaler.resize(min(max(state.scale.target, spec.executors.min), spec.executors.max))


def units_for(spec: StreamSpec, state: StreamState) -> int | None:
    """How many work units the next batch may have: a pool's scaled count, else ``executors.max``."""
    if spec.executors.mode == "pool" and state.scale is not None:
        return state.scale.target
    return None


def pinned_units(spec: StreamSpec, pending: PendingBatch) -> int | None:
    """The count a recorded pool batch was split for, to compare its pin with the live spec's."""
    if pending.pinned is None or spec.executors.mode != "pool":
        return None
    return max(1, len(pending.pinned.layout))


def scale_changed(before: StreamState, after: StreamState) -> bool:
    """The target differs (or a scale came or went): worth a save even on an idle turn."""

    def target(state: StreamState) -> int | None:
        return None if state.scale is None else state.scale.target

    return target(before) != target(after)
