"""Poison-record settings: the parser, the CRD and the contract agree; decoding and the guard's
policies on records built by hand (the broker-backed behaviour is in tests/integration/test_poison.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from directstream.executor.contract import (
    ExecutorResult,
    OffsetRange,
    PoisonPolicy,
    ProcessorSettings,
    WorkUnit,
)
from directstream.executor.contract.kafka import KafkaClientSettings
from directstream.executor.contract.poison import DECODE_FORMATS, ON_ERROR, parse_poison
from directstream.executor.decoding import DecodedRecord, RecordDecoder
from directstream.executor.errors import RangeFailedError
from directstream.executor.poison import PoisonGuard, dead_letter, guarded
from directstream.executor.processors.base import BaseProcessor
from directstream.executor.records import KafkaRecord, encode_json_lines
from directstream.operator.core import events as ev
from directstream.operator.core.pinning import pin
from directstream.operator.core.planning import BatchPlan
from directstream.operator.core.spec import SpecError, parse_spec
from directstream.operator.driver import RunMode, run_stream
from directstream.operator.kubectl_plugin import render_status
from directstream.operator.metrics import OperatorMetrics, record_event
from directstream.operator.testing import FakeKafka, MemoryHost, succeed
from tests.crd_support import node_at

RANGE = OffsetRange("t", 0, 0, 10)
UNIT = WorkUnit("s", 7, 2, 0, (RANGE,), KafkaClientSettings("k:9092"), ProcessorSettings("count"))


class Rec:
    def __init__(self, offset: int, value: bytes | None, key: bytes | None = b"k") -> None:
        self._offset, self._value, self._key = offset, value, key

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        return [("h", b"1")]

    def timestamp(self) -> tuple[int, int]:
        return (1, 1000)


class Collect(BaseProcessor):
    def __init__(self) -> None:
        self.seen: list[KafkaRecord] = []

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        self.seen.extend(records)


def spec_with(processor: dict[str, Any]) -> dict[str, Any]:
    return {
        "kafka": {"bootstrapServers": "k:9092"},
        "topics": ["t"],
        "processor": {"sink": "count", **processor},
    }


def test_crd_enums_equal_the_contract() -> None:
    assert tuple(node_at("spec.processor.decode.key")["enum"]) == DECODE_FORMATS
    assert tuple(node_at("spec.processor.decode.value")["enum"]) == DECODE_FORMATS
    assert tuple(node_at("spec.processor.onError")["enum"]) == ON_ERROR
    assert node_at("spec.processor.onError")["default"] == PoisonPolicy().on_error


def test_parser_reads_the_policy_and_pins_it() -> None:
    spec = parse_spec(
        "s",
        spec_with({"decode": {"value": "json"}, "onError": "deadLetter", "deadLetter": {"topic": "s-dlq"}}),
    )
    policy = spec.processor.poison
    assert (policy.value, policy.on_error, policy.dead_letter and policy.dead_letter.topic) == (
        "json",
        "deadLetter",
        "s-dlq",
    )
    plan = BatchPlan(batch_id=1, ranges=(RANGE,))
    pinned = pin(spec, plan)
    assert pinned.processor.poison == policy
    assert pinned.digest != pin(parse_spec("s", spec_with({})), plan).digest, "the policy moves the digest"
    assert ProcessorSettings.from_json(json.loads(json.dumps(pinned.processor.to_json()))) == pinned.processor


@pytest.mark.parametrize(
    ("processor", "path"),
    [
        ({"decode": {"value": "avro"}}, "spec.processor.decode.value"),
        ({"decode": {"valu": "json"}}, "spec.processor.decode.valu"),
        ({"onError": "ignore"}, "spec.processor.onError"),
        ({"onError": "deadLetter"}, "spec.processor.deadLetter.topic"),
        ({"deadLetter": {"topic": "x"}}, "spec.processor.deadLetter"),
        ({"onError": "deadLetter", "deadLetter": {"topic": "bad topic"}}, "spec.processor.deadLetter.topic"),
        (
            {"onError": "deadLetter", "deadLetter": {"topic": "x", "tpoic": 1}},
            "spec.processor.deadLetter.tpoic",
        ),
    ],
)
def test_bad_policy_fields_name_their_path(processor: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec("s", spec_with(processor))
    assert path in {p.path for p in caught.value.problems}, caught.value


def test_a_dead_letter_topic_the_stream_reads_is_refused() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec("s", spec_with({"onError": "deadLetter", "deadLetter": {"topic": "t"}}))
    assert "one of the topics this stream reads" in str(caught.value)
    pattern = {
        **spec_with({"onError": "deadLetter", "deadLetter": {"topic": "t-dlq"}}),
        "topicPattern": "t.*",
    }
    del pattern["topics"]
    with pytest.raises(SpecError):
        parse_spec("s", pattern)
    elsewhere = {"topic": "t", "bootstrapServers": "other:9092"}
    assert parse_spec(
        "s", spec_with({"onError": "deadLetter", "deadLetter": elsewhere})
    ).processor.poison.dead_letter


def test_default_policy_leaves_the_processor_unwrapped_and_the_json_unchanged() -> None:
    inner = Collect()
    assert guarded(inner, PoisonPolicy(), UNIT, "count") is inner
    assert ProcessorSettings("jsonl", {"directory": "/d"}).to_json() == {
        "sink": "jsonl",
        "options": {"directory": "/d"},
    }


def test_json_values_are_decoded_and_written_as_json() -> None:
    decoded = RecordDecoder(parse_poison({"decode": {"value": "json", "key": "string"}})).decode(
        Rec(3, b'{"a": [1]}')
    )
    assert (decoded.key(), decoded.value(), decoded.raw_value()) == ("k", {"a": [1]}, b'{"a": [1]}')
    line = json.loads(encode_json_lines([decoded]))
    assert line["value"] == {"a": [1]} and line["key"] == "k" and line["offset"] == 3
    as_bytes = RecordDecoder(parse_poison({"decode": {"value": "bytes"}})).decode(Rec(3, b"\xff"))
    assert json.loads(encode_json_lines([as_bytes]))["valueBase64"] == "/w=="


def test_skip_drops_and_counts_and_fail_names_the_offset() -> None:
    inner = Collect()
    guard = PoisonGuard(inner, parse_poison({"decode": {"value": "json"}, "onError": "skip"}), UNIT, "jsonl")
    guard.process([Rec(0, b"1"), Rec(1, b"{oops"), Rec(2, None), Rec(3, b'"x"')], RANGE)
    assert [r.offset() for r in inner.seen] == [0, 2, 3] and guard.skipped == 1
    assert all(isinstance(r, DecodedRecord) for r in inner.seen)
    failing = PoisonGuard(Collect(), parse_poison({"decode": {"value": "string"}}), UNIT, "jsonl")
    with pytest.raises(RangeFailedError) as caught:
        failing.process([Rec(0, b"ok"), Rec(1, b"\xfe")], RANGE)
    assert caught.value.offset == 1
    assert "poison record at t[0] offset 1: value is not valid UTF-8" in str(caught.value)


def test_a_dead_letter_keeps_the_original_bytes_and_says_what_happened() -> None:
    letter = dead_letter(Rec(4, b"\xffraw", b"key"), RANGE, UNIT, "value is not JSON")
    assert (letter.key(), letter.value(), letter.timestamp()) == (b"key", b"\xffraw", (1, 1000))
    headers = dict(letter.headers() or [])
    assert headers == {
        "h": b"1",
        "directstream.error": b"value is not JSON",
        "directstream.stream": b"s",
        "directstream.topic": b"t",
        "directstream.partition": b"0",
        "directstream.offset": b"4",
        "directstream.batch": b"7",
        "directstream.attempt": b"2",
    }


def test_metrics_count_skipped_and_dead_lettered_records() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    committed = ev.Committed(message="", records=10, bytes=1, seconds=1.0, lag=0, attempts=1)
    record_event(metrics, "ns", "s", replace(committed, skipped=2, dead_lettered=3))
    record_event(metrics, "ns", "s", replace(committed, dead_lettered=1))
    record_event(metrics, "ns", "s", ev.DeadLettered(message="m", records=1, topic="dlq"))
    labels = {"namespace": "ns", "stream": "s"}
    assert metrics.registry.get_sample_value("directstream_skipped_records_total", labels) == 2
    assert metrics.registry.get_sample_value("directstream_dead_lettered_records_total", labels) == 4
    assert (
        metrics.registry.get_sample_value("directstream_warnings_total", {**labels, "kind": "dead-lettered"})
        == 1
    )


def test_the_plugin_shows_the_policy_and_the_totals() -> None:
    entry = {"batch": 3, "attempts": 1, "partitions": 1, "records": 30, "bytes": 1, "seconds": 1.0}
    obj = {
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": spec_with(
            {"onError": "deadLetter", "deadLetter": {"topic": "s-dlq"}, "decode": {"value": "json"}}
        ),
        "status": {
            "version": 1,
            "history": [{**entry, "committedAt": 1.0, "deadLettered": 4}],
            "recordsTotal": 30,
            "deadLetteredTotal": 4,
        },
    }
    text = render_status(obj)
    assert "On error:   onError deadLetter to s-dlq; decode value json" in text
    assert "Poison:     0 skipped, 4 dead-lettered (all time)" in text
    assert "DEAD-LETTERED" in text


def test_the_driver_counts_dead_letters_in_the_ledger_status_and_one_event_per_batch() -> None:
    kafka = FakeKafka({("t", 0): 30})
    processor = {"sink": "count", "onError": "deadLetter", "deadLetter": {"topic": "t-dlq"}}
    stream = parse_spec(
        "clicks",
        {
            "kafka": {"bootstrapServers": "fake:9092"},
            "topics": ["t"],
            "rate": {"maxPerPartition": 2},  # 10 per batch at the default 5 s interval: 3 batches
            "processor": processor,
        },
    )
    host = MemoryHost(stream, kafka=kafka)

    def script(unit: WorkUnit) -> ExecutorResult:
        # Batch 2 dead-letters two records; the others have none.
        return replace(succeed(unit), dead_lettered=2 if unit.batch_id == 2 else 0, skipped=1)

    host.launcher.script = script
    host.mode = RunMode.UNTIL_CAUGHT_UP
    outcome = asyncio.run(run_stream(host, RunMode.UNTIL_CAUGHT_UP, host.settings, clock=host.clock))
    assert outcome.ok
    state = host.store.state
    assert [(e.batch_id, e.skipped, e.dead_lettered) for e in state.ledger] == [
        (1, 1, 0),
        (2, 1, 2),
        (3, 1, 0),
    ]
    assert (state.skipped_total, state.dead_lettered_total) == (3, 2)
    (event,) = host.of_type(ev.DeadLettered)
    assert event.batch_id == 2 and "t-dlq" in event.message and event.warning
    committed = [e for e in host.of_type(ev.Committed) if isinstance(e, ev.Committed)]
    assert [(e.skipped, e.dead_lettered) for e in committed] == [(1, 0), (1, 2), (1, 0)]
