"""Checks for the parquet sink's output: read every object back with pyarrow and compare it with
what Kafka holds, record by record; object names against the public layout."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition

NAME = re.compile(
    r"(?P<topic>[^/]+)/(?P<partition>[0-9]+)/(?P<start>[0-9]{20})-(?P<until>[0-9]{20})\.parquet"
)
Record = tuple[bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...], int | None]


class Objects(Protocol):
    """Where the sink wrote: the S3 server (``S3Server``) or a directory (``DirectoryObjects``)."""

    def keys(self, prefix: str) -> list[str]: ...
    def read_table(self, key: str) -> pa.Table: ...


class DirectoryObjects:
    """A directory target seen like a bucket: keys are paths; hidden files (a killed attempt's
    temporary files, whose names start with ".") are not objects."""

    def keys(self, prefix: str) -> list[str]:
        root = Path(prefix)
        return sorted(
            f"{prefix}/{p.relative_to(root).as_posix()}"
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def read_table(self, key: str) -> pa.Table:
        return pq.read_table(key)


def kafka_records(bootstrap: str, latest: dict[tuple[str, int], int]) -> dict[tuple[str, int, int], Record]:
    """Every record below ``latest``: (key, value, headers, timestamp ms), read by an assigned consumer."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "parquet-check",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(t, p, 0) for (t, p), end in latest.items() if end > 0])
    wanted = sum(latest.values())
    found: dict[tuple[str, int, int], Record] = {}
    try:
        for _ in range(600):
            if len(found) >= wanted:
                break
            for m in consumer.consume(10_000, timeout=0.5):
                assert m.error() is None, m.error()
                kind, stamp = m.timestamp()
                headers = tuple((name, value) for name, value in (m.headers() or []))
                found[(m.topic(), m.partition(), m.offset())] = (
                    m.key(),
                    m.value(),
                    headers,
                    stamp if kind else None,
                )
    finally:
        consumer.close()
    assert len(found) == wanted, f"read {len(found)} of {wanted} records back from Kafka"
    return found


def object_ranges(keys: list[str], prefix: str) -> list[tuple[str, int, int, int]]:
    """(topic, partition, from, until) of each key; asserts every key follows the layout."""
    ranges = []
    for key in keys:
        match = NAME.fullmatch(key.removeprefix(prefix + "/"))
        assert key.startswith(prefix + "/") and match, f"unexpected object {key!r}"
        ranges.append((match["topic"], int(match["partition"]), int(match["start"]), int(match["until"])))
    return sorted(ranges)


def assert_one_chain_per_partition(
    ranges: list[tuple[str, int, int, int]], latest: dict[tuple[str, int], int]
) -> None:
    """The objects of each partition tile [0, latest) exactly: no overlap, no gap, nothing beyond."""
    by_partition: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for topic, partition, start, until in ranges:
        by_partition.setdefault((topic, partition), []).append((start, until))
    assert set(by_partition) == {tp for tp, end in latest.items() if end > 0}
    for tp, spans in by_partition.items():
        position = 0
        for start, until in sorted(spans):
            assert start == position, f"{tp}: object {start}-{until} after {position} (overlap or gap)"
            position = until
        assert position == latest[tp], f"{tp}: objects end at {position}, the log at {latest[tp]}"


def assert_exactly_once(s3: Objects, prefix: str, bootstrap: str, latest: dict[tuple[str, int], int]) -> int:
    """Every record of Kafka below ``latest`` is in exactly one object, byte for byte, in the object
    its offset's range names; no other object exists under ``prefix``. Returns the object count."""
    keys = s3.keys(prefix)
    ranges = object_ranges(keys, prefix)
    assert_one_chain_per_partition(ranges, latest)
    expected = kafka_records(bootstrap, latest)
    seen: Counter[tuple[str, int, int]] = Counter()
    for key, (topic, partition, start, until) in zip(keys, ranges, strict=True):
        for row in s3.read_table(key).to_pylist():
            where = (row["topic"], row["partition"], row["offset"])
            assert (row["topic"], row["partition"]) == (topic, partition) and start <= row[
                "offset"
            ] < until, key
            seen[where] += 1
            stamp = row["timestamp"]
            millis: Any = None if stamp is None else round(stamp.timestamp() * 1000)
            headers = tuple((h["key"], h["value"]) for h in row["headers"])
            assert (row["key"], row["value"], headers, millis) == expected[where], where
    assert set(seen) == set(expected), "every record is in an object"
    assert max(seen.values()) == 1, "no record is in two objects"
    return len(keys)
