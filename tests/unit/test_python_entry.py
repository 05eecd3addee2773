"""The python sink's two entry points, per chunk and per record, on hand-built records."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from directstream.executor.contract import KafkaClientSettings, OffsetRange, ProcessorSettings, WorkUnit
from directstream.executor.errors import ConfigurationError, PoisonRecord, RangeFailedError
from directstream.executor.processors.python_entry import PythonProcessor
from directstream.executor.records import KafkaRecord

RANGE = OffsetRange("t", 3, 100, 110)


def records(offsets: range) -> list[Message]:
    return [
        Message(topic="t", partition=3, offset=o, value=b"v%d" % o, timestamp=(TIMESTAMP_CREATE_TIME, 1))
        for o in offsets
    ]


def build(entry: str, **options: Any) -> PythonProcessor:
    settings = ProcessorSettings("python", {"entryPoint": f"{__name__}:{entry}", **options})
    unit = WorkUnit("s", 1, 1, 0, (RANGE,), KafkaClientSettings("127.0.0.1:1"), settings)
    return PythonProcessor(settings.options, unit)


class PerChunk:
    def __init__(self, options: dict[str, Any], unit: WorkUnit) -> None:
        self.calls: list[tuple[list[int | None], OffsetRange]] = []

    def process(self, chunk: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        self.calls.append(([r.offset() for r in chunk], range_))


class PerRecord:
    def __init__(self, options: dict[str, Any], unit: WorkUnit) -> None:
        self.poison = options.get("poison")
        self.seen: list[tuple[int | None, OffsetRange]] = []
        self.closed: list[OffsetRange] = []

    def process_record(self, record: KafkaRecord, range_: OffsetRange) -> None:
        if record.offset() == self.poison:
            raise ValueError("cannot parse")
        self.seen.append((record.offset(), range_))

    def close_range(self, range_: OffsetRange) -> None:
        self.closed.append(range_)


class RejectsOdd:
    """Per chunk: writes the even offsets and returns the odd ones as poison (what it returns is
    set by options.returns for the misuse cases)."""

    def __init__(self, options: dict[str, Any], unit: WorkUnit) -> None:
        self.returns = options.get("returns")
        self.written: list[int | None] = []

    def process(self, chunk: Sequence[KafkaRecord], range_: OffsetRange) -> object:
        if self.returns == "raise":
            raise PoisonRecord("the whole chunk?")
        if self.returns is not None:
            return self.returns
        self.written += [r.offset() for r in chunk if (r.offset() or 0) % 2 == 0]
        return [PoisonRecord(f"odd {r.offset()}", record=r) for r in reversed(chunk) if (r.offset() or 0) % 2]


class Both(PerChunk):
    def process_record(self, record: KafkaRecord, range_: OffsetRange) -> None: ...


class Neither:
    def __init__(self, options: dict[str, Any], unit: WorkUnit) -> None: ...


def test_per_chunk_gets_each_chunk_in_one_call() -> None:
    processor = build("PerChunk")
    processor.process(records(range(100, 105)), RANGE)
    processor.process(records(range(105, 110)), RANGE)
    assert processor.user.calls == [([100, 101, 102, 103, 104], RANGE), ([105, 106, 107, 108, 109], RANGE)]


def test_per_record_gets_every_record_in_order_and_the_optional_methods() -> None:
    processor = build("PerRecord")
    processor.process(records(range(100, 104)), RANGE)
    processor.process(records(range(104, 110)), RANGE)
    processor.close_range(RANGE)
    assert processor.user.seen == [(o, RANGE) for o in range(100, 110)]
    assert processor.user.closed == [RANGE]


def test_a_failing_record_fails_the_range_at_its_own_offset() -> None:
    processor = build("PerRecord", poison=107)
    with pytest.raises(RangeFailedError) as failure:
        processor.process(records(range(100, 110)), RANGE)
    assert (failure.value.range, failure.value.offset) == (RANGE, 107)
    assert "offset 107" in str(failure.value) and "cannot parse" in str(failure.value)
    assert [o for o, _ in processor.user.seen] == list(range(100, 107))


@pytest.mark.parametrize(("entry", "message"), [("Both", "keep one"), ("Neither", "has neither")])
def test_exactly_one_entry_point(entry: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build(entry)


def test_per_chunk_poison_records_are_returned_and_go_to_the_policy_in_offset_order() -> None:
    processor = build("RejectsOdd")
    poisoned: list[tuple[int | None, str]] = []
    processor.on_poison = lambda record, range_, reason: poisoned.append((record.offset(), reason))
    processor.process(records(range(100, 106)), RANGE)
    assert processor.user.written == [100, 102, 104]
    assert poisoned == [
        (101, "PoisonRecord: odd 101"),
        (103, "PoisonRecord: odd 103"),
        (105, "PoisonRecord: odd 105"),
    ]


def test_per_chunk_poison_under_the_default_policy_fails_at_the_first_poison_offset() -> None:
    processor = build("RejectsOdd")
    with pytest.raises(RangeFailedError) as failure:
        processor.process(records(range(100, 106)), RANGE)
    assert failure.value.offset == 101
    assert "poison record at t[3] offset 101: PoisonRecord: odd 101" in str(failure.value)


@pytest.mark.parametrize(
    ("returns", "message"),
    [
        ("raise", "per chunk, return the poison records"),
        (7, "returned int: expected None or an iterable of PoisonRecord"),
        ([PoisonRecord("no record")], "each poison record is PoisonRecord(reason, record=r)"),
        (["just a string"], "each poison record is PoisonRecord(reason, record=r)"),
        ([PoisonRecord("elsewhere", record=records(range(5, 6))[0])], "offset 5, not in this chunk"),
    ],
)
def test_per_chunk_misuse_fails_the_range_at_the_chunk_saying_how(returns: object, message: str) -> None:
    processor = build("RejectsOdd", returns=returns)
    processor.on_poison = lambda record, range_, reason: pytest.fail("nothing is poison")
    with pytest.raises(RangeFailedError, match=re.escape(message)) as failure:
        processor.process(records(range(100, 106)), RANGE)
    assert failure.value.offset == 100
