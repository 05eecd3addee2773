"""The parquet sink against a real broker and a real S3 API server (S3Proxy): ``directstream-executor``
as users run it, and whole local-mode runs with executors and the driver SIGKILLed.

Every check reads the objects back with pyarrow and compares them with Kafka record by record
(``tests/harness/parquet_check.py``): each record in exactly one object, the objects of a partition
tiling ``[0, latest)``, nothing else under the prefix.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from directstream.executor.contract import OffsetRange
from directstream.executor.contract.parquet import object_name
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.local_mode import (
    CLI,
    group_offsets,
    latest_offsets,
    run_with_kills,
    state_committed,
    write_stream,
)
from tests.harness.parquet_check import DirectoryObjects, assert_exactly_once
from tests.harness.s3_fixtures import S3Server
from tests.integration.test_exactly_once_sinks import EXECUTOR, Run, unit_doc

pytestmark = [pytest.mark.kafka]


def produce_mixed(kafka: KafkaBroker, topic: str, count: int, partitions: int, value_size: int = 40) -> None:
    """Records with binary and absent keys/values, headers (binary, repeated, null) and timestamps."""
    rng = random.Random(count)
    # Recent timestamps: the broker's time retention would delete older ones within seconds.
    base = int(time.time() * 1000) - 600_000
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 5})
    for i in range(count):
        key = None if i % 17 == 0 else b"\xffk%d" % i
        value = None if i % 23 == 0 else rng.randbytes(value_size)
        headers = [("trace", b"t%d" % i), ("bin", b"\x00\xff"), ("trace", None)] if i % 5 == 0 else None
        while True:
            try:
                producer.produce(
                    topic,
                    key=key,
                    value=value,
                    partition=i % partitions,
                    headers=headers,
                    timestamp=base + i,
                )
                break
            except BufferError:
                producer.poll(0.5)
    assert producer.flush(60) == 0


def parquet_processor(s3: S3Server, prefix: str, **options: object) -> dict[str, object]:
    return {
        "sink": "parquet",
        "options": {"url": f"s3://{s3.bucket}/{prefix}", "endpoint": s3.endpoint, **options},
    }


@pytest.mark.s3
def test_an_executor_writes_one_object_per_range_and_a_replay_rewrites_it(
    kafka: KafkaBroker, s3: S3Server, s3_prefix: str, topic_name: str, tmp_path: Path
) -> None:
    topic = kafka.create_topic(topic_name, 2)
    produce_mixed(kafka, topic, 1_000, 2)
    ranges = [OffsetRange(topic, 0, 0, 300), OffsetRange(topic, 0, 300, 500), OffsetRange(topic, 1, 0, 500)]
    doc = unit_doc(kafka, ranges[1:], parquet_processor(s3, s3_prefix, rowGroupRecords=128))
    first = unit_doc(kafka, ranges[:1], parquet_processor(s3, s3_prefix, rowGroupRecords=128), index=1)
    for unit in (doc, first):
        code, stderr, result = Run(unit, tmp_path, s3.process_env()).wait()
        assert code == 0, stderr
    assert result is not None and result.records == 300
    keys = s3.keys(s3_prefix)
    assert keys == sorted(f"{s3_prefix}/{object_name(r)}" for r in ranges)
    assert assert_exactly_once(s3, s3_prefix, kafka.bootstrap, latest_offsets(kafka.bootstrap, topic)) == 3
    table = s3.read_table(f"{s3_prefix}/{object_name(ranges[2])}")
    assert table.num_rows == 500 and table.column_names == [
        "topic",
        "partition",
        "offset",
        "timestamp",
        "key",
        "value",
        "headers",
    ]
    before = {key: s3.get(key) for key in keys}
    code, stderr, _ = Run({**doc, "attempt": 2}, tmp_path, s3.process_env()).wait()
    assert code == 0, stderr
    assert s3.keys(s3_prefix) == keys
    assert {key: s3.get(key) for key in keys} == before, "a replay writes the same bytes"


@pytest.mark.s3
def test_a_killed_or_stopped_multipart_upload_never_shows_an_object(
    kafka: KafkaBroker, s3: S3Server, s3_prefix: str, topic_name: str, tmp_path: Path
) -> None:
    topic = kafka.create_topic(topic_name, 1)
    produce_mixed(kafka, topic, 12_000, 1, value_size=2_000)  # ~24 MB of random bytes: 3 parts and more
    ranges = [OffsetRange(topic, 0, 0, 12_000)]
    key = f"{s3_prefix}/{object_name(ranges[0])}"
    # Row groups of 2 MiB: parts go out while the executor still reads (stops are seen between reads).
    doc = unit_doc(kafka, ranges, parquet_processor(s3, s3_prefix, compression="none", rowGroupBytes=2 << 20))

    def start_and_wait_for_an_upload(attempt: int) -> Run:
        earlier = s3.upload_ids(s3_prefix)
        run = Run({**doc, "attempt": attempt}, tmp_path, s3.process_env())
        deadline = time.monotonic() + 90
        while not s3.upload_ids(s3_prefix) - earlier:
            assert run.proc.poll() is None, "the executor ended before its multipart upload started"
            assert time.monotonic() < deadline, "no multipart upload started"
            time.sleep(0.05)
        return run

    start_and_wait_for_an_upload(1).kill()  # SIGKILL mid-upload
    assert s3.keys(s3_prefix) == [], "a killed upload is not an object"
    assert s3.incomplete_uploads(s3_prefix) == [key]

    stopped = start_and_wait_for_an_upload(2)  # the next attempt aborted the killed one's upload first
    stopped.proc.send_signal(signal.SIGTERM)
    code, stderr, result = stopped.wait()
    assert code == 128 + signal.SIGTERM and result is not None and not result.ok, stderr
    assert "stopped before completing" in (result.error or "")
    assert s3.keys(s3_prefix) == [] and s3.incomplete_uploads(s3_prefix) == [], "a stopped attempt aborts"

    code, stderr, _ = Run({**doc, "attempt": 3}, tmp_path, s3.process_env()).wait()
    assert code == 0, stderr
    assert s3.keys(s3_prefix) == [key] and s3.incomplete_uploads(s3_prefix) == []
    assert len(s3.get(key)) > 16 * 1024 * 1024
    assert assert_exactly_once(s3, s3_prefix, kafka.bootstrap, latest_offsets(kafka.bootstrap, topic)) == 1


@pytest.mark.s3
def test_missing_credentials_and_an_unreachable_server_are_clear_errors(
    kafka: KafkaBroker, s3: S3Server, s3_prefix: str, topic_name: str, tmp_path: Path
) -> None:
    topic = kafka.create_topic(topic_name, 1)
    kafka.produce(topic, 10)
    doc = unit_doc(kafka, [OffsetRange(topic, 0, 0, 10)], parquet_processor(s3, s3_prefix))
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    bare["AWS_CONFIG_FILE"] = bare["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    bare["AWS_EC2_METADATA_DISABLED"] = "true"  # no instance metadata lookup on this machine
    proc = subprocess.run(
        [str(EXECUTOR), "--work-unit", "-"],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        env=bare,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "no AWS credentials found" in proc.stderr and "credentialsSecret" in proc.stderr

    unreachable = unit_doc(
        kafka, [OffsetRange(topic, 0, 0, 10)], parquet_processor(s3, s3_prefix, endpoint="http://127.0.0.1:9")
    )
    code, _, result = Run(unreachable, tmp_path, s3.process_env()).wait()
    assert code == 1 and result is not None and result.failed_at is not None
    assert "Could not connect to the endpoint URL" in (result.error or ""), result.error
    assert s3.keys(s3_prefix) == []


@pytest.mark.s3
def test_local_mode_lands_every_record_once_with_executors_and_the_driver_killed(
    kafka: KafkaBroker, s3: S3Server, s3_prefix: str, topic_name: str, tmp_path: Path
) -> None:
    kafka.create_topic(topic_name, partitions=3)
    produce_mixed(kafka, topic_name, 6_000, 3)
    spec = {
        "topics": [topic_name],
        "batchInterval": "200ms",
        "maxAttempts": 20,
        "rate": {"maxPerPartition": 1_000},  # 200 per partition per batch: a run long enough to kill into
        "executors": {"max": 3, "maxRecords": 100},  # pieces of one partition in different executors
        "processor": parquet_processor(s3, s3_prefix, rowGroupRecords=64),
    }
    manifest = write_stream(tmp_path / "s.yaml", "lake", kafka.bootstrap, spec)
    state = tmp_path / "state"
    env = s3.process_env()

    # The driver itself dies mid-run once; the rerun resumes the recorded plan.
    first = subprocess.Popen(
        [*CLI, "run", str(manifest), "--until-caught-up", "--state-dir", str(state)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3)
    first.send_signal(signal.SIGKILL)
    first.wait()
    kills, _ = run_with_kills(manifest, state, tmp_path, env=env, kills=6, seed=15)
    assert kills >= 3

    latest = latest_offsets(kafka.bootstrap, topic_name)
    objects = assert_exactly_once(s3, s3_prefix, kafka.bootstrap, latest)
    assert objects >= 3 * 10, (
        "a range per batch and piece: 2,000 records per partition in pieces of 100 at most"
    )
    assert s3.incomplete_uploads(s3_prefix) == []
    assert state_committed(state) == latest
    assert group_offsets(kafka.bootstrap, "lake", topic_name) == latest


def test_local_mode_into_a_directory(kafka: KafkaBroker, topic_name: str, tmp_path: Path) -> None:
    kafka.create_topic(topic_name, partitions=2)
    produce_mixed(kafka, topic_name, 900, 2)
    spec = {
        "topics": [topic_name],
        "batchInterval": "200ms",
        "rate": {"maxPerPartition": 1_000},
        "processor": {"sink": "parquet", "options": {"url": "lake", "compression": "snappy"}},
    }
    manifest = write_stream(tmp_path / "s.yaml", "dirlake", kafka.bootstrap, spec)
    done = subprocess.run(
        [*CLI, "run", str(manifest), "--until-caught-up", "--state-dir", str(tmp_path / "state")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    latest = latest_offsets(kafka.bootstrap, topic_name)
    # A relative url is relative to the executors' working directory (local mode: the run's).
    assert assert_exactly_once(DirectoryObjects(), str(tmp_path / "lake"), kafka.bootstrap, latest) >= 2 * 3
