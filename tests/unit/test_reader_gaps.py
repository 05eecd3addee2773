"""The range reader's gap handling, through its consumer factory: a scripted consumer returns
real confluent_kafka Message objects (compacted offsets, a partition EOF, a position past a
gap), so these cases are tested without a broker and without waiting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from directstream.executor.contract import KafkaClientSettings, OffsetRange, ProcessorSettings, WorkUnit
from directstream.executor.errors import RangeFailedError
from directstream.executor.reader import RangeReader, ReaderOptions


class ScriptedConsumer:
    """Hands out ``batches`` of messages one consume() call at a time, then nothing."""

    def __init__(self, batches: Sequence[Sequence[Message]], positions: dict[tuple[str, int], int]) -> None:
        self.batches = list(batches)
        self.positions = positions
        self.assigned: list[TopicPartition] = []
        self.paused: list[tuple[str, int]] = []
        self.config: dict[str, Any] = {}
        self.closed = False

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = tps

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        return list(self.batches.pop(0)) if self.batches else []

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions.get((tp.topic, tp.partition), -1001))
            for tp in tps
        ]

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused += [(tp.topic, tp.partition) for tp in tps]

    def close(self) -> None:
        self.closed = True


def unit(*ranges: OffsetRange) -> WorkUnit:
    return WorkUnit(
        stream="s",
        batch_id=1,
        attempt=1,
        index=0,
        ranges=ranges,
        kafka=KafkaClientSettings("fake:9092"),
        processor=ProcessorSettings("count"),
    )


def records(topic: str, partition: int, *offsets: int) -> list[Message]:
    return [Message(topic=topic, partition=partition, offset=o, value=b"v") for o in offsets]


def read(
    consumer: ScriptedConsumer, work: WorkUnit, stall: float = 60.0
) -> list[tuple[str, list[int], bool]]:
    reader = RangeReader(
        work,
        ReaderOptions(chunk_size=100, poll_timeout=0.0, stall_timeout=stall),
        consumer_factory=lambda config: consumer,
    )
    return [(str(c.range), [m.offset() for m in c.records], c.done) for c in reader.chunks()]


def test_a_compacted_tail_ends_by_position_without_waiting_for_until_minus_one():
    consumer = ScriptedConsumer([records("t", 0, 0, 1, 2, 5, 6)], positions={("t", 0): 10})
    chunks = read(consumer, unit(OffsetRange("t", 0, 0, 10)))
    assert chunks == [("t[0] 0..10", [0, 1, 2, 5, 6], False), ("t[0] 0..10", [], True)]
    assert consumer.paused == [("t", 0)] and consumer.closed


def test_a_partition_eof_at_or_past_until_completes_the_range():
    eof = Message(topic="t", partition=1, offset=8, error=KafkaError(KafkaError._PARTITION_EOF))
    consumer = ScriptedConsumer([[*records("t", 1, 3, 4), eof]], positions={})
    chunks = read(consumer, unit(OffsetRange("t", 1, 3, 8)))
    assert chunks == [("t[1] 3..8", [3, 4], False), ("t[1] 3..8", [], True)]


def test_records_at_or_past_until_are_dropped_and_other_partitions_keep_reading():
    consumer = ScriptedConsumer(
        [records("t", 0, 0, 1, 2, 3), records("u", 0, 7), records("u", 0, 8, 9)], positions={}
    )
    chunks = read(consumer, unit(OffsetRange("t", 0, 0, 2), OffsetRange("u", 0, 7, 10)))
    assert ("t[0] 0..2", [0, 1], False) in chunks
    assert chunks[-1] == ("u[0] 7..10", [], True)
    assert [c for c in chunks if c[0].startswith("u")] == [
        ("u[0] 7..10", [7], False),
        ("u[0] 7..10", [8, 9], False),
        ("u[0] 7..10", [], True),
    ]


def test_an_empty_range_completes_without_a_consumer():
    def no_consumer(config: dict[str, Any]) -> ScriptedConsumer:
        raise AssertionError("an empty range needs no consumer")

    reader = RangeReader(unit(OffsetRange("t", 0, 5, 5)), consumer_factory=no_consumer)
    assert [(c.range.count, c.done) for c in reader.chunks()] == [(0, True)]


def test_no_progress_past_the_stall_timeout_names_the_range_and_position():
    consumer = ScriptedConsumer([records("t", 0, 0, 1)], positions={("t", 0): 2})
    with pytest.raises(RangeFailedError) as failure:
        read(consumer, unit(OffsetRange("t", 0, 0, 10)), stall=0.0)
    assert failure.value.range == OffsetRange("t", 0, 0, 10)
    assert failure.value.offset == 2


def test_a_range_whose_start_was_lost_is_read_from_where_the_driver_says_and_keeps_its_name():
    consumer = ScriptedConsumer([records("t", 0, 40, 41, 42)], positions={("t", 0): 43})
    work = replace(
        unit(OffsetRange("t", 0, 0, 43), OffsetRange("t", 1, 0, 10)), read_from=(("t", 0, 40), ("t", 1, 10))
    )
    chunks = read(consumer, work)
    assert chunks[0] == ("t[1] 0..10", [], True), "lost up to its end: done without Kafka"
    assert chunks[1:] == [("t[0] 0..43", [40, 41, 42], False), ("t[0] 0..43", [], True)]
    assert [(tp.topic, tp.partition, tp.offset) for tp in consumer.assigned] == [("t", 0, 40)]
    assert WorkUnit.loads(work.dumps()) == work, "read_from travels with the unit"
