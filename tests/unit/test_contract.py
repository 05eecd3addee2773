"""The driver↔executor contract round-trips through JSON, and records encode as documented."""

from __future__ import annotations

import base64
import json

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE, Message
from hypothesis import given
from hypothesis import strategies as st

from directstream.executor.contract import (
    TERMINATION_MESSAGE_LIMIT,
    ContractError,
    ExecutorResult,
    FailedAt,
    KafkaClientSettings,
    OffsetRange,
    ProcessorSettings,
    WorkUnit,
)
from directstream.executor.records import json_lines, payload_bytes, record_to_json

topics = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=40)
offsets = st.integers(min_value=0, max_value=2**62)
settings_maps = st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=20), max_size=4)


@st.composite
def offset_ranges(draw: st.DrawFn) -> OffsetRange:
    start = draw(offsets)
    return OffsetRange(draw(topics), draw(st.integers(0, 10_000)), start, start + draw(st.integers(0, 10**9)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)

work_units = st.builds(
    WorkUnit,
    stream=st.text(min_size=1, max_size=30),
    batch_id=st.integers(0, 2**40),
    attempt=st.integers(1, 100),
    index=st.integers(0, 1000),
    ranges=st.lists(offset_ranges(), max_size=5).map(tuple),
    kafka=st.builds(
        KafkaClientSettings,
        bootstrap_servers=st.text(min_size=1, max_size=30),
        isolation_level=st.sampled_from(["read_committed", "read_uncommitted"]),
        config=settings_maps,
        secret_env=settings_maps,
    ),
    processor=st.builds(
        ProcessorSettings,
        sink=st.sampled_from(["jsonl", "kafka", "stdout", "count", "python"]),
        options=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    ),
)


@given(work_units)
def test_work_unit_round_trips(unit: WorkUnit) -> None:
    assert WorkUnit.loads(unit.dumps()) == unit
    assert WorkUnit.from_json(json.loads(json.dumps(unit.to_json()))) == unit


@given(offset_ranges())
def test_offset_range_round_trips(range_: OffsetRange) -> None:
    assert OffsetRange.from_json(json.loads(json.dumps(range_.to_json()))) == range_
    assert range_.count == range_.until_offset - range_.from_offset


results = st.builds(
    ExecutorResult,
    batch_id=st.integers(0, 2**40),
    attempt=st.integers(1, 100),
    index=st.integers(0, 1000),
    ok=st.booleans(),
    records=st.integers(0, 2**40),
    bytes=st.integers(0, 2**50),
    seconds=st.floats(0, 1e6, allow_nan=False).map(lambda s: round(s, 6)),
    error=st.none() | st.text(max_size=200),
    failed_at=st.none() | st.builds(FailedAt, topics, st.integers(0, 10_000), offsets),
)


@given(results)
def test_executor_result_round_trips(result: ExecutorResult) -> None:
    assert ExecutorResult.loads(result.dumps()) == result


@given(
    st.text(min_size=1, max_size=30).map(lambda s: (s * 6000)[:20_000]),
    st.builds(FailedAt, topics, st.integers(0, 100), offsets),
)
def test_long_errors_are_shortened_to_the_termination_message_limit(error: str, where: FailedAt) -> None:
    result = ExecutorResult(1, 1, 0, ok=False, error=error, failed_at=where)
    text = result.dumps()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    back = ExecutorResult.loads(text)
    assert back.failed_at == where
    assert back.error is not None and error.startswith(back.error.removesuffix(" …"))


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"version": 1}',
        '{"version": 99, "stream": "s"}',
        '{"version":1,"stream":"s","batchId":"x","attempt":1,"index":0,"ranges":[],'
        '"kafka":{"bootstrapServers":"b"},"processor":{"sink":"count"}}',
        '{"version":1,"stream":"s","batchId":1,"attempt":1,"index":0,"ranges":[["t",0,5,2]],'
        '"kafka":{"bootstrapServers":"b"},"processor":{"sink":"count"}}',
        '{"version":1,"stream":"s","batchId":1,"attempt":1,"index":0,"ranges":[["t",0]],'
        '"kafka":{"bootstrapServers":"b"},"processor":{"sink":"count"}}',
        '{"version":1,"stream":"s","batchId":1,"attempt":1,"index":0,"ranges":[],'
        '"kafka":{"bootstrapServers":"b"},"processor":{"sink":"count","options":"x"}}',
    ],
)
def test_malformed_work_units_raise_contract_error(text: str) -> None:
    with pytest.raises(ContractError):
        WorkUnit.loads(text)


@pytest.mark.parametrize("text", ["{}", "nope", '{"batch": 1}'])
def test_malformed_results_raise_contract_error(text: str) -> None:
    with pytest.raises(ContractError):
        ExecutorResult.loads(text)


def _message(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]] | None
) -> Message:
    return Message(
        topic="t",
        partition=3,
        offset=42,
        key=key,
        value=value,
        headers=headers,
        timestamp=(TIMESTAMP_CREATE_TIME, 1_700_000_000_000),
    )


def test_text_records_encode_as_text() -> None:
    doc = record_to_json(_message(b"k\xc3\xa9", b"{}", [("h", b"v"), ("n", None)]))
    assert doc == {
        "topic": "t",
        "partition": 3,
        "offset": 42,
        "timestamp": 1_700_000_000_000,
        "key": "ké",
        "value": "{}",
        "headers": [["h", "v"], ["n", None]],
    }


def test_binary_records_encode_as_base64() -> None:
    doc = record_to_json(_message(b"\xff\x00", b"\x80abc", [("b", b"\xfe")]))
    assert "key" not in doc and "value" not in doc
    assert base64.b64decode(doc["keyBase64"]) == b"\xff\x00"
    assert base64.b64decode(doc["valueBase64"]) == b"\x80abc"
    assert doc["headers"] == [["b", None, base64.b64encode(b"\xfe").decode()]]


def test_null_key_value_and_missing_timestamp() -> None:
    message = Message(topic="t", partition=0, offset=1, timestamp=(TIMESTAMP_NOT_AVAILABLE, 0))
    assert record_to_json(message) == {
        "topic": "t",
        "partition": 0,
        "offset": 1,
        "timestamp": None,
        "key": None,
        "value": None,
        "headers": [],
    }


@given(
    st.lists(st.tuples(st.none() | st.binary(max_size=20), st.none() | st.binary(max_size=20)), max_size=20)
)
def test_json_lines_and_payload_bytes(pairs: list[tuple[bytes | None, bytes | None]]) -> None:
    messages = [_message(key, value, None) for key, value in pairs]
    lines = json_lines(messages).splitlines()
    assert len(lines) == len(messages)
    for line, (key, value) in zip(lines, pairs, strict=True):
        doc = json.loads(line)
        for name, data in (("key", key), ("value", value)):
            decoded = base64.b64decode(doc[name + "Base64"]) if name + "Base64" in doc else doc[name]
            assert decoded == (data.decode() if isinstance(decoded, str) and data is not None else data)
    assert payload_bytes(messages) == sum(len(k or b"") + len(v or b"") for k, v in pairs)
