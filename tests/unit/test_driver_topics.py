"""Topic lifecycle through the real driver loop over in-memory fakes: topics deleted, no longer
matched, recreated, and recorded plans whose ranges retention deleted (milliseconds per test)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from directstream.executor.contract import ContractError, ExecutorResult, OffsetRange, WorkUnit
from directstream.operator.core import events as ev
from directstream.operator.core.planning import BatchPlan
from directstream.operator.core.spec import StreamSpec, parse_spec
from directstream.operator.core.state import StreamState
from directstream.operator.core.topic_lifecycle import TopicInfo, TopicRecord, compare_topics
from directstream.operator.driver import DriverSettings, RunMode, run_stream
from directstream.operator.driver.outcomes import RunOutcome
from directstream.operator.testing import FakeKafka, MemoryHost, MemoryState, succeed

FAST = DriverSettings(retry_backoff_s=(0.5,), unavailable_backoff_s=(1.0,), failed_retry_s=7.0)
A0, A1, B0 = ("a", 0), ("a", 1), ("b", 0)


def spec(**fields: Any) -> StreamSpec:
    doc: dict[str, Any] = {
        "kafka": {"bootstrapServers": "fake:9092"},
        "topicPattern": "^[ab]$",
        "batchInterval": "5s",
        "processor": {"sink": "count"},
    }
    doc.update(fields)
    if "topics" in fields:
        doc.pop("topicPattern")
    return parse_spec("clicks", doc)


def run(host: MemoryHost, mode: RunMode = RunMode.UNTIL_CAUGHT_UP) -> RunOutcome:
    host.mode = mode
    return asyncio.run(run_stream(host, mode, host.settings, clock=host.clock))


def caught_up(kafka: FakeKafka, stream: StreamSpec, mode: RunMode = RunMode.UNTIL_CAUGHT_UP) -> MemoryHost:
    host = MemoryHost(stream, kafka=kafka, settings=FAST)
    outcome = run(host, mode)
    assert outcome.ok, outcome.message
    return host


def again(host: MemoryHost, stream: StreamSpec | None = None) -> MemoryHost:
    """A new run (as after a restart) over the same Kafka and stored state."""
    return MemoryHost(stream or host.spec, kafka=host.kafka, state=host.store, settings=FAST)


def test_a_deleted_pattern_topic_is_dropped_once_and_never_committed_or_compared():
    kafka = FakeKafka({A0: 20, A1: 20, B0: 10})
    host = caught_up(kafka, spec())
    assert set(host.store.state.topics) == {"a", "b"}
    kafka.delete_topic("b")
    kafka.produce(A0, 5)
    before = len(kafka.commits)
    rerun = again(host)
    outcome = run(rerun)
    assert outcome.ok, outcome.message  # the fake, like Kafka, refuses commits for an unknown topic
    assert rerun.store.state.committed == {A0: 25, A1: 20}
    assert set(rerun.store.state.topics) == {"a"}
    (dropped,) = rerun.of_type(ev.TopicsDropped)
    assert isinstance(dropped, ev.TopicsDropped) and dropped.topics == ("b",) and dropped.partitions == 1
    assert "no longer reads topic b" in dropped.message
    assert rerun.of_type(ev.Drift) == [], "the dropped topic is not compared with the group"
    assert kafka.commits[before:] == [{A0: 25, A1: 20}]


def test_a_topic_removed_from_spec_topics_is_dropped_but_a_deleted_listed_topic_waits():
    kafka = FakeKafka({A0: 20, B0: 10})
    host = caught_up(kafka, spec(topics=["a", "b"], rate={"maxPerPartition": 1}), RunMode.ONCE)  # 5 each
    narrowed = again(host, spec(topics=["a"]))
    assert run(narrowed).ok
    assert narrowed.store.state.committed == {A0: 20}
    (dropped,) = narrowed.of_type(ev.TopicsDropped)
    assert (
        "topic b" in dropped.message
        and "5 records past them when last seen were never read" in dropped.message
    )
    assert kafka.groups["clicks"][B0] == 5, "the group's old offsets of a topic still there are left alone"

    kafka.delete_topic("a")
    missing = MemoryHost(
        spec(topics=["a"]), kafka=kafka, state=narrowed.store, settings=FAST, policy="cluster"
    )
    missing.turns_left = 3
    run(missing, RunMode.FOREVER)
    assert {type(e) for e in missing.events} >= {ev.KafkaUnreachable}
    assert "a do not exist" in missing.of_type(ev.KafkaUnreachable)[0].message
    assert missing.store.state.committed == {A0: 20}, "a listed topic is waited for, not dropped"


def test_a_recreated_topic_under_fail_is_refused_naming_it_and_nothing_moves():
    kafka = FakeKafka({A0: 100, A1: 100})
    host = caught_up(kafka, spec(onDataLoss="fail", rate={"maxPerPartition": 12}), RunMode.ONCE)  # 60 of 100
    state = host.store.state
    assert state.committed == {A0: 60, A1: 60}
    kafka.recreate_topic("a", {0: 300})
    refused = again(host)
    outcome = run(refused)
    assert (outcome.ok, outcome.reason) == (False, "data-loss")
    (refusal,) = refused.of_type(ev.DataLossRefused)
    assert "topic a was deleted and recreated (topic id a-id1, now a-id2)" in refusal.message
    assert "80 records of the old topic were never read" in refusal.message
    assert refused.store.state.committed == state.committed and refused.store.state.topics == state.topics
    assert refused.launcher.launches == []


def test_a_recreated_topic_under_earliest_is_read_from_its_start_and_its_loss_counted():
    kafka = FakeKafka({A0: 100, A1: 100, B0: 10})
    host = caught_up(kafka, spec(onDataLoss="earliest", rate={"maxPerPartition": 12}), RunMode.ONCE)
    assert host.store.state.committed == {A0: 60, A1: 60, B0: 10}
    kafka.recreate_topic("a", {0: 300})  # one partition fewer than before
    rerun = again(host, spec(onDataLoss="earliest"))
    assert run(rerun).ok
    first = rerun.launcher.launches[0]
    ranges = {(r.topic, r.partition): (r.from_offset, r.until_offset) for u in first.units for r in u.ranges}
    assert ranges == {A0: (0, 300)}, "the new topic from its start; b has nothing new"
    recorded = first.recorded
    assert A1 not in recorded.committed, "the old topic's partition 1 is forgotten"
    assert recorded.topics["a"].id == kafka.ids["a"] != "a-id1"
    (skipped,) = rerun.of_type(ev.DataLossSkipped)
    assert isinstance(skipped, ev.DataLossSkipped) and skipped.lost == 80
    assert rerun.store.state.committed == {A0: 300, B0: 10}
    assert "80 records of the old topic were never read" in rerun.store.state.ledger[-1].note


def recorded_state(kafka: FakeKafka, ranges: tuple[OffsetRange, ...]) -> MemoryState:
    """A stream whose batch 2 was recorded (the driver died before it committed)."""
    committed = {(r.topic, r.partition): r.from_offset for r in ranges}
    topics = {t: TopicRecord(kafka.ids[t], 0) for t, _ in committed}
    state = StreamState(committed=committed, next_batch_id=2, topics=topics)
    return MemoryState(state.with_plan(BatchPlan(2, ranges), now=900.0))


def test_retention_inside_a_recorded_plan_fail_refuses_without_running_and_keeps_the_plan():
    kafka = FakeKafka({A0: 100})
    store = recorded_state(kafka, (OffsetRange("a", 0, 10, 100),))
    kafka.delete_records(A0, 40)
    host = MemoryHost(spec(onDataLoss="fail"), kafka=kafka, state=store, settings=FAST)
    outcome = run(host)
    assert (outcome.ok, outcome.reason) == (False, "data-loss")
    assert "recorded range a[0] 10..100: offsets 10..40 (30 records) were deleted" in outcome.message
    assert host.launcher.launches == []
    assert store.state.pending is not None and store.state.pending.plan.batch_id == 2


def test_retention_inside_a_recorded_plan_earliest_reads_the_rest_of_each_range():
    kafka = FakeKafka({A0: 100, A1: 50})
    ranges = (OffsetRange("a", 0, 10, 100), OffsetRange("a", 1, 0, 50))
    store = recorded_state(kafka, ranges)
    kafka.delete_records(A0, 40)
    kafka.delete_records(A1, 60)  # past the range's end: all of it is gone
    host = MemoryHost(
        spec(onDataLoss="earliest", executors={"max": 1}), kafka=kafka, state=store, settings=FAST
    )
    assert run(host).ok
    (launch,) = host.launcher.launches
    (unit,) = launch.units
    assert unit.ranges == ranges, "the recorded ranges, unchanged: sinks name outputs by them"
    assert unit.read_from == (("a", 0, 40), ("a", 1, 50))
    pending = launch.recorded.pending
    assert pending is not None and len(pending.plan.data_loss) == 2, "durable before the executors started"
    assert sorted(e.lost for e in host.of_type(ev.DataLossSkipped) if isinstance(e, ev.DataLossSkipped)) == [
        30,
        50,
    ]
    assert store.state.committed == {A0: 100, A1: 50}
    assert "skipped 30 lost records on a[0]" in store.state.ledger[-1].note


def test_retention_that_overtakes_a_retried_attempt_is_counted_once_per_offset():
    kafka = FakeKafka({A0: 100})
    host = MemoryHost(spec(onDataLoss="earliest", maxAttempts=3), kafka=kafka, settings=FAST)
    moves = iter([20, 50])

    def out_of_range(unit: WorkUnit) -> ExecutorResult:
        earliest = next(moves, None)
        if earliest is None:
            return succeed(unit)
        kafka.delete_records(A0, earliest)  # retention runs while the attempt reads
        return ExecutorResult(unit.batch_id, unit.attempt, unit.index, ok=False, error="offset out of range")

    host.launcher.script = out_of_range
    assert run(host).ok
    assert [u.read_from for launch in host.launcher.launches for u in launch.units] == [
        (),
        (("a", 0, 20),),
        (("a", 0, 50),),
    ]
    lost = [e.lost for e in host.of_type(ev.DataLossSkipped) if isinstance(e, ev.DataLossSkipped)]
    assert lost == [20, 30], "each retry counts only what retention took since"
    assert host.store.state.committed == {A0: 100}


def test_a_topic_recreated_while_its_batch_was_recorded_skips_the_old_ranges():
    kafka = FakeKafka({A0: 100, B0: 10})
    store = recorded_state(kafka, (OffsetRange("a", 0, 10, 100), OffsetRange("b", 0, 0, 10)))
    kafka.recreate_topic("a", {0: 30})
    host = MemoryHost(spec(onDataLoss="earliest"), kafka=kafka, state=store, settings=FAST)
    assert run(host).ok
    first, second = host.launcher.launches
    assert [u.read_from for u in first.units if u.ranges[0].topic == "a"] == [(("a", 0, 100),)], (
        "the old topic's range is not read from the new topic"
    )
    assert {(r.topic, r.from_offset, r.until_offset) for u in second.units for r in u.ranges} == {
        ("a", 0, 30)
    }
    assert host.store.state.committed == {A0: 30, B0: 10}


def test_a_reset_adopts_the_topics_as_they_are_now():
    kafka = FakeKafka({A0: 50})
    host = caught_up(kafka, spec(onDataLoss="fail"))
    kafka.recreate_topic("a", {0: 20})
    rewound = again(host, spec(onDataLoss="fail", reset={"id": "r1", "to": "earliest"}))
    assert run(rewound).ok
    assert rewound.of_type(ev.DataLossRefused) == []
    assert rewound.store.state.committed == {A0: 20}
    assert rewound.store.state.topics["a"].id == "a-id2"


def test_compare_topics_without_ids_detects_nothing_and_partitions_that_vanished_are_dropped():
    committed = {A0: 5, A1: 7}
    unknown = compare_topics(committed, {"a": TopicRecord("", 0)}, [A0], {"a": TopicInfo("x", (0,))})
    assert unknown.recreated == () and dict(unknown.dropped) == {A1: 7}
    same = compare_topics(committed, {"a": TopicRecord("x", 20)}, [A0, A1], {"a": TopicInfo("x", (0, 1))})
    assert same.dropped == {} and same.recreated == ()


def test_a_malformed_read_from_is_a_contract_error():
    doc = WorkUnit.from_json(
        {
            "version": 1,
            "stream": "s",
            "batchId": 1,
            "attempt": 1,
            "index": 0,
            "ranges": [["a", 0, 0, 5]],
            "kafka": {"bootstrapServers": "x:1"},
            "processor": {"sink": "count"},
        }
    ).to_json()
    for bad in ([["a", 0]], [["a", -1, 3]], [[1, 0, 3]]):
        with pytest.raises(ContractError, match="readFrom"):
            WorkUnit.from_json({**doc, "readFrom": bad})
