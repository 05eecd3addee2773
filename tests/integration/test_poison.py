"""Poison records in local mode against the real broker: ``decode.value: json`` with a few garbage
values, and a python processor raising ``PoisonRecord``, under each ``onError`` policy; dead
letters read back with ``read_committed`` exactly once, also with executors SIGKILLed mid-batch."""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.local_mode import (
    cli,
    group_offsets,
    jsonl_offsets,
    latest_offsets,
    run_with_kills,
    state_committed,
    state_file,
    write_stream,
)

pytestmark = pytest.mark.kafka

COUNT = 1_200
PARTITIONS = 2


def is_bad(i: int) -> bool:
    return i % 97 == 13  # 12 of 1,200, spread over both partitions and many batches


def value_of(i: int) -> bytes:
    return b"\xffnot json {" + str(i).encode() if is_bad(i) else json.dumps({"n": i}).encode()


def produce_mixed(
    kafka: KafkaBroker, topic: str
) -> tuple[set[tuple[str, int, int]], set[tuple[str, int, int]]]:
    """Records i = 0.. round-robin over the partitions; returns (good, bad) coordinates."""
    kafka.create_topic(topic, partitions=PARTITIONS)
    kafka.produce(topic, COUNT, partitions=PARTITIONS, value=value_of, key=lambda i: f"k{i}".encode())
    good, bad = set(), set()
    for i in range(COUNT):
        (bad if is_bad(i) else good).add((topic, i % PARTITIONS, i // PARTITIONS))
    return good, bad


def read_committed(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` (one partition) as a read_committed consumer sees it."""
    end = latest_offsets(bootstrap, topic)[(topic, 0)]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "verify-dlq",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.time() + 60
    while time.time() < deadline:
        if consumer.position([TopicPartition(topic, 0)])[0].offset >= end:
            break
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        out.append(msg)
    consumer.close()
    return out


def check_dead_letters(
    bootstrap: str, dlq: str, stream: str, bad: set[tuple[str, int, int]], reason: str
) -> None:
    letters = read_committed(bootstrap, dlq)
    seen: Counter[tuple[str, int, int]] = Counter()
    for msg in letters:
        headers = {k: (v or b"").decode() for k, v in msg.headers() or []}
        assert set(headers) >= {
            "directstream.error",
            "directstream.stream",
            "directstream.topic",
            "directstream.partition",
            "directstream.offset",
            "directstream.batch",
            "directstream.attempt",
        }, headers
        where = (
            headers["directstream.topic"],
            int(headers["directstream.partition"]),
            int(headers["directstream.offset"]),
        )
        seen[where] += 1
        i = where[2] * PARTITIONS + where[1]
        assert msg.value() == value_of(i) and msg.key() == f"k{i}".encode(), "the original bytes"
        assert headers["directstream.stream"] == stream
        assert reason in headers["directstream.error"], headers["directstream.error"]
        assert int(headers["directstream.batch"]) >= 1 and int(headers["directstream.attempt"]) >= 1
    assert set(seen) == bad, "exactly the poison records"
    assert max(seen.values()) == 1, f"each once under read_committed: {seen.most_common(3)}"


def history_totals(state: Path) -> tuple[int, int]:
    doc = state_file(state)
    history = doc["history"]
    assert sum(e.get("skipped", 0) for e in history) == doc.get("skippedTotal", 0)
    assert sum(e.get("deadLettered", 0) for e in history) == doc.get("deadLetteredTotal", 0)
    return doc.get("skippedTotal", 0), doc.get("deadLetteredTotal", 0)


def jsonl_spec(topic: str, out: Path, **processor: Any) -> dict[str, Any]:
    return {
        "topics": [topic],
        "batchInterval": "200ms",
        "maxAttempts": 20,
        "rate": {"maxPerPartition": 1_000},  # 200 per partition per batch: several batches
        "executors": {"max": 2},
        "processor": {
            "sink": "jsonl",
            "options": {"directory": str(out)},
            "decode": {"value": "json"},
            **processor,
        },
    }


def test_fail_names_the_first_bad_offset_and_commits_nothing_past_it(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 100, value=lambda i: b"oops" if i in (50, 70) else b'{"n": %d}' % i)
    spec = {
        "topics": [topic_name],
        "batchInterval": "200ms",
        "maxAttempts": 2,
        "rate": {"maxPerPartition": 200},  # 40 records per batch: [0, 40) is clean, [40, 80) is not
        "processor": {
            "sink": "jsonl",
            "options": {"directory": str(tmp_path / "out")},
            "decode": {"value": "json"},
        },
    }
    manifest = write_stream(tmp_path / "s.yaml", "poisonfail", kafka.bootstrap, spec)
    run = cli("run", str(manifest), "--until-caught-up", "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert f"poison record at {topic_name}[0] offset 50: value is not JSON" in run.stderr, run.stderr
    assert state_committed(tmp_path / "state") == {(topic_name, 0): 40}, "nothing committed past the poison"
    assert group_offsets(kafka.bootstrap, "poisonfail", topic_name) == {(topic_name, 0): 40}
    assert max(o for _, _, o in jsonl_offsets(tmp_path / "out")) == 39


def test_skip_outputs_every_good_record_once_and_counts_the_rest(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    good, bad = produce_mixed(kafka, topic_name)
    out = tmp_path / "out"
    manifest = write_stream(
        tmp_path / "s.yaml", "poisonskip", kafka.bootstrap, jsonl_spec(topic_name, out, onError="skip")
    )
    run = cli("run", str(manifest), "--until-caught-up", "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "skipped, 0 dead-lettered" in run.stderr, "the run says which batches dropped records"
    seen = jsonl_offsets(out)
    assert set(seen) == good and max(seen.values()) == 1
    line = sorted((out / topic_name / "0").glob("*.jsonl"))[0].read_text().splitlines()[0]
    assert json.loads(line)["value"] == {"n": 0}, "a json value reaches the sink parsed"
    assert history_totals(tmp_path / "state") == (len(bad), 0)
    assert state_committed(tmp_path / "state") == latest_offsets(kafka.bootstrap, topic_name)
    status = cli("status", str(manifest), "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert f"{len(bad)} skipped, 0 dead-lettered" in status.stdout, status.stdout
    plan = cli("plan", str(manifest), "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert "poison records: onError skip; decode value json" in plan.stdout, plan.stdout + plan.stderr


def test_dead_letters_exactly_once_with_executors_killed(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    good, bad = produce_mixed(kafka, topic_name)
    dlq = kafka.create_topic(f"{topic_name}-dlq")
    out = tmp_path / "out"
    spec = jsonl_spec(topic_name, out, onError="deadLetter", deadLetter={"topic": dlq})
    manifest = write_stream(tmp_path / "s.yaml", "poisondlq", kafka.bootstrap, spec)
    kills, _ = run_with_kills(manifest, tmp_path / "state", tmp_path, kills=5, seed=14)
    assert kills >= 2
    seen = jsonl_offsets(out)
    assert set(seen) == good and max(seen.values()) == 1
    check_dead_letters(kafka.bootstrap, dlq, "poisondlq", bad, "value is not JSON")
    assert history_totals(tmp_path / "state") == (0, len(bad))


def test_dead_letters_in_the_transactional_kafka_sinks_transaction(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    _, bad = produce_mixed(kafka, topic_name)
    output = kafka.create_topic(f"{topic_name}-out")
    dlq = kafka.create_topic(f"{topic_name}-dlq")
    spec = {
        "topics": [topic_name],
        "batchInterval": "200ms",
        "maxAttempts": 20,
        "rate": {"maxPerPartition": 1_000},
        "processor": {
            "sink": "kafka",
            "options": {"topic": output, "transactional": True},
            "decode": {"value": "json"},
            "onError": "deadLetter",
            "deadLetter": {"topic": dlq},
        },
    }
    manifest = write_stream(tmp_path / "s.yaml", "poisontx", kafka.bootstrap, spec)
    kills, _ = run_with_kills(manifest, tmp_path / "state", tmp_path, kills=5, seed=3)
    assert kills >= 2
    outputs = Counter(m.key() for m in read_committed(kafka.bootstrap, output))
    wanted = {f"k{i}".encode() for i in range(COUNT) if not is_bad(i)}
    assert set(outputs) == wanted and max(outputs.values()) == 1, "good records once, original bytes"
    check_dead_letters(kafka.bootstrap, dlq, "poisontx", bad, "value is not JSON")


PYTHON_SINK = """
import json, os
from directstream.executor import PoisonRecord

class Checked:
    def __init__(self, options, unit):
        self.out = options["out"]
        self.rows = {}

    def process_record(self, record, range_):
        doc = record.value()  # decode.value: json
        if not isinstance(doc, dict) or doc.get("n", 0) % 5 == 0:
            raise PoisonRecord(f"n must not be a multiple of 5: {doc!r}")
        self.rows.setdefault(range_, []).append([record.partition(), record.offset(), doc["n"]])

    def close_range(self, range_):
        path = os.path.join(self.out, f"{range_.topic}-{range_.partition}-{range_.from_offset}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.rows.pop(range_, []), f)
        os.replace(path + ".tmp", path)


class CheckedChunks(Checked):
    # The same check per chunk: the poison records are returned, the others written.

    process_record = None

    def process(self, records, range_):
        poison = []
        for record in records:
            doc = record.value()
            if not isinstance(doc, dict) or doc.get("n", 0) % 5 == 0:
                poison.append(PoisonRecord(f"n must not be a multiple of 5: {doc!r}", record=record))
            else:
                self.rows.setdefault(range_, []).append([record.partition(), record.offset(), doc["n"]])
        return poison
"""


@pytest.mark.parametrize("entry", ["Checked", "CheckedChunks"], ids=["per-record", "per-chunk"])
def test_python_processor_poison_records_are_dead_lettered(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path, entry: str
) -> None:
    kafka.create_topic(topic_name, partitions=PARTITIONS)
    kafka.produce(
        topic_name, 600, partitions=PARTITIONS, value=lambda i: b'{"n": %d}' % i, key=lambda i: b"k%d" % i
    )
    (tmp_path / "checked.py").write_text(textwrap.dedent(PYTHON_SINK))
    out = tmp_path / "out"
    out.mkdir()
    dlq = kafka.create_topic(f"{topic_name}-dlq")
    spec = {
        "topics": [topic_name],
        "batchInterval": "200ms",
        "maxAttempts": 20,
        "rate": {"maxPerPartition": 500},
        "executors": {"max": 2},
        "processor": {
            "sink": "python",
            "options": {"entryPoint": f"checked:{entry}", "out": str(out)},
            "decode": {"value": "json"},
            "onError": "deadLetter",
            "deadLetter": {"topic": dlq},
        },
    }
    manifest = write_stream(tmp_path / "s.yaml", "poisonpy", kafka.bootstrap, spec)
    env = {**os.environ, "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    kills, _ = run_with_kills(manifest, tmp_path / "state", tmp_path, env=env, kills=4, seed=21)
    assert kills >= 1
    written = Counter(n for path in out.glob("*.json") for _, _, n in json.loads(path.read_text()))
    assert set(written) == {n for n in range(600) if n % 5} and max(written.values()) == 1
    bad = {(topic_name, n % PARTITIONS, n // PARTITIONS) for n in range(0, 600, 5)}
    letters = read_committed(kafka.bootstrap, dlq)
    seen = Counter(
        (h["directstream.topic"], int(h["directstream.partition"]), int(h["directstream.offset"]))
        for h in ({k: (v or b"").decode() for k, v in m.headers() or []} for m in letters)
    )
    assert set(seen) == bad and max(seen.values()) == 1
    assert all(
        b"PoisonRecord: n must not be a multiple of 5" in dict(m.headers())["directstream.error"]
        for m in letters
    )
    assert history_totals(tmp_path / "state") == (0, len(bad))


def test_python_processor_poison_record_fails_under_the_default_policy(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 20, value=lambda i: b'{"n": %d}' % (i + 1))  # n = 5 at offset 4
    (tmp_path / "checked.py").write_text(textwrap.dedent(PYTHON_SINK))
    (tmp_path / "out").mkdir()
    spec = {
        "topics": [topic_name],
        "maxAttempts": 1,
        "processor": {
            "sink": "python",
            "options": {"entryPoint": "checked:Checked", "out": str(tmp_path / "out")},
            "decode": {"value": "json"},
        },
    }
    manifest = write_stream(tmp_path / "s.yaml", "poisonpyfail", kafka.bootstrap, spec)
    env_path = str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"], saved = env_path, os.environ.get("PYTHONPATH")
    try:
        run = cli(
            "run", str(manifest), "--until-caught-up", "--state-dir", str(tmp_path / "state"), cwd=tmp_path
        )
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    assert run.returncode == 1, run.stderr
    assert (
        f"poison record at {topic_name}[0] offset 4: PoisonRecord: n must not be a multiple of 5"
        in run.stderr
    )
    assert state_committed(tmp_path / "state") == {}


def test_replay_refeeds_the_dead_letters_once(kafka: KafkaBroker, topic_name: str, tmp_path: Path) -> None:
    _, bad = produce_mixed(kafka, topic_name)
    dlq = kafka.create_topic(f"{topic_name}-dlq")
    fixed = kafka.create_topic(f"{topic_name}-fixed")
    spec = jsonl_spec(topic_name, tmp_path / "out", onError="deadLetter", deadLetter={"topic": dlq})
    first = write_stream(tmp_path / "s.yaml", "poisonfirst", kafka.bootstrap, spec)
    assert (
        cli(
            "run", str(first), "--until-caught-up", "--state-dir", str(tmp_path / "st1"), cwd=tmp_path
        ).returncode
        == 0
    )
    replay_spec = {
        "topics": [dlq],
        "maxAttempts": 20,
        "processor": {
            "sink": "python",
            "options": {"entryPoint": "directstream.executor.replay:Replay", "topic": fixed},
        },
    }
    replay = write_stream(tmp_path / "r.yaml", "poisonreplay", kafka.bootstrap, replay_spec)
    # A small replay may finish before a kill lands; the dead-letter tests above cover the kills.
    run_with_kills(replay, tmp_path / "st2", tmp_path, kills=2, seed=2, max_pause=0.2)
    refed = read_committed(kafka.bootstrap, fixed)
    origins = Counter(dict(m.headers())["directstream.replayed-from"].decode() for m in refed)
    assert set(origins) == {f"{t}[{p}]@{o}" for t, p, o in bad} and max(origins.values()) == 1
    assert {m.value() for m in refed} == {value_of(o * PARTITIONS + p) for _, p, o in bad}
    assert all(
        not k.startswith("directstream.") or k == "directstream.replayed-from"
        for m in refed
        for k, _ in m.headers()
    )
