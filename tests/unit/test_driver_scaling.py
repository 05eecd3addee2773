"""Lag-driven scaling in the driver loop, with the in-memory fakes: the real loop, driver, planner
and policy; the launcher's work takes fake time (1,000 records per executor-second)."""

from __future__ import annotations

import asyncio
from typing import Any

from directstream.executor.contract import ExecutorResult
from directstream.operator.core import events as ev
from directstream.operator.core.pinning import AttemptRun, pin
from directstream.operator.core.planning import PlanInputs, Watermarks, plan_batch
from directstream.operator.core.scaling import ScaleState
from directstream.operator.core.spec import StreamSpec, parse_spec
from directstream.operator.core.state import StreamState
from directstream.operator.driver import RunMode, run_stream
from directstream.operator.testing import FakeKafka, FakeScaler, MemoryHost, MemoryState

PER_EXECUTOR = 1_000.0  # records per second one fake executor processes
TPS = [("t", p) for p in range(4)]


def spec(executors: dict[str, Any], **fields: Any) -> StreamSpec:
    doc: dict[str, Any] = {
        "kafka": {"bootstrapServers": "fake:9092"},
        "topics": ["t"],
        "batchInterval": "1s",
        "rate": {"maxPerPartition": 2_000},
        "executors": executors,
        "processor": {"sink": "count"},
    }
    doc.update(fields)
    return parse_spec("clicks", doc)


def timed_host(stream: StreamSpec, kafka: FakeKafka, **kw: Any) -> MemoryHost:
    """Units run in parallel: an attempt takes as long as its largest unit at PER_EXECUTOR."""
    host = MemoryHost(stream, kafka=kafka, **kw)
    run_units = host.launcher.run

    async def run(attempt: AttemptRun) -> list[ExecutorResult]:
        results = await run_units(attempt)
        host.clock.advance(max(sum(r.count for r in u.ranges) for u in attempt.units) / PER_EXECUTOR)
        return results

    host.launcher.run = run  # type: ignore[method-assign]
    return host


def scaled(host: MemoryHost) -> list[ev.ExecutorsScaled]:
    return [e for e in host.events if isinstance(e, ev.ExecutorsScaled)]


def test_a_pool_grows_under_a_backlog_holds_while_catching_up_and_shrinks_once_caught_up():
    kafka = FakeKafka(dict.fromkeys(TPS, 20_000))
    scaler = FakeScaler()
    host = timed_host(spec({"mode": "pool", "min": 1, "max": 4}), kafka, scaler=scaler, max_turns=80)
    asyncio.run(run_stream(host, RunMode.FOREVER, host.settings, clock=host.clock))

    assert host.store.state.committed == dict.fromkeys(TPS, 20_000), "every record committed once"
    changes = [(e.previous, e.target) for e in scaled(host)]
    assert changes == [(0, 1), (1, 4), (4, 1)], changes
    assert "lag 72k records" in scaled(host)[1].message and "1 -> 4" in scaled(host)[1].message
    units = [len(launch.units) for launch in host.launcher.launches]
    assert units[0] == 1 and set(units[1:]) == {4}, "the target is how many units a batch gets"
    # Down only after the backlog is gone: every batch before the scale-down ran with 4.
    down = host.events.index(scaled(host)[2])
    first_idle = next(i for i, e in enumerate(host.events) if isinstance(e, ev.Idle))
    assert down > first_idle, "never down while catching up"
    assert host.store.state.scale is not None and host.store.state.scale.target == 1
    assert host.store.state.scale.current == 1, "the idle scale-down is saved"
    assert scaler.resizes[-1] == 1 and 4 in scaler.resizes
    assert [e.executors for e in host.store.state.ledger][-1] == 4, "the ledger records executors"


def test_a_recorded_pool_batch_replays_its_layout_at_its_count_without_a_deferred_spec_change():
    stream = spec({"mode": "pool", "min": 1, "max": 4})
    marks = {tp: Watermarks(0, 1_000) for tp in TPS}
    plan = plan_batch(stream, PlanInputs(committed={}, watermarks=marks, first_batch=True), 1)
    state = StreamState().with_plan(plan, 0.0, pin(stream, plan, units=2))
    state = StreamState(
        committed=state.committed,
        pending=state.pending,
        next_batch_id=2,
        scale=ScaleState(2, "lag", 0.0),
    )
    kafka = FakeKafka(dict.fromkeys(TPS, 1_000))
    scaler = FakeScaler()
    host = timed_host(stream, kafka, state=MemoryState(state), scaler=scaler)
    asyncio.run(run_stream(host, RunMode.ONCE, host.settings, clock=host.clock))
    (launch,) = host.launcher.launches
    assert len(launch.units) == 2, "the pinned layout, not a new split"
    assert scaler.resizes[0] == 2, "the pool resumes at the count it had"
    assert not host.of_type(ev.SpecChangeDeferred), "the spec did not change"


def test_job_mode_keeps_executors_max_units_and_no_scale():
    kafka = FakeKafka(dict.fromkeys(TPS, 5_000))
    scaler = FakeScaler()
    host = timed_host(spec({"mode": "job", "min": 1, "max": 4}), kafka, scaler=scaler)
    asyncio.run(run_stream(host, RunMode.UNTIL_CAUGHT_UP, host.settings, clock=host.clock))
    assert {len(launch.units) for launch in host.launcher.launches} == {4}
    assert scaler.resizes == [] and host.store.state.scale is None and not scaled(host)
