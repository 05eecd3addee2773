"""The chunk JSON encoder against the previous one (a dict per record, stdlib ``json``), byte for byte.

The jsonl format is public (DESIGN.md, ``directstream.executor.records``): the fast encoder must write
exactly what the per-record encoder wrote, for every kind of key, value, header and timestamp.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, TIMESTAMP_NOT_AVAILABLE, Message
from hypothesis import given
from hypothesis import strategies as st

from directstream.executor.contract import OffsetRange
from directstream.executor.processors import jsonl
from directstream.executor.processors.jsonl import JsonlProcessor, range_path
from directstream.executor.records import (
    Headers,
    KafkaRecord,
    encode_json_lines,
    json_lines,
    record_to_json,
)

_previous_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def previous_json_lines(records: Sequence[KafkaRecord]) -> bytes:
    """The encoder the jsonl and stdout sinks used before the chunk encoder."""
    lines = [_previous_encode(record_to_json(record)) for record in records]
    lines.append("")
    return "\n".join(lines).encode("utf-8")


def message(
    offset: int,
    key: bytes | None = None,
    value: bytes | None = b"v",
    headers: list[tuple[str, bytes | None]] | None = None,
    timestamp: tuple[int, int] = (TIMESTAMP_CREATE_TIME, 1_700_000_000_000),
    topic: str = "t",
    partition: int = 0,
) -> Message:
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=headers,
        timestamp=timestamp,
    )


def assert_same_as_previous(records: Sequence[KafkaRecord]) -> None:
    encoded = encode_json_lines(records)
    assert encoded == previous_json_lines(records)
    assert json_lines(records) == encoded.decode("utf-8")


# Text that JSON must escape or that is easy to get wrong: quotes, backslashes, control characters,
# DEL, non-ASCII letters, line and paragraph separators, astral characters.
TRICKY_TEXT = ['"quoted" \\ back', "\x00\x01\x1f\x7f", "tab\tnl\ncr\r", "é ü ß 漢字", "\u2028\u2029", "😀🚀"]
binary = st.binary(max_size=40)
payload = (
    st.none() | binary | st.text(max_size=30).map(str.encode) | st.sampled_from(TRICKY_TEXT).map(str.encode)
)
header_value = st.none() | binary | st.text(max_size=10).map(str.encode)
headers = st.none() | st.lists(st.tuples(st.text(max_size=8), header_value), max_size=4)
timestamps = st.tuples(
    st.sampled_from([TIMESTAMP_NOT_AVAILABLE, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME]),
    st.integers(min_value=0, max_value=2**53),
)


@given(st.lists(st.tuples(payload, payload, headers, timestamps), max_size=30))
def test_any_chunk_encodes_as_the_previous_encoder_did(
    rows: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]] | None, tuple[int, int]]],
) -> None:
    records = [message(1000 + i, key, value, hdrs, stamp) for i, (key, value, hdrs, stamp) in enumerate(rows)]
    assert_same_as_previous(records)


def test_uniform_chunks_take_the_column_paths() -> None:
    # Null keys, text keys, no headers, empty values: each column is handled in one C call.
    assert_same_as_previous([message(i) for i in range(100)])
    assert_same_as_previous([message(i, key=b"%d" % i, value=b"") for i in range(100)])
    assert_same_as_previous([message(i, key=b"k", value=None) for i in range(100)])


def test_one_binary_value_in_a_text_chunk() -> None:
    records = [message(i, key=b"k%d" % i, value=b"text %d" % i) for i in range(50)]
    records[17] = message(17, key=b"\xff\xfe", value=b"\x80\x00binary")
    assert_same_as_previous(records)
    line = json.loads(encode_json_lines(records).splitlines()[17])
    assert "key" not in line and "value" not in line
    assert (line["keyBase64"], line["valueBase64"]) == ("//4=", "gABiaW5hcnk=")


def test_headers_with_null_binary_repeated_and_unicode_values() -> None:
    hdrs = [("trace", b"t1"), ("bin", b"\xff\x01"), ("nothing", None), ("trace", "ü😀".encode()), ("", b"")]
    records = [message(0, headers=hdrs), message(1), message(2, headers=[])]
    assert_same_as_previous(records)
    first = json.loads(encode_json_lines(records).splitlines()[0])
    assert first["headers"] == [
        ["trace", "t1"],
        ["bin", None, "/wE="],
        ["nothing", None],
        ["trace", "ü😀"],
        ["", ""],
    ]


def test_missing_timestamps_and_large_records() -> None:
    big_text = ("x" * 1000 + "é") * 5000  # ~5 MB of text
    big_binary = os.urandom(1 << 20) + b"\xff"  # 1 MiB that is not UTF-8
    records = [
        message(0, value=big_text.encode(), timestamp=(TIMESTAMP_NOT_AVAILABLE, 0)),
        message(1, key=big_binary, value=big_binary),
        message(2, value=b"small", timestamp=(TIMESTAMP_LOG_APPEND_TIME, 5)),
    ]
    assert_same_as_previous(records)


class HandBuilt:
    """A record that is not a ``confluent_kafka.Message`` (the ``KafkaRecord`` protocol only)."""

    def __init__(self, offset: int, value: bytes | None, headers: Headers | None) -> None:
        self._offset, self._value, self._headers = offset, value, headers

    def topic(self) -> str | None:
        return "hand"

    def partition(self) -> int | None:
        return 1

    def offset(self) -> int | None:
        return self._offset

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (TIMESTAMP_CREATE_TIME, 7)


def test_records_that_are_not_messages_and_dict_headers() -> None:
    records = [
        HandBuilt(0, b"a", {"h": b"v", "s": "already text", "n": None, "b": b"\xfe"}),
        HandBuilt(1, b"\xff", None),
    ]
    assert_same_as_previous(records)


def test_empty_chunk_is_empty() -> None:
    assert encode_json_lines([]) == b"" and json_lines([]) == ""


@pytest.mark.parametrize("writeback_bytes", [jsonl.WRITEBACK_BYTES, 1_000])
def test_jsonl_files_hold_exactly_the_previous_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writeback_bytes: int
) -> None:
    monkeypatch.setattr(jsonl, "WRITEBACK_BYTES", writeback_bytes)  # 1,000: the writeback hint per chunk
    range_ = OffsetRange("t", 0, 0, 300)
    chunks = [
        [message(i, key=b"k%d" % i) for i in range(100)],
        [message(i, value=b"\xff%d" % i, headers=[("h", None)]) for i in range(100, 200)],
        [message(i, value=f"ü{i}".encode()) for i in range(200, 300)],
    ]
    sink = JsonlProcessor({"directory": str(tmp_path)})
    sink.open_range(range_)
    for chunk in chunks:
        sink.process(chunk, range_)
    sink.close_range(range_)
    sink.close()
    expected = b"".join(previous_json_lines(chunk) for chunk in chunks)
    assert range_path(tmp_path, range_).read_bytes() == expected
    assert [p.name for p in range_path(tmp_path, range_).parent.iterdir()] == [
        range_path(tmp_path, range_).name
    ]
