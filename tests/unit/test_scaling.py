"""The pool's lag-driven scaling policy (core/scaling.py): pure, with the clock as an input."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from directstream.operator.core.scaling import (
    BatchSample,
    ScaleInputs,
    ScaleState,
    cooldown_seconds,
    decide,
    per_executor_rate,
)

# 1,000 records per executor-second, measured over batches of 1 and 2 executors.
MEASURED = (BatchSample(1_000, 1.0, 1), BatchSample(2_000, 1.0, 2))
INTERVAL = 1.0


def inputs(lag: int, now: float, **kw: object) -> ScaleInputs:
    fields: dict[str, object] = {
        "lag": lag,
        "samples": MEASURED,
        "interval_s": INTERVAL,
        "minimum": 1,
        "maximum": 8,
        "ceiling": 8,
        "now": now,
    }
    fields.update(kw)
    return ScaleInputs(**fields)  # type: ignore[arg-type]


def at(target: int, changed_at: float = 0.0, calm_since: float | None = None) -> ScaleState:
    return ScaleState(target, "", changed_at, calm_since)


def test_the_rate_is_records_per_executor_second_of_the_last_batches_that_read_records():
    assert per_executor_rate(MEASURED) == 1_000.0
    assert per_executor_rate([BatchSample(0, 0.0, 0), BatchSample(0, 1.0, 2)]) is None
    old = [BatchSample(10, 1.0, 1)] * 5
    assert per_executor_rate(old + [BatchSample(5_000, 1.0, 1)] * 5) == 5_000.0, "only the last 5"


def test_a_new_pool_starts_at_min_and_says_so():
    first = decide(None, inputs(lag=0, now=100.0, minimum=2))
    assert first.target == 2 and "executors.min" in first.reason


def test_a_backlog_that_cannot_drain_within_three_intervals_scales_up_at_once():
    # 12,000 records at 1,000/s per executor with 1 executor: 12 s > 3 intervals.
    up = decide(at(1), inputs(lag=12_000, now=10.0))
    assert up.target == 4, "ceil(12,000 / 3 s / 1,000 per executor)"
    assert up.reason == "lag 12k records, ~12 s at the measured rate: 1 -> 4"
    assert up.changed_at == 10.0 and up.calm_since is None


def test_a_backlog_that_drains_within_three_intervals_holds():
    assert decide(at(2), inputs(lag=5_000, now=10.0)).target == 2  # 2.5 s


def test_up_is_bounded_by_max_and_by_the_work_units_of_the_batch():
    assert decide(at(1), inputs(lag=1_000_000, now=1.0)).target == 8
    assert decide(at(1), inputs(lag=1_000_000, now=1.0, ceiling=3)).target == 3, (
        "3 partitions whose ranges cannot split: a fourth executor would get no unit"
    )


def test_no_scale_up_when_the_rate_limit_and_not_the_executors_bounds_the_drain():
    # maxPerPartition lets 1,500 records/s through: 2 executors already read that fast.
    held = decide(at(2), inputs(lag=100_000, now=1.0, rate_limit=1_500.0))
    assert held.target == 2
    assert decide(at(1), inputs(lag=100_000, now=1.0, rate_limit=1_500.0)).target == 2


def test_never_down_while_catching_up_however_long_since_the_last_change():
    state = at(4, changed_at=0.0)
    for now in range(1, 200):
        # 6,000 left at 4 x 1,000/s: 1.5 s, more than one interval, so not caught up.
        state = decide(state, inputs(lag=6_000, now=float(now)))
        assert state.target == 4 and state.calm_since is None


def test_down_only_after_caught_up_for_the_cooldown_then_to_a_half_busy_count():
    wait = cooldown_seconds(INTERVAL)
    assert wait == 10.0
    state = decide(at(6, changed_at=0.0), inputs(lag=500, now=1.0))
    assert state.target == 6 and state.calm_since == 1.0
    now = 1.0
    while now < 1.0 + wait:
        state = decide(state, inputs(lag=500, now=now))
        assert state.target == 6, f"still cooling down at {now}"
        now += 1.0
    down = decide(state, inputs(lag=500, now=now))
    assert down.target == 1, "ceil(500 / (0.5 x 1,000 x 1 s))"
    assert down.reason.endswith(": 6 -> 1") and down.reason.startswith("caught up for 10 s")


def test_a_moment_of_backlog_restarts_the_cooldown():
    state = decide(at(4), inputs(lag=0, now=1.0))
    state = decide(state, inputs(lag=0, now=9.0))
    state = decide(state, inputs(lag=8_000, now=10.0))  # 2 s of work: catching up again
    assert state.calm_since is None
    state = decide(state, inputs(lag=0, now=11.0))
    assert decide(state, inputs(lag=0, now=20.0)).target == 4, "only 9 s calm since the backlog"
    assert decide(state, inputs(lag=0, now=21.0)).target == 1


def test_down_waits_the_cooldown_after_a_scale_up_too():
    state = decide(at(1), inputs(lag=12_000, now=10.0))
    assert state.target == 4
    state = decide(state, inputs(lag=0, now=11.0))
    assert decide(state, inputs(lag=0, now=20.0)).target == 4
    assert decide(state, inputs(lag=0, now=21.0)).target == 1


def test_without_a_measurement_the_count_holds():
    held = decide(at(2), inputs(lag=50_000, now=5.0, samples=()))
    assert held.target == 2 and held.calm_since is None


def test_new_bounds_apply_at_once():
    assert decide(at(6), inputs(lag=0, now=1.0, maximum=3)).target == 3
    raised = decide(at(1), inputs(lag=0, now=1.0, minimum=2))
    assert raised.target == 2 and raised.reason == "executors.min/max are now 2/8: 1 -> 2"


def test_the_state_survives_json():
    state = ScaleState(3, "why", 12.5, calm_since=13.0, current=2)
    assert ScaleState.from_json(state.to_json()) == state
    assert ScaleState.from_json(replace(state, calm_since=None).to_json()) == replace(state, calm_since=None)
    assert ScaleState.from_json(None) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 200_000), st.floats(0.05, 5.0)), min_size=1, max_size=60),
    st.integers(1, 4),
    st.integers(0, 6),
)
def test_bounds_hold_down_never_while_catching_up_and_changes_are_a_cooldown_apart_going_down(
    turns: list[tuple[int, float]], lo: int, extra: int
):
    hi = lo + extra
    state = decide(None, inputs(lag=0, now=0.0, minimum=lo, maximum=hi))
    now = 0.0
    last_change = 0.0
    for lag, step in turns:
        now += step
        before = state
        state = decide(state, inputs(lag=lag, now=now, minimum=lo, maximum=hi))
        assert lo <= state.target <= hi
        if state.target < before.target:
            assert lag <= 1_000 * before.target * INTERVAL, "down only when the lag drains in one interval"
            assert now - last_change >= cooldown_seconds(INTERVAL), "down only a cool-down after a change"
        if state.target != before.target:
            last_change = now


def test_steady_traffic_after_scaling_down_does_not_scale_up_again():
    # 1,800 records arrive per interval: the count that suffices is at most half busy, so the same
    # traffic (up to 2 x 3 = 6 times more) never asks for more again: no flapping.
    state = at(8, changed_at=0.0)
    targets = []
    for now in range(1, 120):
        state = decide(state, inputs(lag=1_800, now=float(now)))
        targets.append(state.target)
    assert targets[-1] == 4 and sorted(set(targets)) == [4, 8]
    assert targets == sorted(targets, reverse=True), "one step down, never back up"
