"""The exactly-once recipes through the whole driver in local mode, with executors and the
driver killed at random points: PostgreSQL (offsets stored with the results) and Kafka to
Kafka with transactions."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.local_mode import (
    CLI,
    group_offsets,
    latest_offsets,
    run_with_kills,
    state_committed,
    write_stream,
)

pytestmark = pytest.mark.kafka


@pytest.mark.postgres
def test_postgres_offsets_with_results_survive_killed_executors_and_driver(
    kafka: KafkaBroker, postgres: str, pg_schema: str, topic_name: str, tmp_path: Path
):
    kafka.create_topic(topic_name, partitions=3)
    kafka.produce(topic_name, 6_000, partitions=3)
    spec = {
        "topics": [topic_name],
        "batchInterval": "200ms",
        "maxAttempts": 20,
        "rate": {"maxPerPartition": 1_000},  # 200 per partition per batch: a run long enough to kill into
        "executors": {"max": 3, "maxRecords": 100},
        "offsets": {"store": "postgres"},
        "processor": {
            "sink": "postgres",
            "options": {"table": f"{pg_schema}.records", "offsetsTable": f"{pg_schema}.offsets"},
        },
    }
    manifest = write_stream(tmp_path / "s.yaml", "pgstream", kafka.bootstrap, spec)
    state = tmp_path / "state"
    env = {**os.environ, "DIRECTSTREAM_POSTGRES_DSN": postgres}

    # The driver itself dies mid-run once; the rerun resumes the recorded plan.
    first = subprocess.Popen(
        [*CLI, "run", str(manifest), "--until-caught-up", "--state-dir", str(state)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    kills, _ = run_with_kills(manifest, state, tmp_path, env=env, kills=6, seed=5)
    assert kills >= 3

    latest = latest_offsets(kafka.bootstrap, topic_name)
    with psycopg.connect(postgres) as conn:
        rows = conn.execute(f'SELECT topic, partition, "offset" FROM {pg_schema}.records').fetchall()
        stored = conn.execute(f"SELECT topic, partition, next_offset FROM {pg_schema}.offsets").fetchall()
    seen = Counter((t, p, o) for t, p, o in rows)
    assert max(seen.values()) == 1
    assert set(seen) == {(t, p, o) for (t, p), end in latest.items() for o in range(end)}
    assert {(t, p): o for t, p, o in stored} == latest, "the stored offsets reach latest"
    assert state_committed(state) == latest, "the state mirrors the table"
    assert group_offsets(kafka.bootstrap, "pgstream", topic_name) == latest, "the group mirrors the table"


@pytest.mark.postgres
def test_two_drivers_racing_on_one_stream_apply_nothing_twice(
    kafka: KafkaBroker, postgres: str, pg_schema: str, topic_name: str, tmp_path: Path
):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 4_000, partitions=2)
    spec = {
        "topics": [topic_name],
        "batchInterval": "100ms",
        "maxAttempts": 2,
        "rate": {"maxPerPartition": 5_000},
        "offsets": {"store": "postgres"},
        "processor": {
            "sink": "postgres",
            "options": {"table": f"{pg_schema}.records", "offsetsTable": f"{pg_schema}.offsets"},
        },
    }
    manifest = write_stream(tmp_path / "s.yaml", "racing", kafka.bootstrap, spec)
    env = {**os.environ, "DIRECTSTREAM_POSTGRES_DSN": postgres}
    drivers = [
        subprocess.Popen(
            [*CLI, "run", str(manifest), "--until-caught-up", "--state-dir", str(tmp_path / f"st{i}")],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [d.communicate(timeout=300) for d in drivers]
    codes = [d.returncode for d in drivers]
    assert 0 in codes, outputs
    stderr = "\n".join(err for _, err in outputs)
    if codes != [0, 0]:
        assert "stale attempt" in stderr, "the loser must say why"
    with psycopg.connect(postgres) as conn:
        rows = conn.execute(f'SELECT topic, partition, "offset" FROM {pg_schema}.records').fetchall()
    seen = Counter(rows)
    assert max(seen.values()) == 1 and len(seen) == 4_000


def test_kafka_to_kafka_transactions_survive_killed_executors(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
):
    kafka.create_topic(topic_name, partitions=2)
    output = kafka.create_topic(f"{topic_name}-out", partitions=1)
    kafka.produce(topic_name, 3_000, partitions=2, key=lambda i: f"k{i}".encode())
    spec = {
        "topics": [topic_name],
        "batchInterval": "200ms",
        "maxAttempts": 20,
        "rate": {"maxPerPartition": 1_500},
        "processor": {"sink": "kafka", "options": {"topic": output, "transactional": True}},
    }
    manifest = write_stream(tmp_path / "s.yaml", "txcopy", kafka.bootstrap, spec)
    kills, _ = run_with_kills(manifest, tmp_path / "state", tmp_path, kills=5, seed=9)
    assert kills >= 2

    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": "verify",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    end = latest_offsets(kafka.bootstrap, output)[(output, 0)]
    consumer.assign([TopicPartition(output, 0, 0)])
    keys: Counter[bytes] = Counter()
    deadline = time.time() + 60
    while time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if consumer.position([TopicPartition(output, 0)])[0].offset >= end:
                break
            continue
        keys[msg.key()] += 1
    consumer.close()
    assert len(keys) == 3_000 and max(keys.values()) == 1, "each input record exactly once in the output"
