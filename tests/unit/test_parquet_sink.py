"""The parquet sink's writer with a directory target: columns, row groups, determinism, aborts.

The S3 target runs against the real S3 server in tests/integration/test_parquet.py.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from directstream.executor.contract import (
    KafkaClientSettings,
    OffsetRange,
    PoisonPolicy,
    ProcessorSettings,
    WorkUnit,
)
from directstream.executor.contract.parquet import object_name
from directstream.executor.contract.poison import DecodeFormat
from directstream.executor.processors.parquet import SCHEMA, ParquetProcessor, schema_for

RANGE = OffsetRange("clicks", 2, 100, 400)


def message(offset: int, **fields: Any) -> Message:
    defaults: dict[str, Any] = {
        "key": f"k{offset}".encode(),
        "value": f"value-{offset}".encode() * (1 + offset % 5),
        "timestamp": (TIMESTAMP_CREATE_TIME, 1_700_000_000_000 + offset),
        "headers": [("trace", f"t{offset}".encode())] if offset % 2 else None,
    }
    return Message(topic=RANGE.topic, partition=RANGE.partition, offset=offset, **{**defaults, **fields})


MESSAGES = [message(o) for o in range(RANGE.from_offset, RANGE.until_offset)]


def write(
    directory: Path,
    chunks: list[list[Message]],
    range_: OffsetRange = RANGE,
    decode: tuple[DecodeFormat | None, DecodeFormat | None] = (None, None),
    **options: Any,
) -> Path:
    settings = ProcessorSettings("parquet", {"url": str(directory), **options}, PoisonPolicy(*decode))
    unit = WorkUnit("s", 1, 1, 0, (range_,), KafkaClientSettings("127.0.0.1:1"), settings)
    processor = ParquetProcessor(settings.options, unit)
    processor.open_range(range_)
    for chunk in chunks:
        processor.process(chunk, range_)
    processor.close_range(range_)
    processor.close()
    return directory / object_name(range_)


def split(records: list[Message], cuts: list[int]) -> list[list[Message]]:
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(records))), len(records)]
    return [records[a:b] for a, b in itertools.pairwise(bounds)]


def test_every_field_of_every_record_round_trips(tmp_path: Path) -> None:
    odd = [
        message(100, key=None, value=None, headers=[("a", None), ("b", b"\xff\x00"), ("a", b"again")]),
        message(
            101, key=b"\xfe\xff", value=b"\x00\x01", timestamp=(TIMESTAMP_NOT_AVAILABLE, 0), headers=None
        ),
        message(102, value=b""),
    ]
    path = write(tmp_path, [odd], OffsetRange("clicks", 2, 100, 103))
    assert path.name == "00000000000000000100-00000000000000000103.parquet"
    table = pq.read_table(path)
    assert table.schema == SCHEMA
    rows = table.to_pylist()
    assert [r["offset"] for r in rows] == [100, 101, 102]
    assert {r["topic"] for r in rows} == {"clicks"} and {r["partition"] for r in rows} == {2}
    assert rows[0]["key"] is None and rows[0]["value"] is None
    assert rows[0]["headers"] == [
        {"key": "a", "value": None},
        {"key": "b", "value": b"\xff\x00"},
        {"key": "a", "value": b"again"},
    ]
    assert rows[0]["timestamp"] == datetime.fromtimestamp(1_700_000_000.1, UTC)
    assert rows[1]["timestamp"] is None and rows[1]["key"] == b"\xfe\xff" and rows[1]["headers"] == []
    assert rows[2]["value"] == b""


def test_decoded_keys_and_values_are_typed_columns(tmp_path: Path) -> None:
    """decode.value json: the value column is JSON (Parquet's JSON logical type) that readers parse;
    decode.key string: the key column is a string. The sink gets the original messages (the poison
    guard has already checked that they decode)."""
    records = [
        message(100, key=b"user-1", value=b'{"clicks": 3, "page": "/a"}'),
        message(101, key=None, value=None),
        message(102, key="ключ".encode(), value=b"[1, 2.5, null]"),
    ]
    path = write(tmp_path, [records], OffsetRange("clicks", 2, 100, 103), decode=("string", "json"))
    columns = pq.ParquetFile(path).schema
    assert str(columns.column(4).logical_type) == "String"
    assert str(columns.column(5).logical_type) == "JSON"
    table = pq.read_table(path)
    assert table.schema == schema_for("string", "json")
    assert table.column("key").to_pylist() == ["user-1", None, "ключ"]
    values = [
        None if v is None else json.loads(v)
        for v in table.column("value").combine_chunks().storage.to_pylist()
    ]
    assert values == [{"clicks": 3, "page": "/a"}, None, [1, 2.5, None]]


def test_bytes_decoding_keeps_the_binary_columns(tmp_path: Path) -> None:
    path = write(tmp_path, [MESSAGES[:3]], OffsetRange("clicks", 2, 100, 103), decode=("bytes", "bytes"))
    assert pq.read_table(path).schema == SCHEMA


def test_row_groups_end_at_the_record_limit_or_the_byte_limit(tmp_path: Path) -> None:
    by_records = pq.ParquetFile(write(tmp_path / "a", [MESSAGES], rowGroupRecords=64)).metadata
    assert [by_records.row_group(i).num_rows for i in range(by_records.num_row_groups)] == [64] * 4 + [44]
    sizes = [len(m.key()) + len(m.value()) for m in MESSAGES]
    by_bytes = pq.ParquetFile(write(tmp_path / "b", [MESSAGES], rowGroupBytes=2_000)).metadata
    counts = [by_bytes.row_group(i).num_rows for i in range(by_bytes.num_row_groups)]
    assert sum(counts) == 300
    start = 0
    for count in counts[:-1]:  # each group ends with the record that reaches the limit
        assert sum(sizes[start : start + count]) >= 2_000 > sum(sizes[start : start + count - 1])
        start += count
    assert pq.read_table(tmp_path / "b" / object_name(RANGE)).column("offset").to_pylist() == list(
        range(100, 400)
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 299), max_size=12), st.sampled_from([(7, 10**9), (10**6, 900), (50, 3_000)]))
def test_a_replay_writes_the_same_bytes_however_the_records_were_chunked(
    tmp_path: Path, cuts: list[int], limits: tuple[int, int]
) -> None:
    records, size = limits
    options = {"rowGroupRecords": records, "rowGroupBytes": size}
    whole = write(tmp_path / "whole", [MESSAGES], **options).read_bytes()
    chunked = write(tmp_path / "chunked", split(MESSAGES, cuts), **options).read_bytes()
    assert hashlib.sha256(whole).digest() == hashlib.sha256(chunked).digest()


def test_a_range_without_records_still_gets_its_object(tmp_path: Path) -> None:
    path = write(tmp_path, [], OffsetRange("clicks", 0, 5, 9))
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.schema == SCHEMA


@pytest.mark.parametrize("compression", ["zstd", "snappy", "gzip", "lz4", "brotli", "none"])
def test_every_codec_writes_what_readers_read(tmp_path: Path, compression: str) -> None:
    path = write(tmp_path, [MESSAGES], compression=compression)
    codec = pq.ParquetFile(path).metadata.row_group(0).column(5).compression
    assert codec == ("UNCOMPRESSED" if compression == "none" else compression.upper())
    assert pq.read_table(path).num_rows == 300


def test_an_aborted_range_leaves_nothing_and_a_killed_attempts_temp_file_is_removed(tmp_path: Path) -> None:
    settings = ProcessorSettings("parquet", {"url": str(tmp_path), "rowGroupRecords": 10})
    unit = WorkUnit("s", 1, 1, 0, (RANGE,), KafkaClientSettings("127.0.0.1:1"), settings)
    processor = ParquetProcessor(settings.options, unit)
    processor.open_range(RANGE)
    processor.process(MESSAGES[:50], RANGE)
    folder = tmp_path / "clicks" / "2"
    assert [p.name.startswith(".") for p in folder.iterdir()] == [True], "only a hidden temporary file"
    processor.abort_range(RANGE)
    processor.close()
    assert list(folder.iterdir()) == []
    # A SIGKILLed attempt's temporary file stays behind, hidden; the next attempt of the range removes it.
    leftover = folder / f".{object_name(RANGE).rsplit('/', 1)[1]}.abc123.tmp"
    leftover.write_bytes(b"partial")
    write(tmp_path, [MESSAGES])
    assert sorted(p.name for p in folder.iterdir()) == [object_name(RANGE).rsplit("/", 1)[1]]


def test_a_relative_directory_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(Path("lake"), [MESSAGES[:10]], OffsetRange("clicks", 2, 100, 110))
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")] == [
        "lake/clicks/2/00000000000000000100-00000000000000000110.parquet"
    ]
