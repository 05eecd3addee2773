"""Topics that come and go under a stream (pure): which stored offsets no longer apply.

- A topic the stream no longer reads (deleted, no longer matching ``topicPattern``, removed
  from ``topics``) has its offsets dropped: never compared with the group, never committed.
- A topic deleted and created again under the same name has a new topic id. Its committed
  offsets belong to the old topic, so the new one goes through ``onDataLoss``.
- A recorded plan (the write-ahead log) whose ranges can no longer be read as recorded —
  retention deleted their start, or their topic was deleted or recreated since — goes through
  ``onDataLoss`` too: ``fail`` refuses it, ``earliest`` reads what is left of each range.

The state keeps one :class:`TopicRecord` per topic: its id and the sum of its partitions'
latest offsets when the stream last planned, which says how much of an old topic went unread.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from directstream.executor.contract import WorkUnit

from .planning import BatchPlan, DataLoss, TopicPartition, TopicRecreated, Watermarks

NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # the all-zero id of a broker without topic ids


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as the broker describes it now."""

    id: str  # "" when the broker has no topic ids
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """What the state remembers of a topic it reads."""

    id: str  # "" when unknown (an older state, or a broker without topic ids)
    latest: int  # the sum of its partitions' latest offsets when the stream last planned

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "latest": self.latest}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TopicRecord:
        return cls(str(doc.get("id", "")), int(doc.get("latest", 0)))


@dataclass(frozen=True, slots=True)
class TopicChanges:
    """How the topics the stream reads now differ from what its state holds."""

    dropped: Mapping[TopicPartition, int]  # stored offsets of partitions it no longer reads
    dropped_unread: Mapping[str, int]  # per dropped topic: records it held past them when last seen
    recreated: tuple[TopicRecreated, ...]

    def forget(self) -> set[TopicPartition]:
        """Every stored offset that no longer applies: dropped, and those of recreated topics."""
        old = {(r.topic, p) for r in self.recreated for p in r.previous}
        return set(self.dropped) | old


def known_id(topic_id: str) -> str:
    return "" if topic_id == NO_TOPIC_ID else topic_id


def compare_topics(
    committed: Mapping[TopicPartition, int],
    records: Mapping[str, TopicRecord],
    partitions: Iterable[TopicPartition],
    topics: Mapping[str, TopicInfo],
) -> TopicChanges:
    """Stored offsets against the partitions the stream reads now and their topics' ids."""
    reading = set(partitions)
    by_topic: dict[str, dict[int, int]] = defaultdict(dict)
    for (topic, partition), offset in committed.items():
        by_topic[topic][partition] = offset
    recreated = []
    for topic, offsets in sorted(by_topic.items()):
        record, info = records.get(topic), topics.get(topic)
        if record is None or info is None or not record.id or not info.id or record.id == info.id:
            continue
        if not any((topic, p) in reading for p in info.partitions):
            continue  # recreated, but no longer read: dropped below
        past = max(0, record.latest - sum(offsets.values()))
        recreated.append(TopicRecreated(topic, record.id, info.id, dict(sorted(offsets.items())), past))
    again = {r.topic for r in recreated}
    dropped = {tp: off for tp, off in committed.items() if tp not in reading and tp[0] not in again}
    unread: dict[str, int] = {}
    for topic in sorted({tp[0] for tp in dropped}):
        record = records.get(topic)
        if record is not None and all((topic, p) not in reading for p in by_topic[topic]):
            unread[topic] = max(0, record.latest - sum(by_topic[topic].values()))
    return TopicChanges(dict(sorted(dropped.items())), unread, tuple(recreated))


def topic_records(
    marks: Mapping[TopicPartition, Watermarks], topics: Mapping[str, TopicInfo]
) -> dict[str, TopicRecord]:
    """One record per topic read now, from this batch's watermarks."""
    latest: dict[str, int] = defaultdict(int)
    for (topic, _), mark in marks.items():
        latest[topic] += mark.latest
    return {
        topic: TopicRecord(topics[topic].id if topic in topics else "", total)
        for topic, total in sorted(latest.items())
    }


def describe_drops(changes: TopicChanges) -> str:
    """The event message for dropped offsets, one clause per topic."""
    parts = []
    by_topic: dict[str, int] = defaultdict(int)
    for topic, _ in changes.dropped:
        by_topic[topic] += 1
    for topic, count in sorted(by_topic.items()):
        text = (
            f"no longer reads topic {topic} (deleted, or no longer in spec.topics or matching "
            f"spec.topicPattern): dropped its stored offsets ({count} partition(s))"
        )
        if changes.dropped_unread.get(topic):
            text += f"; {changes.dropped_unread[topic]} records past them when last seen were never read"
        parts.append(text)
    return "; ".join(parts)


def recorded_plan_losses(
    plan: BatchPlan,
    marks: Mapping[TopicPartition, Watermarks],
    topics: Mapping[str, TopicInfo],
    records: Mapping[str, TopicRecord],
) -> tuple[DataLoss, ...]:
    """The ranges of a recorded plan that can no longer be read as recorded, as they stand now:
    the topic is gone (absent from ``topics``), was recreated (its id is not the one recorded
    when planning), or retention deleted the range's start (``marks``)."""
    losses = []
    for rng in plan.record_ranges:
        info, record = topics.get(rng.topic), records.get(rng.topic)
        reason = ""
        resumed_at = rng.until_offset
        if info is None or rng.partition not in info.partitions:
            reason = "topic-deleted"
        elif record is not None and record.id and info.id and record.id != info.id:
            reason = "topic-recreated"
        else:
            mark = marks.get((rng.topic, rng.partition))
            if mark is not None and mark.earliest > rng.from_offset:
                reason, resumed_at = "deleted", min(mark.earliest, rng.until_offset)
        if reason:
            losses.append(DataLoss(rng.topic, rng.partition, rng.from_offset, resumed_at, reason, rng))
    return tuple(losses)


def new_recorded_losses(plan: BatchPlan, found: Iterable[DataLoss]) -> tuple[DataLoss, ...]:
    """Of ``found``, the losses not yet in the plan (or further than the plan knew)."""
    known = {(x.topic, x.partition): x.resumed_at for x in plan.data_loss if x.recorded is not None}
    return tuple(x for x in found if x.resumed_at > known.get((x.topic, x.partition), x.expected))


def with_recorded_losses(plan: BatchPlan, losses: Iterable[DataLoss]) -> BatchPlan:
    """``plan`` with ``losses`` recorded (replacing earlier ones of the same ranges)."""
    fresh = {(x.topic, x.partition): x for x in losses}
    kept = [x for x in plan.data_loss if x.recorded is None or (x.topic, x.partition) not in fresh]
    return dataclasses.replace(plan, data_loss=(*kept, *fresh.values()))


def chain_moves(
    plan: BatchPlan, committed: Mapping[TopicPartition, int]
) -> tuple[list[TopicPartition], dict[TopicPartition, tuple[int | None, int]]]:
    """For offsets kept in a database: the chains to delete (partitions a recreated topic no
    longer has) and the moves ``{tp: (expected, from)}`` that start each range's chain. A
    recreated topic's chains stand where the old topic was committed."""
    old = {(x.topic, p): off for x in plan.recreated for p, off in x.previous.items()}
    planned = {(r.topic, r.partition) for r in plan.ranges}
    moves = {
        (r.topic, r.partition): (
            committed.get((r.topic, r.partition), old.get((r.topic, r.partition))),
            r.from_offset,
        )
        for r in plan.ranges
    }
    return sorted(set(old) - planned), moves


def read_from(plan: BatchPlan) -> dict[TopicPartition, int]:
    """Where executors start reading a recorded range whose start is gone (onDataLoss: earliest)."""
    return {(x.topic, x.partition): x.resumed_at for x in plan.data_loss if x.recorded is not None}


def skip_lost(units: Iterable[WorkUnit], plan: BatchPlan) -> tuple[WorkUnit, ...]:
    """The units of an attempt, told where lost offsets end in their ranges; every range keeps
    its identity (sinks name and chain outputs by the recorded range)."""
    starts = read_from(plan)
    if not starts:
        return tuple(units)
    return tuple(
        dataclasses.replace(
            unit,
            read_from=tuple(
                (r.topic, r.partition, starts[(r.topic, r.partition)])
                for r in unit.ranges
                if (r.topic, r.partition) in starts
            ),
        )
        for unit in units
    )
