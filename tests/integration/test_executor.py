"""The executor against a real broker, run as users run it: ``.venv/bin/directstream-executor``."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from directstream.executor.contract import ExecutorResult, OffsetRange, WorkUnit
from directstream.executor.processors.jsonl import range_path
from tests.harness.kafka_fixtures import KafkaBroker

EXECUTOR = Path(sys.executable).parent / "directstream-executor"


def create_topic(
    kafka: KafkaBroker, name: str, partitions: int = 1, config: dict[str, str] | None = None
) -> str:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})  # kept alive until the futures resolve
    for future in admin.create_topics([NewTopic(name, partitions, 1, config=config or {})]).values():
        future.result(timeout=30)
    return name


def unit_doc(
    kafka: KafkaBroker, ranges: list[list[Any]], sink: str = "jsonl", **options: Any
) -> dict[str, Any]:
    return {
        "version": 1,
        "stream": "itest",
        "batchId": 7,
        "attempt": 1,
        "index": 0,
        "ranges": ranges,
        "kafka": {"bootstrapServers": kafka.bootstrap, "isolationLevel": "read_committed"},
        "processor": {"sink": sink, "options": options},
    }


def run_executor(
    doc: dict[str, Any] | str,
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> tuple[subprocess.CompletedProcess[str], ExecutorResult | None]:
    result_file = tmp_path / f"result-{uuid.uuid4().hex[:6]}.json"
    text = doc if isinstance(doc, str) else json.dumps(doc)
    proc = subprocess.run(
        [str(EXECUTOR), "--work-unit", "-", "--result-file", str(result_file), *args],
        check=False,
        input=text,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    result = ExecutorResult.loads(result_file.read_text()) if result_file.exists() else None
    return proc, result


def read_jsonl(directory: Path, range_: OffsetRange) -> list[dict[str, Any]]:
    text = range_path(directory, range_).read_text()
    return [json.loads(line) for line in text.splitlines()]


def all_offsets(
    kafka: KafkaBroker, topic: str, partition: int, isolation: str = "read_committed"
) -> list[int]:
    """Every offset a full read of the partition delivers."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": "itest-check",
            "enable.partition.eof": True,
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, partition, 0)])
    found: list[int] = []
    try:
        while True:
            message = consumer.poll(10)
            assert message is not None, "timed out reading the partition"
            if message.error():
                return found
            found.append(message.offset())
    finally:
        consumer.close()


def no_hidden_files(directory: Path) -> bool:
    return not [p for p in directory.rglob(".*") if p.is_file()]


@pytest.mark.kafka
def test_exact_ranges_with_binary_payloads_and_headers(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    topic = create_topic(kafka, topic_name, 4)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
    per_partition = 200
    for seq in range(per_partition):
        for partition in range(4):
            value = b"\xff\xfe" + bytes([seq % 256]) if seq % 5 == 0 else f"p{partition}-{seq}".encode()
            key = b"\x80" + bytes([partition]) if seq % 7 == 0 else f"k{seq}".encode()
            headers = [("trace", f"t{seq}".encode()), ("bin", b"\xff\x01"), ("nothing", None)]
            producer.produce(topic, value=value, key=key, partition=partition, headers=headers)
    assert producer.flush(30) == 0
    ranges = [
        OffsetRange(topic, 0, 20, 70),
        OffsetRange(topic, 1, 0, 1),
        OffsetRange(topic, 2, 150, 200),
        OffsetRange(topic, 3, 100, 100),
    ]
    out = tmp_path / "out"
    proc, result = run_executor(unit_doc(kafka, [r.to_json() for r in ranges], directory=str(out)), tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert result is not None and result.ok and result.records == 50 + 1 + 50
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(range_path(Path(), r).as_posix() for r in ranges)
    for range_ in ranges:
        docs = read_jsonl(out, range_)
        assert [d["offset"] for d in docs] == list(range(range_.from_offset, range_.until_offset))
        for doc in docs:
            seq, partition = doc["offset"], range_.partition
            assert (doc["topic"], doc["partition"]) == (topic, partition)
            assert isinstance(doc["timestamp"], int)
            if seq % 5 == 0:
                assert "value" not in doc and base64.b64decode(doc["valueBase64"]) == b"\xff\xfe" + bytes(
                    [seq]
                )
            else:
                assert doc["value"] == f"p{partition}-{seq}"
            if seq % 7 == 0:
                assert "key" not in doc and base64.b64decode(doc["keyBase64"]) == b"\x80" + bytes([partition])
            else:
                assert doc["key"] == f"k{seq}"
            assert doc["headers"] == [["trace", f"t{seq}"], ["bin", None, "/wE="], ["nothing", None]]
    assert no_hidden_files(out)


def _transactional_history(kafka: KafkaBroker, topic: str) -> None:
    """Commit 10 records, abort 10, commit 10 (plus a marker after each transaction)."""
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap, "transactional.id": f"itest-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    for label, commit in (("a", True), ("x", False), ("b", True)):
        producer.begin_transaction()
        for i in range(10):
            producer.produce(topic, value=f"{label}{i}".encode(), partition=0)
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)


@pytest.mark.kafka
def test_aborted_transactions_are_skipped_without_stalling(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    topic = create_topic(kafka, topic_name, 1)
    _transactional_history(kafka, topic)
    _, stable = Consumer(
        {"bootstrap.servers": kafka.bootstrap, "group.id": "x", "isolation.level": "read_committed"}
    ).get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert stable == 33  # 30 records and 3 transaction markers
    out = tmp_path / "out"
    whole = OffsetRange(topic, 0, 0, stable)
    # Ends inside the aborted transaction: no record at until-1 will ever be delivered.
    partial = OffsetRange(topic, 0, 0, 15)
    for range_ in (whole, partial):
        started = time.monotonic()
        doc = unit_doc(kafka, [range_.to_json()], directory=str(out))
        proc, result = run_executor(doc, tmp_path, "--stall-timeout", "20")
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - started < 15
        values = [d["value"] for d in read_jsonl(out, range_)]
        assert not [v for v in values if v.startswith("x")]
        assert result is not None and result.records == len(values)
    assert [d["value"] for d in read_jsonl(out, whole)] == [f"a{i}" for i in range(10)] + [
        f"b{i}" for i in range(10)
    ]
    assert [d["value"] for d in read_jsonl(out, partial)] == [f"a{i}" for i in range(10)]


@pytest.mark.kafka
def test_compacted_topic_gaps_do_not_stall(kafka: KafkaBroker, topic_name: str, tmp_path: Path) -> None:
    config = {
        "cleanup.policy": "compact",
        "segment.ms": "100",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100",
        "min.compaction.lag.ms": "0",
    }
    topic = create_topic(kafka, topic_name, 1, config)
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for i in range(200):
        producer.produce(topic, key=f"k{i % 10}".encode(), value=f"v{i}".encode(), partition=0)
    assert producer.flush(30) == 0
    deadline = time.monotonic() + 90
    while True:  # each new record rolls the aged segment so the cleaner can compact it
        time.sleep(1)
        producer.produce(topic, key=b"roll", value=b"roll", partition=0)
        producer.flush(30)
        survivors = all_offsets(kafka, topic, 0)
        if len(survivors) < survivors[-1] + 1 - 50:
            break
        assert time.monotonic() < deadline, "the log cleaner did not compact the topic"
    gaps = sorted(set(range(survivors[-1])) - set(survivors))
    gap = gaps[len(gaps) // 2]
    assert gap + 1 not in gaps or any(o > gap for o in survivors)
    out = tmp_path / "out"
    for range_ in (OffsetRange(topic, 0, 0, gap + 1), OffsetRange(topic, 0, 0, survivors[-1] + 1)):
        started = time.monotonic()
        proc, _ = run_executor(
            unit_doc(kafka, [range_.to_json()], directory=str(out)), tmp_path, "--stall-timeout", "20"
        )
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - started < 15
        expected = [o for o in survivors if o < range_.until_offset]
        assert [d["offset"] for d in read_jsonl(out, range_)] == expected


@pytest.mark.kafka
def test_range_below_log_start_fails_naming_range_and_offset(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    topic = create_topic(kafka, topic_name, 1)
    kafka.produce(topic, 100, 1)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, 50)]).values():
        future.result(timeout=30)
    out = tmp_path / "out"
    range_ = OffsetRange(topic, 0, 10, 100)
    proc, result = run_executor(unit_doc(kafka, [range_.to_json()], directory=str(out)), tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert result is not None and not result.ok and result.error is not None
    assert str(range_) in result.error and "offset 10" in result.error
    assert result.failed_at is not None and (result.failed_at.partition, result.failed_at.offset) == (0, 10)
    assert str(range_) in proc.stderr
    assert not range_path(out, range_).exists() and no_hidden_files(tmp_path)


@pytest.mark.kafka
def test_range_beyond_the_log_end_fails_as_a_stall(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    topic = create_topic(kafka, topic_name, 1)
    kafka.produce(topic, 10, 1)
    range_ = OffsetRange(topic, 0, 0, 20)
    proc, result = run_executor(
        unit_doc(kafka, [range_.to_json()], "count"), tmp_path, "--stall-timeout", "2"
    )
    assert proc.returncode == 1
    assert result is not None and result.error is not None
    assert str(range_) in result.error and "position reached 10" in result.error


@pytest.mark.kafka
def test_kafka_sink_copies_a_range_exactly(kafka: KafkaBroker, topic_name: str, tmp_path: Path) -> None:
    source = create_topic(kafka, topic_name, 2)
    target = create_topic(kafka, topic_name + "-copy", 1)
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for i in range(300):
        producer.produce(
            source,
            key=f"k{i}".encode(),
            value=bytes([i % 256]) * 3,
            partition=i % 2,
            headers=[("h", b"%d" % i)],
        )
    assert producer.flush(30) == 0
    ranges = [OffsetRange(source, 0, 10, 110), OffsetRange(source, 1, 0, 150)]
    proc, result = run_executor(
        unit_doc(kafka, [r.to_json() for r in ranges], "kafka", topic=target), tmp_path, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    assert result is not None and result.records == 250

    def read(topic: str, selection: list[OffsetRange]) -> list[tuple[Any, ...]]:
        consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "itest-check"})
        consumer.assign([TopicPartition(topic, r.partition, r.from_offset) for r in selection])
        wanted = {r.partition: r for r in selection}
        rows = []
        deadline = time.monotonic() + 30
        while len(rows) < sum(r.count for r in selection) and time.monotonic() < deadline:
            for m in consumer.consume(500, timeout=1):
                if m.error() is None and m.offset() < wanted[m.partition()].until_offset:
                    rows.append((m.key(), m.value(), m.headers(), m.timestamp()))
        consumer.close()
        return sorted(rows)

    assert read(target, [OffsetRange(target, 0, 0, 250)]) == read(source, ranges)


@pytest.mark.kafka
def test_python_sink_runs_a_user_factory(kafka: KafkaBroker, topic_name: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, topic_name, 2)
    kafka.produce(topic, 40, 2)
    (tmp_path / "usersink.py").write_text(
        "import json\n"
        "class Collect:\n"
        "    def __init__(self, options, unit):\n"
        "        self.path, self.seen = options['out'], []\n"
        "    def process(self, records, range):\n"
        "        self.seen += [[r.partition(), r.offset(), r.value().decode()] for r in records]\n"
        "    def close(self):\n"
        "        open(self.path, 'w').write(json.dumps(sorted(self.seen)))\n"
    )
    out = tmp_path / "seen.json"
    ranges = [[topic, 0, 5, 15], [topic, 1, 0, 3]]
    doc = unit_doc(kafka, ranges, "python", entryPoint="usersink:Collect", out=str(out))
    proc, _ = run_executor(doc, tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(out.read_text())
    assert [(p, o) for p, o, _ in seen] == [(0, o) for o in range(5, 15)] + [(1, o) for o in range(3)]
    assert seen[0][2] == "record-10"  # record i goes to partition i % 2 at offset i // 2


@pytest.mark.kafka
def test_python_sink_per_record_entry_point_names_the_poison_offset(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    topic = create_topic(kafka, topic_name, 2)
    kafka.produce(topic, 40, 2)
    (tmp_path / "recordsink.py").write_text(
        "import json\n"
        "class Each:\n"
        "    def __init__(self, options, unit):\n"
        "        self.path, self.seen = options['out'], []\n"
        "    def process_record(self, record, range):\n"
        "        if record.value() == b'record-13':\n"
        "            raise ValueError('poison')\n"
        "        self.seen.append([range.partition, record.partition(), record.offset()])\n"
        "    def close(self):\n"
        "        open(self.path, 'w').write(json.dumps(self.seen))\n"
    )
    out = tmp_path / "seen.json"
    env = {"PYTHONPATH": str(tmp_path)}
    doc = unit_doc(
        kafka, [[topic, 0, 5, 15], [topic, 1, 0, 3]], "python", entryPoint="recordsink:Each", out=str(out)
    )
    proc, result = run_executor(doc, tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert result is not None and result.ok and result.records == 13
    seen = json.loads(out.read_text())
    assert sorted(seen) == [[0, 0, o] for o in range(5, 15)] + [[1, 1, o] for o in range(3)]
    # Record 13 is partition 1's offset 6: the failure names that record, not its chunk's first.
    doc = unit_doc(kafka, [[topic, 1, 2, 20]], "python", entryPoint="recordsink:Each", out=str(out))
    proc, result = run_executor(doc, tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    assert result is not None and not result.ok and result.failed_at is not None
    assert (result.failed_at.topic, result.failed_at.partition, result.failed_at.offset) == (topic, 1, 6)
    assert result.error is not None and "poison" in result.error and "offset 6" in result.error
    assert json.loads(out.read_text()) == [[1, 1, o] for o in range(2, 6)]


def test_bad_inputs_exit_2_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "notcallable.py").write_text("thing = 3\n")
    base = {
        "version": 1,
        "stream": "s",
        "batchId": 3,
        "attempt": 2,
        "index": 5,
        "ranges": [["t", 0, 0, 0]],
        "kafka": {"bootstrapServers": "127.0.0.1:1"},
    }
    cases: list[tuple[Any, str]] = [
        ("{not json", "not JSON"),
        ({**base, "processor": {"sink": "orc"}}, "unknown sink 'orc'"),
        ({**base, "processor": {"sink": "parquet"}}, "parquet sink options.url: required"),
        ({**base, "processor": {"sink": "jsonl", "options": {}}}, "options.directory"),
        ({**base, "processor": {"sink": "kafka", "options": {}}}, "options.topic"),
        (
            {**base, "processor": {"sink": "python", "options": {"entryPoint": "nope"}}},
            "package.module:factory",
        ),
        ({**base, "processor": {"sink": "python", "options": {"entryPoint": "broken:f"}}}, "boom at import"),
        (
            {**base, "processor": {"sink": "python", "options": {"entryPoint": "notcallable:thing"}}},
            "not callable",
        ),
        ({**base, "processor": {"sink": "python", "options": {"entryPoint": "notcallable:x"}}}, "has no 'x'"),
        ({**base, "ranges": [["t", 0, 9, 1]], "processor": {"sink": "count"}}, "invalid offset range"),
        (
            {**base, "ranges": [["t", 0, 0, 1], ["t", 0, 5, 6]], "processor": {"sink": "count"}},
            "more than once",
        ),
        (
            {**base, "kafka": {**base["kafka"], "secretEnv": {"sasl.password": "NO_SUCH_VAR_X"}}},
            "NO_SUCH_VAR_X",
        ),
    ]
    for case, message in cases:
        doc = case
        if isinstance(doc, dict) and "processor" not in doc:
            doc = {**doc, "ranges": [["t", 0, 0, 1]], "processor": {"sink": "count"}}
        proc, result = run_executor(doc, tmp_path, env={"PYTHONPATH": str(tmp_path)})
        assert proc.returncode == 2, (doc, proc.stderr)
        assert message in proc.stderr, (message, proc.stderr)
        if isinstance(doc, dict):
            assert result is not None and not result.ok and result.index == 5 and result.batch_id == 3
            assert result.error is not None and message in result.error


def test_units_from_the_environment_by_completion_index(tmp_path: Path) -> None:
    units = [
        WorkUnit.loads(json.dumps(unit_doc(KafkaBroker("127.0.0.1:1"), [["t", p, 4, 4]], "count"))).to_json()
        for p in range(3)
    ]
    for i, unit in enumerate(units):
        unit["index"] = i
    result_file = tmp_path / "result.json"
    env = {
        **os.environ,
        "DIRECTSTREAM_WORK_UNITS": json.dumps(units),
        "JOB_COMPLETION_INDEX": "2",
        "DIRECTSTREAM_RESULT_FILE": str(result_file),
    }
    proc = subprocess.run([str(EXECUTOR)], check=False, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = ExecutorResult.loads(result_file.read_text())
    assert result.ok and result.index == 2
    env["JOB_COMPLETION_INDEX"] = "9"
    bad = subprocess.run([str(EXECUTOR)], check=False, capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "no unit at index 9" in bad.stderr
    assert ExecutorResult.loads(result_file.read_text()).index == 9


@pytest.fixture
def big_partition(kafka: KafkaBroker, topic_name: str) -> Iterator[OffsetRange]:
    topic = create_topic(kafka, topic_name, 1)
    kafka.produce(topic, 60_000, 1, value=lambda i: b"x" * 200)
    yield OffsetRange(topic, 0, 0, 60_000)


def _start_and_wait_for_temp_file(
    kafka: KafkaBroker, range_: OffsetRange, out: Path, tmp_path: Path
) -> subprocess.Popen[str]:
    doc = json.dumps(unit_doc(kafka, [range_.to_json()], directory=str(out)))
    proc = subprocess.Popen(
        [str(EXECUTOR), "--work-unit", "-", "--chunk-size", "20", "--result-file", str(tmp_path / "r.json")],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(doc)
    proc.stdin.close()
    deadline = time.monotonic() + 60
    while not [p for p in out.rglob(".*.tmp") if p.stat().st_size > 0]:
        assert proc.poll() is None, "the executor finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return proc


@pytest.mark.kafka
def test_sigkill_mid_range_then_rerun_leaves_each_offset_once(
    kafka: KafkaBroker, big_partition: OffsetRange, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = _start_and_wait_for_temp_file(kafka, big_partition, out, tmp_path)
    proc.kill()
    proc.wait(30)
    assert not range_path(out, big_partition).exists()
    rerun, _ = run_executor(unit_doc(kafka, [big_partition.to_json()], directory=str(out)), tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    offsets = [d["offset"] for d in read_jsonl(out, big_partition)]
    assert offsets == list(range(60_000))


@pytest.mark.kafka
def test_sigterm_aborts_the_open_range(
    kafka: KafkaBroker, big_partition: OffsetRange, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = _start_and_wait_for_temp_file(kafka, big_partition, out, tmp_path)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 5
    assert not range_path(out, big_partition).exists() and no_hidden_files(out)
    result = ExecutorResult.loads((tmp_path / "r.json").read_text())
    assert not result.ok and result.error is not None and str(big_partition) in result.error
