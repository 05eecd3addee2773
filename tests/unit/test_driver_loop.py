"""The driver loop with in-memory fakes of every port (directstream.operator.testing): the real
loop, driver and planning core, no servers, milliseconds per test."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from directstream.executor.contract import ExecutorResult, WorkUnit
from directstream.operator.core import events as ev
from directstream.operator.core.errors import Fenced
from directstream.operator.core.spec import StreamSpec, parse_spec
from directstream.operator.core.state import StreamState
from directstream.operator.driver import DriverSettings, RunMode, run_stream
from directstream.operator.driver.outcomes import RunOutcome
from directstream.operator.driver.settings import backoff
from directstream.operator.testing import FakeKafka, MemoryHost, MemoryState, refused, succeed

FAST = DriverSettings(
    retry_backoff_s=(0.5, 1.0, 2.0),
    unavailable_backoff_s=(1.0, 3.0),
    unavailable_failures_before_exit=3,
    failed_retry_s=7.0,
)
T0, T1 = ("t", 0), ("t", 1)


def spec(**fields: Any) -> StreamSpec:
    doc: dict[str, Any] = {
        "kafka": {"bootstrapServers": "fake:9092"},
        "topics": ["t"],
        "batchInterval": "5s",
        "processor": {"sink": "count"},
    }
    doc.update(fields)
    return parse_spec("clicks", doc)


def host_for(stream: StreamSpec, kafka: FakeKafka, **kwargs: Any) -> MemoryHost:
    return MemoryHost(stream, kafka=kafka, settings=kwargs.pop("settings", FAST), **kwargs)


def run(host: MemoryHost, mode: RunMode = RunMode.FOREVER) -> RunOutcome:
    host.mode = mode
    return asyncio.run(run_stream(host, mode, host.settings, clock=host.clock))


def test_until_caught_up_commits_every_range_once_after_recording_it():
    kafka = FakeKafka({T0: 30, T1: 12})
    host = host_for(spec(), kafka)
    outcome = run(host, RunMode.UNTIL_CAUGHT_UP)
    assert (outcome.ok, outcome.reason) == (True, "caught-up")
    assert host.store.state.committed == {T0: 30, T1: 12}
    assert kafka.groups["clicks"] == {T0: 30, T1: 12}, "the group agrees with the stored offsets"
    (launch,) = host.launcher.launches
    recorded = launch.recorded.pending
    assert recorded is not None, "the plan was durable before any executor started"
    assert {(r.topic, r.partition): (r.from_offset, r.until_offset) for r in recorded.plan.ranges} == {
        T0: (0, 30),
        T1: (0, 12),
    }
    assert [type(e) for e in host.events if not isinstance(e, ev.Started)] == [
        ev.Planned,
        ev.Launched,
        ev.Committed,
        ev.CaughtUp,
    ]


def test_records_produced_after_the_start_are_not_waited_for():
    kafka = FakeKafka({T0: 10})
    host = host_for(spec(), kafka)

    def produce_more(unit: WorkUnit) -> ExecutorResult:
        kafka.produce(T0, 5)  # arrives while the batch runs
        return succeed(unit)

    host.launcher.script = produce_more
    assert run(host, RunMode.UNTIL_CAUGHT_UP).reason == "caught-up"
    assert host.store.state.committed == {T0: 10}


def test_a_failed_attempt_is_retried_with_identical_ranges_and_growing_backoff():
    kafka = FakeKafka({T0: 40, T1: 40})
    host = host_for(spec(maxAttempts=5, executors={"max": 2}), kafka)
    host.launcher.fail_attempts(3)
    assert run(host, RunMode.UNTIL_CAUGHT_UP).ok
    attempts = [[(u.attempt, u.index, u.ranges) for u in launch.units] for launch in host.launcher.launches]
    assert len(attempts) == 4
    assert all([(i, r) for _, i, r in a] == [(i, r) for _, i, r in attempts[0]] for a in attempts)
    assert [a[0][0] for a in attempts] == [1, 2, 3, 4]
    assert host.sleeps == [0.5, 1.0, 2.0], "the backoff doubles as configured"
    retries = host.of_type(ev.Retrying)
    assert [e.attempt for e in retries if isinstance(e, ev.Retrying)] == [2, 3, 4]
    assert host.store.state.committed == {T0: 40, T1: 40}
    assert host.store.state.ledger[-1].attempts == 4


def test_backoff_stops_growing_at_its_last_step_and_max_attempts_gives_up():
    assert [backoff((1.0, 2.0, 4.0), n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    kafka = FakeKafka({T0: 10})
    host = host_for(spec(maxAttempts=5), kafka)
    host.launcher.fail_attempts(99)
    outcome = run(host, RunMode.UNTIL_CAUGHT_UP)
    assert (outcome.ok, outcome.reason) == (False, "batch-failed")
    assert host.sleeps == [0.5, 1.0, 2.0, 2.0]
    assert host.store.state.committed == {}, "nothing committed"
    assert host.store.state.pending is not None and host.store.state.pending.attempt == 6
    assert kafka.groups == {}
    (gave_up,) = host.of_type(ev.BatchGaveUp)
    assert "failed 5 time(s)" in gave_up.message and "boom" in gave_up.message


def test_the_operator_waits_for_a_change_after_a_batch_fails_for_good():
    kafka = FakeKafka({T0: 10})
    host = host_for(spec(maxAttempts=1), kafka, policy="cluster", max_turns=3)
    host.launcher.fail_attempts(99)
    outcome = run(host)
    assert outcome.reason == "stopped"
    assert host.waits and set(host.waits) == {FAST.failed_retry_s}
    assert host.store.state.committed == {}


def test_a_reset_is_applied_once_per_id_at_a_batch_boundary():
    kafka = FakeKafka({T0: 20})
    kafka.groups["clicks"] = {T0: 20}
    state = StreamState(committed={T0: 20}, next_batch_id=3)
    stream = spec(reset={"id": "r1", "to": "earliest"})
    host = host_for(stream, kafka, state=MemoryState(state), max_turns=4)
    run(host)
    rewinds = host.of_type(ev.Rewound)
    assert len(rewinds) == 1, "the same reset id is applied once"
    assert host.store.state.applied_reset == "r1"
    assert host.store.state.committed == {T0: 20}, "rewound to 0, then read again up to 20"
    first_plan = host.launcher.launches[0].recorded.pending
    assert first_plan is not None and first_plan.plan.ranges[0].from_offset == 0
    assert kafka.commits[0] == {T0: 0}, "the rewind reached the group before the batch"


def test_a_drifted_group_is_detected_and_put_right():
    kafka = FakeKafka({T0: 50})
    kafka.groups["clicks"] = {T0: 40}
    state = StreamState(committed={T0: 50}, next_batch_id=5)
    host = host_for(spec(), kafka, state=MemoryState(state))
    run(host, RunMode.ONCE)
    (drift,) = host.of_type(ev.Drift)
    assert "stored 50 group 40" in drift.message
    assert kafka.groups["clicks"] == {T0: 50}


def test_a_new_stream_starts_from_its_groups_offsets():
    kafka = FakeKafka({T0: 50})
    kafka.groups["clicks"] = {T0: 45}
    host = host_for(spec(), kafka)
    run(host, RunMode.UNTIL_CAUGHT_UP)
    plan = host.launcher.launches[0].recorded.pending
    assert plan is not None and plan.plan.ranges[0].from_offset == 45


def test_suspend_stops_at_a_boundary_and_says_so_once():
    kafka = FakeKafka({T0: 10})
    host = host_for(spec(suspend=True), kafka, policy="cluster", max_turns=5)
    run(host)
    assert len(host.of_type(ev.Suspended)) == 1
    assert host.launcher.launches == []
    assert isinstance(host.events[-1], ev.Stopped)
    local = host_for(spec(suspend=True), kafka)
    assert (run(local).ok, run(local).reason) == (True, "suspended")


def test_a_stop_ends_the_run_at_a_batch_boundary_after_the_commit():
    kafka = FakeKafka({T0: 10})
    host = host_for(spec(), kafka, max_turns=1)
    outcome = run(host)
    assert outcome.reason == "stopped"
    assert host.store.state.committed == {T0: 10}, "the running batch finished and committed first"


def test_the_schedule_ticks_every_interval_and_runs_a_backlog_at_once():
    kafka = FakeKafka({T0: 100})
    stream = spec(rate={"maxPerPartition": 4})  # 4/s x 5 s: 20 records a batch, the rest waits
    host = host_for(stream, kafka, max_turns=3)
    run(host)
    assert [launch.units[0].ranges[0].count for launch in host.launcher.launches] == [20, 20, 20]
    assert host.pauses == [], "a backlog starts the next batch without waiting"
    idle = host_for(spec(), FakeKafka({T0: 0}), max_turns=3)
    run(idle)
    assert idle.pauses == [pytest.approx(5.0)] * 3
    kinds = [type(e) for e in idle.events if isinstance(e, ev.Committed | ev.Idle)]
    assert kinds == [ev.Committed, ev.Idle, ev.Idle], "the new partition's position, then nothing new"


def test_data_loss_fail_moves_nothing_and_earliest_skips_and_counts():
    kafka = FakeKafka({T0: 100})
    kafka.delete_records(T0, 60)
    state = StreamState(committed={T0: 40}, next_batch_id=2)
    failing = host_for(spec(onDataLoss="fail"), kafka, state=MemoryState(state))
    outcome = run(failing, RunMode.UNTIL_CAUGHT_UP)
    assert (outcome.ok, outcome.reason) == (False, "data-loss")
    assert failing.store.state.committed == {T0: 40} and failing.launcher.launches == []
    (refusal,) = failing.of_type(ev.DataLossRefused)
    assert "t[0]" in refusal.message and "onDataLoss: fail" in refusal.message
    skipping = host_for(spec(onDataLoss="earliest"), kafka, state=MemoryState(state))
    assert run(skipping, RunMode.UNTIL_CAUGHT_UP).ok
    (skipped,) = skipping.of_type(ev.DataLossSkipped)
    assert isinstance(skipped, ev.DataLossSkipped) and skipped.lost == 20
    assert skipping.launcher.launches[0].units[0].ranges[0].from_offset == 60
    assert skipping.store.state.committed == {T0: 100}


def outage_after_first_launch(host: MemoryHost, failing_requests: int, more_records: int = 0) -> None:
    """Kafka goes away while the first batch runs (its group commit fails too)."""
    kafka = host.kafka

    def script(unit: WorkUnit) -> ExecutorResult:
        if unit.batch_id == 1:
            kafka.produce(T0, more_records)
            kafka.fail_next(failing_requests)
        return succeed(unit)

    host.launcher.script = script


def test_kafka_unavailable_then_back_is_retried_with_backoff():
    host = host_for(spec(), FakeKafka({T0: 10}), max_turns=4)
    outage_after_first_launch(host, failing_requests=3, more_records=5)
    assert run(host).reason == "stopped"
    (drift,) = host.of_type(ev.Drift)
    assert "could not be updated" in drift.message, "the batch committed; the group was behind"
    assert len(host.of_type(ev.KafkaUnreachable)) == 2
    assert host.pauses[:3] == [pytest.approx(5.0), 1.0, 3.0], "a tick, then the unavailable backoff"
    assert host.store.state.committed == {T0: 15}
    assert host.kafka.groups["clicks"] == {T0: 15}, "the group caught up at the next commit"


def test_a_bounded_local_run_gives_up_after_repeated_outages_and_an_unreachable_start_exits():
    stream = spec(rate={"maxPerPartition": 1})  # 5 records a batch: two batches to catch up
    host = host_for(stream, FakeKafka({T0: 10}))
    outage_after_first_launch(host, failing_requests=100)
    outcome = run(host, RunMode.UNTIL_CAUGHT_UP)
    assert (outcome.ok, outcome.reason) == (False, "kafka-unavailable")
    assert host.pauses == [1.0, 3.0], "retried until the third failure in a row"
    assert host.store.state.committed == {T0: 5}
    fresh = host_for(spec(), FakeKafka({T0: 10}))
    fresh.kafka.fail_next(1)
    assert run(fresh).reason == "kafka-unavailable", "a stream that cannot even start exits at once"


def test_the_operator_rides_out_an_outage_before_the_first_batch():
    kafka = FakeKafka({T0: 10})
    kafka.fail_next(3)
    host = host_for(spec(), kafka, policy="cluster", max_turns=5)
    run(host)
    assert host.store.state.committed == {T0: 10}
    assert [type(e) for e in host.events[:3]] == [ev.KafkaUnreachable] * 3


def test_a_refused_job_keeps_the_plan_and_runs_the_same_ranges_again():
    kafka = FakeKafka({T0: 10})
    host = host_for(spec(), kafka, policy="cluster", max_turns=3)
    calls = 0

    def refuse_once(unit: WorkUnit) -> ExecutorResult | Exception:
        nonlocal calls
        calls += 1
        return refused() if calls == 1 else succeed(unit)

    host.launcher.script = refuse_once
    run(host)
    assert len(host.of_type(ev.KubeApiRefused)) == 1
    first, second = host.launcher.launches[:2]
    assert first.units[0].ranges == second.units[0].ranges
    assert host.store.state.committed == {T0: 10}
    assert FAST.kube_retry_s in host.waits


def test_a_spec_edit_takes_effect_at_the_next_boundary():
    kafka = FakeKafka({T0: 10})
    host = host_for(spec(), kafka, max_turns=2)
    run(host)
    host.spec = replace(host.spec, suspend=True)
    host.turns_left = 2
    assert run(host).reason == "suspended"


class FencingState(MemoryState):
    """The status store's behaviour once another writer moved the state: the save is refused."""

    def __init__(self, fence_at_save: int) -> None:
        super().__init__()
        self.fence_at_save = fence_at_save

    async def save(self, state: StreamState) -> None:
        if len(self.saved) + 1 >= self.fence_at_save:
            raise Fenced("the status was changed by another writer since this operator read it")
        await super().save(state)


@pytest.mark.parametrize(("fence_at", "launched"), [(1, 0), (2, 1)])
def test_a_fenced_save_stops_the_loop_without_retrying_or_committing(fence_at: int, launched: int):
    """Fenced is never taken for a refused API call (which the loop retries with the state it
    holds): it leaves the loop, nothing more is launched, and the group is not committed."""
    kafka = FakeKafka({T0: 10})
    store = FencingState(fence_at_save=fence_at)  # 1: the plan's record, 2: the commit
    host = host_for(spec(), kafka, state=store, policy="cluster", max_turns=20)
    with pytest.raises(Fenced):
        run(host)
    assert len(host.launcher.launches) == launched
    assert kafka.groups.get("clicks", {}) == {}, "nothing committed to the Kafka group"
    assert not host.of_type(ev.KubeApiRefused) and not host.halts
