"""How many warm executors a pool keeps (pure): lag-driven scaling between executors.min and max.

Evaluated before each batch is split into work units (and on idle turns), from the lag, the last
batches' records and processing time, the batch interval and the count now:

- rate r: records per executor-second of the last batches (sum of records / sum of seconds x units);
- drain time at n executors: T = lag / min(r x n, rate limit);
- **up**, at once, when T > DRAIN_INTERVALS x interval: to ceil(min(lag / (DRAIN_INTERVALS x interval),
  rate limit) / r), so the backlog drains within that many intervals (never more executors than the
  rate limit lets work, than the batch has work units, or than max);
- **hold** while catching up (more than one interval of work waits): never down during a backlog;
- **down** only after caught up (the lag drains within one interval) for COOLDOWN_INTERVALS intervals
  (at least COOLDOWN_MIN_S) and as long since the last change: to ceil(lag / (HEADROOM x r x interval))
  executors, which would be at most half busy, so the next scale-up needs the arrival rate to grow
  2 x DRAIN_INTERVALS times: no flapping.

Without a measurement (no batch with records yet) the count holds. Everything is deterministic: the
clock is an input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

DRAIN_INTERVALS = 3.0  # a backlog must drain within this many batch intervals
COOLDOWN_INTERVALS = 10.0  # caught up this many intervals before scaling down
COOLDOWN_MIN_S = 5.0
HEADROOM = 0.5  # scale down only to a count that would be at most this busy
SAMPLES = 5  # the last batches the rate is measured over


@dataclass(frozen=True, slots=True)
class BatchSample:
    """One committed batch: its records, how long it ran, how many work units ran it."""

    records: int
    seconds: float
    executors: int


@dataclass(frozen=True, slots=True)
class ScaleInputs:
    lag: int  # records from the committed offsets to the latest, all partitions
    samples: Sequence[BatchSample]  # the last batches, oldest first
    interval_s: float
    minimum: int
    maximum: int
    ceiling: int  # the most work units the planner can make of the next batch (ranges split or not)
    now: float
    rate_limit: float | None = None  # records/s the planner lets through at most (maxPerPartition)


@dataclass(frozen=True, slots=True)
class ScaleState:
    """The policy's memory, kept in the stream state (a restart keeps the count and the cool-down)."""

    target: int
    reason: str
    changed_at: float
    calm_since: float | None = None  # caught up uninterruptedly since then
    current: int = 0  # executors running when last saved (what the pool has, not what it aims for)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "target": self.target,
            "current": self.current,
            "reason": self.reason,
            "changedAt": round(self.changed_at, 3),
        }
        if self.calm_since is not None:
            doc["calmSince"] = round(self.calm_since, 3)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> ScaleState | None:
        if not doc:
            return None
        calm = doc.get("calmSince")
        return cls(
            target=int(doc["target"]),
            reason=str(doc.get("reason", "")),
            changed_at=float(doc.get("changedAt", 0.0)),
            calm_since=None if calm is None else float(calm),
            current=int(doc.get("current", 0)),
        )


def per_executor_rate(samples: Sequence[BatchSample]) -> float | None:
    """Records per executor-second over the last ``SAMPLES`` batches that read records."""
    useful = [s for s in samples if s.records > 0 and s.seconds > 0 and s.executors > 0][-SAMPLES:]
    work = sum(s.seconds * s.executors for s in useful)
    return sum(s.records for s in useful) / work if useful else None


def cooldown_seconds(interval_s: float) -> float:
    return max(COOLDOWN_INTERVALS * interval_s, COOLDOWN_MIN_S)


def decide(state: ScaleState | None, inputs: ScaleInputs) -> ScaleState:
    """The next scale state; ``target`` differs from ``state.target`` only when the count changes."""
    now, lo, hi = inputs.now, inputs.minimum, inputs.maximum
    if state is None:
        return ScaleState(lo, f"starting with executors.min ({lo})", now, calm_since=now)
    n = state.target
    if not lo <= n <= hi:
        bounded = min(max(n, lo), hi)
        return _change(state, bounded, f"executors.min/max are now {lo}/{hi}: {n} -> {bounded}", now)
    rate = per_executor_rate(inputs.samples)
    if rate is None:
        return _calm(state, now) if inputs.lag == 0 else replace(state, calm_since=None)
    interval = inputs.interval_s
    throughput = _limited(rate * n, inputs.rate_limit)
    drain_s = inputs.lag / throughput
    if drain_s > DRAIN_INTERVALS * interval:
        demand = _limited(inputs.lag / (DRAIN_INTERVALS * interval), inputs.rate_limit)
        up = min(math.ceil(demand / rate), hi, max(inputs.ceiling, n))
        if up > n:
            why = f"lag {_count(inputs.lag)} records, ~{drain_s:.0f} s at the measured rate: {n} -> {up}"
            return _change(state, up, why, now, calm=False)
    if drain_s > interval:  # catching up: hold, and the cool-down starts again
        return replace(state, calm_since=None)
    state = _calm(state, now)
    assert state.calm_since is not None
    wait = cooldown_seconds(interval)
    if n == lo or now - state.calm_since < wait or now - state.changed_at < wait:
        return state
    down = max(lo, math.ceil(inputs.lag / (HEADROOM * rate * interval)))
    if down >= n:
        return state
    why = (
        f"caught up for {now - state.calm_since:.0f} s (lag {_count(inputs.lag)} records): "
        f"{down} suffice at the measured rate: {n} -> {down}"
    )
    return _change(state, down, why, now)


def _limited(rate: float, limit: float | None) -> float:
    return rate if limit is None or limit <= 0 else min(rate, limit)


def _calm(state: ScaleState, now: float) -> ScaleState:
    return state if state.calm_since is not None else replace(state, calm_since=now)


def _change(state: ScaleState, target: int, reason: str, now: float, *, calm: bool = True) -> ScaleState:
    return replace(state, target=target, reason=reason, changed_at=now, calm_since=now if calm else None)


def _count(records: int) -> str:
    """120000 -> '120k', 2500000 -> '2.5M' (a reason line stays short)."""
    if records >= 1_000_000:
        return f"{records / 1_000_000:.3g}M"
    if records >= 10_000:
        return f"{records / 1_000:.0f}k"
    return str(records)
