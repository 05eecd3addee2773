"""Exactly-once outputs against a real broker and a real PostgreSQL, with ``directstream-executor``
run as a subprocess as users run it: the ``postgres`` sink (offsets in the results' database) and
the transactional ``kafka`` sink. Crashes are real SIGKILLs; zombies are real stopped processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from psycopg import sql

from directstream.executor.contract import ExecutorResult, OffsetRange
from directstream.executor.offset_store_postgres import read_stored_offsets, seed_offsets
from tests.harness.kafka_fixtures import KafkaBroker

EXECUTOR = Path(sys.executable).parent / "directstream-executor"


def unit_doc(
    kafka: KafkaBroker,
    ranges: list[OffsetRange],
    processor: dict[str, Any],
    *,
    stream: str = "eos",
    batch: int = 1,
    attempt: int = 1,
    index: int = 0,
) -> dict[str, Any]:
    return {
        "version": 1,
        "stream": stream,
        "batchId": batch,
        "attempt": attempt,
        "index": index,
        "ranges": [r.to_json() for r in ranges],
        "kafka": {"bootstrapServers": kafka.bootstrap, "isolationLevel": "read_committed"},
        "processor": processor,
    }


class Run:
    """One ``directstream-executor`` process."""

    def __init__(self, doc: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None) -> None:
        name = uuid.uuid4().hex[:8]
        self.result_file = tmp_path / f"result-{name}.json"
        unit_file = tmp_path / f"unit-{name}.json"
        unit_file.write_text(json.dumps(doc))
        # Output to files, not pipes: executors that run side by side (and wait for each other)
        # must never block on a pipe that the test reads only after another process ended.
        self.stderr_file = tmp_path / f"executor-{name}.log"
        with self.stderr_file.open("w") as stderr:
            self.proc = subprocess.Popen(
                [str(EXECUTOR), "--work-unit", str(unit_file), "--result-file", str(self.result_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, **(env or {})},
            )

    def wait(self, timeout: float = 120) -> tuple[int, str, ExecutorResult | None]:
        code = self.proc.wait(timeout)
        stderr = self.stderr_file.read_text()
        assert "Traceback" not in stderr, stderr
        result = ExecutorResult.loads(self.result_file.read_text()) if self.result_file.exists() else None
        return code, stderr, result

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


def run(doc: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    code, stderr, _ = Run(doc, tmp_path, env).wait()
    return code, stderr


def run_until_success(
    doc: dict[str, Any], tmp_path: Path, env: dict[str, str], kills: int, window: float
) -> int:
    """Run ``doc``, SIGKILLing the first ``kills`` attempts at a random point of ``window``
    seconds (startup, reading, writing, committing); returns the number of attempts killed."""
    rng = random.Random(doc["batchId"])
    killed = 0
    for attempt in range(1, 20):
        process = Run({**doc, "attempt": attempt}, tmp_path, env)
        if attempt <= kills:
            time.sleep(rng.uniform(0.0, window))
            if process.proc.poll() is None:
                process.kill()
                killed += 1
                continue
        code, stderr, _ = process.wait()
        assert code == 0, stderr
        return killed
    raise AssertionError("never succeeded")


# -- PostgreSQL -----------------------------------------------------------------------------------


def pg_processor(schema: str, **options: Any) -> dict[str, Any]:
    return {
        "sink": "postgres",
        "options": {"table": f"{schema}.records", "offsetsTable": f"{schema}.offsets", **options},
    }


def pg_env(dsn: str) -> dict[str, str]:
    return {"DIRECTSTREAM_POSTGRES_DSN": dsn}


def stored_rows(dsn: str, schema: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL('SELECT topic, partition, "offset", key, value FROM {}.records ORDER BY 1, 2, 3')
        return conn.execute(query.format(sql.Identifier(schema))).fetchall()


def offsets_of(dsn: str, schema: str, stream: str = "eos") -> dict[tuple[str, int], int]:
    return read_stored_offsets(dsn, f"{schema}.offsets", stream)


@pytest.mark.kafka
@pytest.mark.postgres
def test_postgres_ranges_land_once_and_a_replay_writes_nothing(
    kafka: KafkaBroker, postgres: str, pg_schema: str, topic_name: str, tmp_path: Path
) -> None:
    topic = kafka.create_topic(topic_name, 2)
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for i in range(400):
        headers = [("bin", b"\xff\x00"), ("text", b"t%d" % i)] if i % 50 == 0 else None
        producer.produce(topic, key=b"k%d" % i, value=b"\x00v%d" % i, partition=i % 2, headers=headers)
    assert producer.flush(30) == 0
    ranges = [OffsetRange(topic, 0, 10, 150), OffsetRange(topic, 1, 0, 200)]
    seed_offsets(postgres, f"{pg_schema}.offsets", "eos", {(topic, 0): 10, (topic, 1): 0})
    doc = unit_doc(kafka, ranges, pg_processor(pg_schema))

    code, stderr = run(doc, tmp_path, pg_env(postgres))
    assert code == 0, stderr
    rows = stored_rows(postgres, pg_schema)
    expected = [(topic, r.partition, o) for r in ranges for o in range(r.from_offset, r.until_offset)]
    assert [row[:3] for row in rows] == expected
    assert rows[0][3:] == (b"k20", b"\x00v20")  # partition 0 offset 10 holds record 20
    assert offsets_of(postgres, pg_schema) == {(topic, 0): 150, (topic, 1): 200}
    with psycopg.connect(postgres) as conn:
        stored = conn.execute(
            sql.SQL('SELECT headers, timestamp FROM {}.records WHERE partition = 0 AND "offset" = 25').format(
                sql.Identifier(pg_schema)
            )
        ).fetchone()
    assert stored is not None and stored[0] == [["bin", None, "/wA="], ["text", "t50"]]
    assert stored[1] is not None

    # Replay after "committed, then died before reporting": success, nothing written again.
    code, stderr = run({**doc, "attempt": 2}, tmp_path, pg_env(postgres))
    assert code == 0, stderr
    assert "already applied" in stderr
    assert stored_rows(postgres, pg_schema) == rows

    # A stale attempt (the offsets table is already past its from) fails and changes nothing.
    stale = unit_doc(kafka, [OffsetRange(topic, 0, 10, 100)], pg_processor(pg_schema), batch=6)
    code, stderr = run(stale, tmp_path, pg_env(postgres))
    assert code == 1
    assert "stale attempt: offsets table says 150" in stderr and "this range starts at 10" in stderr
    assert stored_rows(postgres, pg_schema) == rows
    assert offsets_of(postgres, pg_schema) == {(topic, 0): 150, (topic, 1): 200}


@pytest.mark.kafka
@pytest.mark.postgres
def test_postgres_transform_writes_user_rows(
    kafka: KafkaBroker, postgres: str, pg_schema: str, topic_name: str, tmp_path: Path
) -> None:
    topic = kafka.create_topic(topic_name, 1)
    kafka.produce(topic, 100, 1)
    (tmp_path / "rowmaker.py").write_text(
        "def row(record):\n"
        "    n = record.offset()\n"
        "    if n % 2:\n"
        "        return None\n"
        "    return {'id': record.key().decode(), 'n': n, 'doc': {'v': record.value().decode()}}\n"
    )
    with psycopg.connect(postgres) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {}.evens (id text PRIMARY KEY, n int, doc jsonb)").format(
                sql.Identifier(pg_schema)
            )
        )
    processor = pg_processor(
        pg_schema, table=f"{pg_schema}.evens", transform="rowmaker:row", seedMissing=True
    )
    doc = unit_doc(kafka, [OffsetRange(topic, 0, 0, 100)], processor)
    code, stderr = run(doc, tmp_path, {**pg_env(postgres), "PYTHONPATH": str(tmp_path)})
    assert code == 0, stderr
    with psycopg.connect(postgres) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id, n, doc FROM {}.evens ORDER BY n").format(sql.Identifier(pg_schema))
        ).fetchall()
    assert rows == [(f"key-{n}", n, {"v": f"record-{n}"}) for n in range(0, 100, 2)]
    assert offsets_of(postgres, pg_schema) == {(topic, 0): 100}


@pytest.mark.kafka
@pytest.mark.postgres
def test_postgres_sigkill_at_random_points_then_rerun_is_exactly_once(
    kafka: KafkaBroker, postgres: str, pg_schema: str, topic_name: str, tmp_path: Path
) -> None:
    topic = kafka.create_topic(topic_name, 2)
    per_batch, batches = 10_000, 12
    kafka.produce(topic, 2 * per_batch * batches, 2, value=lambda i: b"v" * 100)
    seed_offsets(postgres, f"{pg_schema}.offsets", "eos", {(topic, 0): 0, (topic, 1): 0})
    killed = 0
    for batch in range(1, batches + 1):
        ranges = [OffsetRange(topic, p, (batch - 1) * per_batch, batch * per_batch) for p in (0, 1)]
        doc = unit_doc(kafka, ranges, pg_processor(pg_schema), batch=batch)
        killed += run_until_success(doc, tmp_path, pg_env(postgres), kills=batch % 3 + 1, window=1.0)
    assert killed >= 10
    total = per_batch * batches
    rows = stored_rows(postgres, pg_schema)
    assert [row[:3] for row in rows] == [(topic, p, o) for p in (0, 1) for o in range(total)]
    assert offsets_of(postgres, pg_schema) == {(topic, 0): total, (topic, 1): total}


@pytest.mark.kafka
@pytest.mark.postgres
def test_postgres_two_executors_racing_on_one_range(
    kafka: KafkaBroker, postgres: str, pg_schema: str, topic_name: str, tmp_path: Path
) -> None:
    topic = kafka.create_topic(topic_name, 1)
    kafka.produce(topic, 20_000, 1)
    seed_offsets(postgres, f"{pg_schema}.offsets", "eos", {(topic, 0): 0})
    # Two drivers (batch ids differ): one wins, the loser fails as stale.
    first = OffsetRange(topic, 0, 0, 10_000)
    runs = [
        Run(unit_doc(kafka, [first], pg_processor(pg_schema), batch=b), tmp_path, pg_env(postgres))
        for b in (3, 4)
    ]
    outcomes = sorted((code, stderr) for code, stderr, _ in (r.wait() for r in runs))
    assert [code for code, _ in outcomes] == [0, 1], outcomes
    assert "stale attempt: offsets table says 10000" in outcomes[1][1]
    # Two copies of the same unit: one applies it, the other finds it applied and writes nothing.
    second = OffsetRange(topic, 0, 10_000, 20_000)
    runs = [
        Run(unit_doc(kafka, [second], pg_processor(pg_schema), batch=5), tmp_path, pg_env(postgres))
        for _ in "ab"
    ]
    copies = [r.wait() for r in runs]
    assert [code for code, _, _ in copies] == [0, 0]
    assert sum("already applied" in stderr for _, stderr, _ in copies) == 1
    assert [row[2] for row in stored_rows(postgres, pg_schema)] == list(range(20_000))
    assert offsets_of(postgres, pg_schema) == {(topic, 0): 20_000}


@pytest.mark.kafka
@pytest.mark.postgres
def test_postgres_split_partitions_commit_in_order_across_executors(
    kafka: KafkaBroker, postgres: str, pg_schema: str, topic_name: str, tmp_path: Path
) -> None:
    topic = kafka.create_topic(topic_name, 2)
    kafka.produce(topic, 100_000, 2)
    seed_offsets(postgres, f"{pg_schema}.offsets", "eos", {(topic, 0): 0, (topic, 1): 0})
    processor = pg_processor(pg_schema, chainWaitSeconds=60)
    # Partition 0 in three pieces, one per executor; the last piece starts first.
    pieces = [OffsetRange(topic, 0, start, start + 10_000) for start in (20_000, 10_000, 0)]
    runs = []
    for index, piece in enumerate(pieces):
        runs.append(Run(unit_doc(kafka, [piece], processor, index=index), tmp_path, pg_env(postgres)))
        time.sleep(0.3)
    for process in runs:
        code, stderr, _ = process.wait()
        assert code == 0, stderr
    # Crossing pieces: each unit holds the successor of a piece in the other; neither deadlocks.
    crossing = [
        [OffsetRange(topic, 0, 40_000, 50_000), OffsetRange(topic, 1, 0, 15_000)],
        [OffsetRange(topic, 0, 30_000, 40_000), OffsetRange(topic, 1, 15_000, 30_000)],
    ]
    runs = [
        Run(unit_doc(kafka, ranges, processor, batch=2, index=i), tmp_path, pg_env(postgres))
        for i, ranges in enumerate(crossing)
    ]
    for process in runs:
        code, stderr, _ = process.wait()
        assert code == 0, stderr
    rows = stored_rows(postgres, pg_schema)
    assert [row[1:3] for row in rows] == [(0, o) for o in range(50_000)] + [(1, o) for o in range(30_000)]
    assert offsets_of(postgres, pg_schema) == {(topic, 0): 50_000, (topic, 1): 30_000}


# -- transactional Kafka --------------------------------------------------------------------------


def tx_processor(target: str) -> dict[str, Any]:
    return {"sink": "kafka", "options": {"topic": target, "transactional": True}}


def read_committed(kafka: KafkaBroker, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of partition 0 a read_committed consumer sees, in order."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": "eos-check",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    found: list[tuple[bytes | None, bytes | None]] = []
    deadline = time.monotonic() + 30
    try:
        while True:
            # consume() waits for all it asked for: short timeouts, an overall deadline.
            messages = consumer.consume(10_000, timeout=0.2)
            assert messages or time.monotonic() < deadline, "timed out reading the output"
            for message in messages:
                if message.error():
                    return found
                found.append((message.key(), message.value()))
    finally:
        consumer.close()


@pytest.mark.kafka
def test_transactional_kafka_output_is_exactly_the_input_and_a_replay_skips(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    source = kafka.create_topic(topic_name, 2)
    target = kafka.create_topic(topic_name + "-out", 1)
    kafka.produce(source, 2_000, 2)
    ranges = [OffsetRange(source, 0, 100, 1_000), OffsetRange(source, 1, 0, 1_000)]
    doc = unit_doc(kafka, ranges, tx_processor(target), stream=f"eos-{uuid.uuid4().hex[:6]}")
    code, stderr = run(doc, tmp_path)
    assert code == 0, stderr
    output = read_committed(kafka, target)
    expected = {(f"key-{i}".encode(), f"record-{i}".encode()) for i in range(2_000) if i % 2 or i >= 200}
    assert len(output) == len(expected) == 1_900 and set(output) == expected
    # "Committed, then died before reporting": the re-run finds its marker and produces nothing.
    code, stderr = run({**doc, "attempt": 2}, tmp_path)
    assert code == 0, stderr
    assert stderr.count("already in the output") == 2
    assert read_committed(kafka, target) == output


@pytest.mark.kafka
def test_transactional_kafka_sigkill_at_random_points_then_rerun_is_exactly_once(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    source = kafka.create_topic(topic_name, 2)
    target = kafka.create_topic(topic_name + "-out", 1)
    per_batch, batches = 20_000, 12
    total = 2 * per_batch * batches
    kafka.produce(source, total, 2, value=lambda i: b"%d" % i + b"v" * 96)
    stream = f"eos-{uuid.uuid4().hex[:6]}"
    killed = 0
    for batch in range(1, batches + 1):
        ranges = [OffsetRange(source, p, (batch - 1) * per_batch, batch * per_batch) for p in (0, 1)]
        doc = unit_doc(kafka, ranges, tx_processor(target), stream=stream, batch=batch, index=batch % 2)
        killed += run_until_success(doc, tmp_path, {}, kills=batch % 3 + 1, window=0.8)
    assert killed >= 10
    keys = [key for key, _ in read_committed(kafka, target)]
    assert len(keys) == total and set(keys) == {f"key-{i}".encode() for i in range(total)}


@pytest.mark.kafka
def test_transactional_kafka_fences_a_zombie(kafka: KafkaBroker, topic_name: str, tmp_path: Path) -> None:
    source = kafka.create_topic(topic_name, 1)
    target = kafka.create_topic(topic_name + "-out", 1)
    kafka.produce(source, 500_000, 1)
    doc = unit_doc(
        kafka, [OffsetRange(source, 0, 0, 500_000)], tx_processor(target), stream=f"eos-{topic_name}"
    )
    zombie = Run(doc, tmp_path)
    # read_uncommitted: the high watermark, which moves while the transaction is open.
    probe = {
        "bootstrap.servers": kafka.bootstrap,
        "group.id": "eos-check",
        "isolation.level": "read_uncommitted",
    }
    consumer = Consumer(probe)
    deadline = time.monotonic() + 60
    while consumer.get_watermark_offsets(TopicPartition(target, 0), timeout=10)[1] == 0:
        assert time.monotonic() < deadline and zombie.proc.poll() is None, "the first attempt made no output"
        time.sleep(0.05)
    consumer.close()
    zombie.proc.send_signal(signal.SIGSTOP)  # mid-transaction, as if partitioned away
    try:
        code, stderr = run({**doc, "attempt": 2}, tmp_path)
        assert code == 0, stderr
        assert "already in the output" not in stderr  # the zombie had not committed
    finally:
        zombie.proc.send_signal(signal.SIGCONT)
    code, stderr, result = zombie.wait()
    assert code == 1, stderr
    assert result is not None and result.error is not None and "transaction" in result.error
    keys = [key for key, _ in read_committed(kafka, target)]
    assert len(keys) == 500_000 == len(set(keys))


def _history_with_aborts_and_compaction(kafka: KafkaBroker, topic: str) -> list[int]:
    """Transactions (committed, aborted, committed) then compacted plain records; the offsets a
    read_committed reader sees."""
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": f"eos-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    for label, commit in (("a", True), ("x", False), ("b", True)):
        producer.begin_transaction()
        for i in range(10):
            producer.produce(topic, key=f"{label}{i}".encode(), value=f"{label}{i}".encode(), partition=0)
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    plain = Producer({"bootstrap.servers": kafka.bootstrap})
    for i in range(200):
        plain.produce(topic, key=f"k{i % 10}".encode(), value=f"v{i}".encode(), partition=0)
    assert plain.flush(30) == 0
    deadline = time.monotonic() + 90
    while True:  # each new record rolls the aged segment so the cleaner can compact it
        time.sleep(1)
        plain.produce(topic, key=b"roll", value=b"roll", partition=0)
        plain.flush(30)
        consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap,
                "group.id": "eos-check",
                "isolation.level": "read_committed",
            }
        )
        consumer.assign([TopicPartition(topic, 0, 0)])
        seen: list[int] = []
        while not seen or seen[-1] < 232:
            batch = consumer.consume(1000, timeout=5)
            assert batch, "timed out reading the input"
            seen += [m.offset() for m in batch if m.error() is None]
        consumer.close()
        if len([o for o in seen if 33 <= o < 233]) < 150:
            return [o for o in seen if o < 233]
        assert time.monotonic() < deadline, "the log cleaner did not compact the topic"


@pytest.mark.kafka
def test_transactional_kafka_over_aborted_input_and_compaction_gaps(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    config = {
        "cleanup.policy": "compact",
        "segment.ms": "100",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100",
        "min.compaction.lag.ms": "0",
    }
    source = kafka.create_topic(topic_name, 1, config)
    target = kafka.create_topic(topic_name + "-out", 1)
    visible = _history_with_aborts_and_compaction(kafka, source)
    # Two batches: the first ends inside the aborted transaction, the second ends in a compacted gap.
    stream = f"eos-{uuid.uuid4().hex[:6]}"
    gaps = sorted(set(range(33, 233)) - set(visible))
    split = 15
    for batch, range_ in enumerate(
        [OffsetRange(source, 0, 0, split), OffsetRange(source, 0, split, gaps[-1] + 1)], 1
    ):
        doc = unit_doc(kafka, [range_], tx_processor(target), stream=stream, batch=batch)
        for attempt in (1, 2):  # the second attempt finds the output there and skips
            started = time.monotonic()
            code, stderr = run({**doc, "attempt": attempt}, tmp_path)
            assert code == 0, stderr
            assert time.monotonic() - started < 20
    values = [value for _, value in read_committed(kafka, target)]
    assert not [v for v in values if v is not None and v.startswith(b"x")]
    assert len(values) == len([o for o in visible if o <= gaps[-1]])
    assert values[:20] == [f"a{i}".encode() for i in range(10)] + [f"b{i}".encode() for i in range(10)]
