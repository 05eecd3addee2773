"""The driver's side of topic lifecycle: what the stream reads now, dropping the offsets of
topics it no longer reads, and checking a recorded plan against the topics as they are now.
What each finding means is decided in ``core.topic_lifecycle`` (pure); this module does the I/O
through the driver's ports and reports events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..core import events as ev
from ..core.planning import BatchPlan, DataLossError, TopicPartition, Watermarks
from ..core.spec import StreamSpec
from ..core.state import StreamState
from ..core.topic_lifecycle import (
    TopicChanges,
    TopicInfo,
    compare_topics,
    describe_drops,
    new_recorded_losses,
    recorded_plan_losses,
    topic_records,
    with_recorded_losses,
)
from .ports import ExternalOffsetsPort, Observer, OffsetsPort, StatePort


@dataclass(frozen=True, slots=True)
class TopicsNow:
    """The partitions the stream reads now, and their topics as the broker describes them."""

    partitions: list[TopicPartition]
    topics: dict[str, TopicInfo]


async def topics_now(offsets: OffsetsPort) -> TopicsNow:
    partitions = await offsets.partitions()
    return TopicsNow(partitions, await offsets.topics(sorted({t for t, _ in partitions})))


def announce_recreated(plan: BatchPlan, observe: Observer) -> None:
    for topic in plan.recreated:
        observe(
            ev.DataLossSkipped(
                message=f"batch {plan.batch_id}: {topic}; reading the new topic from its start "
                "(onDataLoss: earliest)",
                batch_id=plan.batch_id,
                lost=topic.lost,
            )
        )


def as_planned(
    state: StreamState, plan: BatchPlan, marks: Mapping[TopicPartition, Watermarks], now: TopicsNow
) -> StreamState:
    """The state with the topics as ``plan`` reads them: their records (ids, latest offsets)
    and without the old offsets of a topic recreated since."""
    old = [(x.topic, p) for x in plan.recreated for p in x.previous]
    return state.with_topics(topic_records(marks, now.topics), old)


def still_read(
    state: StreamState, now: TopicsNow, offsets: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Of ``offsets``, those of partitions read now, without a recreated topic's (they belong to
    the old topic and go through onDataLoss at the next plan)."""
    changes = compare_topics(state.committed, state.topics, now.partitions, now.topics)
    recreated = {r.topic for r in changes.recreated}
    reading = set(now.partitions)
    return {tp: off for tp, off in offsets.items() if tp in reading and tp[0] not in recreated}


def caught_up(
    state: StreamState, targets: Mapping[TopicPartition, int], ids: Mapping[str, str] | None = None
) -> bool:
    """The committed offsets reached ``targets``, and are offsets of the same topics: none of
    ``ids`` (the topic ids seen with the targets) was recreated before the state recorded it."""
    for topic, topic_id in (ids or {}).items():
        record = state.topics.get(topic)
        if record is not None and record.id and topic_id and record.id != topic_id:
            return False  # the old topic's offsets: the recreated one is still to be read
    return all(state.committed.get(tp, -1) >= end for tp, end in targets.items())


async def drop_unread(
    state: StreamState,
    now: TopicsNow,
    store: StatePort,
    external: ExternalOffsetsPort | None,
    observe: Observer,
) -> StreamState:
    """Drop the stored offsets of partitions the stream no longer reads (from the offsets table
    first, so that a crash in between drops them again), and say so once."""
    changes = compare_topics(state.committed, state.topics, now.partitions, now.topics)
    if not changes.dropped:
        return state
    if external is not None:
        await external.forget(sorted(changes.dropped))
    read = {t for t, _ in now.partitions}
    state = state.with_topics({t: r for t, r in state.topics.items() if t in read}, changes.dropped)
    await store.save(state)
    observe(dropped_event(changes))
    return state


def dropped_event(changes: TopicChanges) -> ev.TopicsDropped:
    topics = tuple(sorted({t for t, _ in changes.dropped}))
    return ev.TopicsDropped(message=describe_drops(changes), topics=topics, partitions=len(changes.dropped))


async def check_recorded_plan(
    state: StreamState, spec: StreamSpec, offsets: OffsetsPort, store: StatePort, observe: Observer
) -> tuple[StreamState, dict[TopicPartition, Watermarks]]:
    """A recorded plan's ranges as they can be read now, and the watermarks seen. A range whose
    start retention deleted, or whose topic was deleted or recreated since the plan, goes through
    onDataLoss: ``fail`` raises DataLossError (the plan stays recorded); ``earliest`` records in
    the plan where reading resumes (durable before any executor starts) and says so."""
    assert state.pending is not None
    plan = state.pending.plan
    ranges = plan.record_ranges
    if not ranges:
        return state, {}
    topics = await offsets.topics(sorted({r.topic for r in ranges}))
    readable = [(r.topic, r.partition) for r in ranges if r.partition in _partitions(topics, r.topic)]
    marks = await offsets.watermarks(readable)
    found = recorded_plan_losses(plan, marks, topics, state.topics)
    fresh = new_recorded_losses(plan, found)
    if not fresh:
        return state, marks
    if spec.on_data_loss == "fail":
        raise DataLossError(found)
    before = {(x.topic, x.partition): x.resumed_at for x in plan.data_loss if x.recorded is not None}
    state = state.with_recorded_plan(with_recorded_losses(plan, fresh))
    await store.save(state)
    for loss in fresh:
        observe(
            ev.DataLossSkipped(
                message=f"batch {plan.batch_id}: {loss}; skipping to offset {loss.resumed_at} "
                "(onDataLoss: earliest)",
                batch_id=plan.batch_id,
                lost=loss.resumed_at - before.get((loss.topic, loss.partition), loss.expected),
            )
        )
    return state, marks


def _partitions(topics: dict[str, TopicInfo], topic: str) -> tuple[int, ...]:
    info = topics.get(topic)
    return info.partitions if info is not None else ()
