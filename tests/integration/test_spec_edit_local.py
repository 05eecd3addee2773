"""A spec edit while a batch is recorded but unfinished (issue #11, the first measured failure), for
every sink, in local mode against the real Kafka (and PostgreSQL).

The driver is SIGKILLed once some of the batch's outputs exist, the split and executor settings are
edited (``maxRecords`` 250 -> 0, ``executors.max`` 4 -> 1), and the stream resumes. Built from the
live spec, the replay would cut other ranges than the ones already written: jsonl and parquet then
hold records in two files, the transactional Kafka sink checks other transactional ids' markers
and produces again, and the postgres sink meets a range crossing its offsets chain. The recorded
batch replays with the layout it was planned with; the edit applies from the next batch."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.local_mode import (
    CLI,
    group_offsets,
    jsonl_offsets,
    jsonl_ranges,
    latest_offsets,
    state_committed,
    state_file,
    write_stream,
)
from tests.harness.parquet_check import DirectoryObjects
from tests.harness.parquet_check import assert_exactly_once as assert_parquet_exactly_once

pytestmark = pytest.mark.kafka

PARTITIONS = 4
PER_PARTITION = 5_000
TOTAL = PARTITIONS * PER_PARTITION
BEFORE = {"max": 4, "maxRecords": 250}  # ranges split across units: a batch long enough to kill into
AFTER = {"max": 1, "maxRecords": 0}  # one unit per partition, one executor


class Sink:
    """One sink's processor settings, how much of the output exists, and the exactly-once check."""

    def __init__(
        self,
        processor: dict[str, Any],
        written: Callable[[], int],
        check: Callable[[dict[tuple[str, int], int]], None],
        spec: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.processor, self.written, self.check = processor, written, check
        self.spec, self.env = spec or {}, env or {}


def files(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def jsonl_sink(out: Path) -> Sink:
    def check(latest: dict[tuple[str, int], int]) -> None:
        seen = jsonl_offsets(out)
        assert set(seen) == {(t, p, o) for (t, p), end in latest.items() for o in range(end)}
        assert max(seen.values()) == 1, f"{sum(1 for n in seen.values() if n > 1)} records in two files"

    return Sink({"sink": "jsonl", "options": {"directory": str(out)}}, lambda: files(out), check)


def parquet_sink(out: Path, bootstrap: str) -> Sink:
    def check(latest: dict[tuple[str, int], int]) -> None:
        assert_parquet_exactly_once(DirectoryObjects(), str(out), bootstrap, latest)

    return Sink({"sink": "parquet", "options": {"url": str(out)}}, lambda: files(out), check)


def kafka_sink(kafka: KafkaBroker, output: str) -> Sink:
    def written() -> int:
        return sum(latest_offsets(kafka.bootstrap, output).values())

    def check(latest: dict[tuple[str, int], int]) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap,
                "group.id": "verify",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        consumer.assign([TopicPartition(output, 0, 0)])
        keys: Counter[bytes | None] = Counter()
        deadline = time.time() + 60
        while sum(keys.values()) < TOTAL and time.time() < deadline:
            for msg in consumer.consume(1000, timeout=1.0):
                if not msg.error():
                    keys[msg.key()] += 1
        time.sleep(1)  # anything produced twice would be there by now
        for msg in consumer.consume(1000, timeout=1.0):
            if not msg.error():
                keys[msg.key()] += 1
        consumer.close()
        assert len(keys) == TOTAL and max(keys.values()) == 1, "each input record once in the output"

    return Sink({"sink": "kafka", "options": {"topic": output, "transactional": True}}, written, check)


def postgres_sink(dsn: str, schema: str) -> Sink:
    def count(sql: str) -> int:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(sql).fetchone()
            return int(row[0]) if row else 0

    def written() -> int:
        try:
            return count(f"SELECT count(*) FROM {schema}.records")
        except psycopg.errors.UndefinedTable:
            return 0

    def check(latest: dict[tuple[str, int], int]) -> None:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(f'SELECT topic, partition, "offset" FROM {schema}.records').fetchall()
            stored = conn.execute(f"SELECT topic, partition, next_offset FROM {schema}.offsets").fetchall()
        seen = Counter((t, p, o) for t, p, o in rows)
        assert set(seen) == {(t, p, o) for (t, p), end in latest.items() for o in range(end)}
        assert max(seen.values()) == 1
        assert {(t, p): o for t, p, o in stored} == latest, "the offsets table reaches latest"

    return Sink(
        {"sink": "postgres", "options": {"table": f"{schema}.records", "offsetsTable": f"{schema}.offsets"}},
        written,
        check,
        spec={"offsets": {"store": "postgres"}},
        env={"DIRECTSTREAM_POSTGRES_DSN": dsn},
    )


@pytest.fixture(params=["jsonl", "parquet", "kafka", "postgres"])
def sink(request: pytest.FixtureRequest, kafka: KafkaBroker, topic_name: str, tmp_path: Path) -> Sink:
    kind = request.param
    if kind == "jsonl":
        return jsonl_sink(tmp_path / "out")
    if kind == "parquet":
        return parquet_sink(tmp_path / "lake", kafka.bootstrap)
    if kind == "kafka":
        return kafka_sink(kafka, kafka.create_topic(f"{topic_name}-out", partitions=1))
    request.applymarker(pytest.mark.postgres)
    dsn: str = request.getfixturevalue("postgres")
    return postgres_sink(dsn, request.getfixturevalue("pg_schema"))


def stream_spec(topic: str, sink: Sink, executors: dict[str, Any]) -> dict[str, Any]:
    return {
        "topics": [topic],
        "batchInterval": "200ms",
        "maxAttempts": 5,
        "executors": executors,
        "processor": sink.processor,
        **sink.spec,
    }


def test_a_spec_edit_while_a_batch_is_unfinished_outputs_every_record_once(
    kafka: KafkaBroker, sink: Sink, topic_name: str, tmp_path: Path
) -> None:
    kafka.create_topic(topic_name, partitions=PARTITIONS)
    kafka.produce(topic_name, TOTAL, partitions=PARTITIONS, key=lambda i: f"k{i}".encode())
    latest = latest_offsets(kafka.bootstrap, topic_name)
    state = tmp_path / "state"
    manifest = write_stream(
        tmp_path / "s.yaml", "edited", kafka.bootstrap, stream_spec(topic_name, sink, BEFORE)
    )
    env = {**os.environ, **sink.env}
    driver = subprocess.Popen(
        [*CLI, "run", str(manifest), "--until-caught-up", "--state-dir", str(state)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    try:
        while time.time() < deadline and driver.poll() is None:
            pending = (state / "state.json").exists() and state_file(state).get("pending")
            if pending and sink.written() > 0:
                break
            time.sleep(0.02)
    finally:
        driver.send_signal(signal.SIGKILL)
        _, stderr = driver.communicate()
    assert driver.returncode == -signal.SIGKILL, f"the driver ended by itself: {stderr.decode()[-2000:]}"
    assert state_file(state).get("pending"), "killed with the batch recorded and unfinished"
    assert sink.written() > 0, "some of the batch's output exists"
    assert sum(state_committed(state).values()) == 0, "nothing committed yet"
    time.sleep(1)  # executors die with their driver; a straggler would still be writing now

    write_stream(tmp_path / "s.yaml", "edited", kafka.bootstrap, stream_spec(topic_name, sink, AFTER))
    resumed = subprocess.run(
        [*CLI, "run", str(manifest), "--until-caught-up", "--state-dir", str(state)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "runs with the executor, processor and split settings it was planned with" in resumed.stderr
    assert "the spec change applies from batch 2" in resumed.stderr
    sink.check(latest)
    assert state_committed(state) == latest
    assert group_offsets(kafka.bootstrap, "edited", topic_name) == latest
    if sink.processor["sink"] == "jsonl":
        ranges = jsonl_ranges(tmp_path / "out")
        # The edited split (maxRecords 0) would write each partition as one range.
        assert all(until - start < PER_PARTITION for _, _, start, until in ranges), "batch 1 kept its split"
