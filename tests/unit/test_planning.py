"""Invariants of the planning core, property-based where they matter."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from directstream.executor.contract import OffsetRange
from directstream.operator.core.planning import (
    DataLossError,
    PlanInputs,
    Watermarks,
    plan_batch,
    proportional_shares,
    split_work,
)
from directstream.operator.core.rate import RateState, next_rate
from directstream.operator.core.spec import (
    BackpressureSpec,
    KafkaSpec,
    RateSpec,
    StartingOffsets,
    StreamSpec,
)
from directstream.operator.core.state import LedgerEntry, StreamState

SPEC = StreamSpec(name="s", kafka=KafkaSpec("127.0.0.1:9092"), topics=("t",), group_id="s")


def tps(n: int) -> list[tuple[str, int]]:
    return [("t", p) for p in range(n)]


growth = st.lists(st.lists(st.integers(0, 500), min_size=3, max_size=3), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(growth=growth, limit=st.sampled_from([0, 0.5, 3, 40]), first_cap=st.sampled_from([0, 1, 100]))
def test_batches_are_contiguous_never_pass_latest_and_respect_caps(growth, limit, first_cap):
    spec = replace(
        SPEC,
        batch_interval_seconds=2.0,
        rate=RateSpec(max_per_partition=limit, first_batch_max_records=first_cap),
    )
    latest = {tp: 0 for tp in tps(3)}
    committed: dict[tuple[str, int], int] = {}
    for batch_id, increments in enumerate(growth, start=1):
        for tp, inc in zip(tps(3), increments, strict=True):
            latest[tp] += inc
        marks = {tp: Watermarks(0, end) for tp, end in latest.items()}
        first = not committed
        plan = plan_batch(spec, PlanInputs(committed, marks, first_batch=first), batch_id)
        for r in plan.ranges:
            tp = (r.topic, r.partition)
            assert r.from_offset == committed.get(tp, 0), "a batch must start where the last one committed"
            assert r.until_offset <= latest[tp], "a batch must never pass latest"
            if limit:
                assert r.count <= max(1, int(limit * 2.0))
        if first and first_cap:
            assert plan.offsets <= first_cap
        committed.update(plan.next_offsets())


@settings(max_examples=300, deadline=None)
@given(
    counts=st.lists(st.integers(0, 10_000), min_size=1, max_size=20),
    max_units=st.integers(1, 8),
    max_records=st.sampled_from([0, 1, 7, 1000]),
)
def test_work_units_cover_the_plan_exactly(counts, max_units, max_records):
    ranges = tuple(OffsetRange("t", p, 100 * p, 100 * p + c) for p, c in enumerate(counts))
    units = split_work(ranges, max_units, max_records)
    assert len(units) <= max_units
    covered: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for unit in units:
        assert unit, "no empty work units"
        partitions = [piece.partition for piece in unit]
        assert len(partitions) == len(set(partitions)), "an executor reads each partition once"
        for piece in unit:
            assert piece.count > 0
            if max_records:
                # Never more pieces than units (two in one executor): then fewer, larger ones.
                original = next(r for r in ranges if r.partition == piece.partition)
                assert piece.count <= max(max_records, -(-original.count // max_units))
            covered[piece.partition].append((piece.from_offset, piece.until_offset))
    for r in ranges:
        pieces = sorted(covered.get(r.partition, []))
        if max_records and r.count:
            assert len(pieces) == min(-(-r.count // max_records), max_units)
        if r.count == 0:
            assert not pieces
            continue
        assert pieces[0][0] == r.from_offset and pieces[-1][1] == r.until_offset
        assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces)), "gap or overlap"
    assert split_work(ranges, max_units, max_records) == units, "the split must be deterministic"


def test_work_units_are_balanced_by_record_count():
    ranges = (OffsetRange("t", 0, 0, 9000), OffsetRange("t", 1, 0, 1000), OffsetRange("t", 2, 0, 1000))
    units = split_work(ranges, 3, max_records=3000)
    loads = sorted(sum(r.count for r in u) for u in units)
    assert loads == [3000, 4000, 5000] or max(loads) - min(loads) <= 2000
    assert sum(loads) == 11000


@given(total=st.integers(0, 1000), weights=st.lists(st.integers(0, 500), min_size=1, max_size=10))
def test_proportional_shares(total, weights):
    named = {("t", i): w for i, w in enumerate(weights)}
    shares = proportional_shares(total, named)
    assert sum(shares.values()) == min(total, sum(weights))
    assert all(0 <= shares[tp] <= named[tp] for tp in named)


def test_starting_offsets_resolution():
    marks = {("t", 0): Watermarks(10, 50), ("t", 1): Watermarks(0, 30)}
    first = PlanInputs({}, marks, first_batch=True)
    assert [r.from_offset for r in plan_batch(SPEC, first, 1).ranges] == [10, 0]
    latest = replace(SPEC, starting_offsets=StartingOffsets("latest"))
    assert [r.from_offset for r in plan_batch(latest, first, 1).ranges] == [50, 30]
    by_time = replace(SPEC, starting_offsets=StartingOffsets("timestamp", timestamp_ms=1))
    resolved = PlanInputs({}, marks, timestamp_offsets={("t", 0): 20}, first_batch=True)
    assert [r.from_offset for r in plan_batch(by_time, resolved, 1).ranges] == [20, 30]
    explicit = replace(SPEC, starting_offsets=StartingOffsets("offsets", offsets={"t": {1: 7}}))
    assert [r.from_offset for r in plan_batch(explicit, first, 1).ranges] == [10, 7]
    # A partition that appears after the first batch starts at its earliest offset.
    later = PlanInputs({("t", 0): 50}, marks, first_batch=False)
    assert [r.from_offset for r in plan_batch(latest, later, 2).ranges] == [50, 0]
    assert plan_batch(latest, later, 2).new_partitions == (("t", 1),)


def test_data_loss_fail_names_the_lost_range_and_earliest_skips():
    marks = {("t", 0): Watermarks(100, 150)}
    with pytest.raises(DataLossError) as info:
        plan_batch(SPEC, PlanInputs({("t", 0): 40}, marks), 3)
    assert "t[0] offsets 40..100 (60 records)" in str(info.value)
    skipping = replace(SPEC, on_data_loss="earliest")
    plan = plan_batch(skipping, PlanInputs({("t", 0): 40}, marks), 3)
    assert plan.ranges == (OffsetRange("t", 0, 100, 150),)
    assert plan.data_loss[0].lost == 60


def test_stop_offsets_end_the_range():
    marks = {("t", 0): Watermarks(0, 100), ("t", 1): Watermarks(0, 100)}
    plan = plan_batch(SPEC, PlanInputs({}, marks, stop_offsets={("t", 0): 60}), 1)
    assert [(r.from_offset, r.until_offset) for r in plan.ranges] == [(0, 60), (0, 0)]


def test_backpressure_splits_the_estimated_rate_by_lag_with_a_floor():
    spec = replace(
        SPEC,
        batch_interval_seconds=1.0,
        rate=RateSpec(backpressure=BackpressureSpec(enabled=True, min_per_partition=10)),
    )
    marks = {("t", 0): Watermarks(0, 3000), ("t", 1): Watermarks(0, 1000), ("t", 2): Watermarks(0, 5)}
    plan = plan_batch(spec, PlanInputs({}, marks, backpressure_rate=400.0), 1)
    assert [r.count for r in plan.ranges] == [299, 99, 5]
    assert plan.rate_capped


def test_pid_rate_moves_towards_the_processing_rate():
    state = RateState()
    state = next_rate(
        state,
        now=1.0,
        records=1000,
        processing_seconds=1.0,
        scheduling_delay_seconds=0,
        interval_seconds=1.0,
        min_rate=10,
    )
    assert state.rate == 1000
    for step in range(2, 8):
        state = next_rate(
            state,
            now=float(step),
            records=500,
            processing_seconds=1.0,
            scheduling_delay_seconds=0.5,
            interval_seconds=1.0,
            min_rate=10,
        )
    assert state.rate is not None and 10 <= state.rate < 500
    assert (
        next_rate(
            state,
            now=100.0,
            records=0,
            processing_seconds=1.0,
            scheduling_delay_seconds=0,
            interval_seconds=1.0,
            min_rate=10,
        )
        == state
    )


@settings(max_examples=100, deadline=None)
@given(growth=growth, lost=st.booleans())
def test_state_round_trips_through_json_with_a_compact_plan(growth, lost):
    spec = replace(SPEC, on_data_loss="earliest")
    latest = dict.fromkeys(tps(3), 0)
    state = StreamState()
    for batch_id, increments in enumerate(growth, start=1):
        for tp, inc in zip(tps(3), increments, strict=True):
            latest[tp] += inc
        earliest = 5 if lost and batch_id == 2 else 0
        marks = {tp: Watermarks(min(earliest, end), end) for tp, end in latest.items()}
        plan = plan_batch(spec, PlanInputs(state.committed, marks, first_batch=batch_id == 1), batch_id)
        state = state.with_plan(plan, now=float(batch_id))
        assert StreamState.from_json(state.to_json()) == state, "the recorded plan must read back identically"
        state = state.with_commit(LedgerEntry(batch_id, 1, len(plan.ranges), plan.offsets, 0, 0.1, 1.0))
        assert StreamState.from_json(state.to_json()) == state
