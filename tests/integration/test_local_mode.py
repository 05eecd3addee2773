"""Local mode end to end against the real broker: `directstream run` as users run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import NewPartitions

from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.local_mode import (
    CLI,
    cli,
    group_offsets,
    jsonl_offsets,
    jsonl_ranges,
    latest_offsets,
    pending_until,
    run_with_kills,
    state_committed,
    state_file,
    write_stream,
)

pytestmark = pytest.mark.kafka


def expected_offsets(latest: dict[tuple[str, int], int], start: int = 0) -> set[tuple[str, int, int]]:
    return {(t, p, o) for (t, p), end in latest.items() for o in range(start, end)}


def jsonl_spec(topic: str, out: Path, **extra: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "topics": [topic],
        "batchInterval": "200ms",
        "processor": {"sink": "jsonl", "options": {"directory": str(out)}},
    }
    spec.update(extra)
    return spec


def test_until_caught_up_writes_every_record_exactly_once_and_commits(
    kafka: KafkaBroker, topic_name, tmp_path
):
    kafka.create_topic(topic_name, partitions=4)
    kafka.produce(topic_name, 20_000, partitions=4)
    out, state = tmp_path / "out", tmp_path / "state"
    manifest = write_stream(
        tmp_path / "s.yaml",
        "e2e",
        kafka.bootstrap,
        jsonl_spec(topic_name, out, rate={"maxPerPartition": 10_000}, executors={"max": 3}),
    )
    result = cli(
        "run", str(manifest), "--until-caught-up", "--state-dir", str(state), cwd=tmp_path, check=True
    )
    assert "caught up" in result.stderr
    latest = latest_offsets(kafka.bootstrap, topic_name)
    assert sum(latest.values()) == 20_000
    seen = jsonl_offsets(out)
    assert set(seen) == expected_offsets(latest)
    assert max(seen.values()) == 1, "a record was written twice"
    assert group_offsets(kafka.bootstrap, "e2e", topic_name) == latest
    assert state_committed(state) == latest
    doc = state_file(state)
    assert doc["pending"] is None
    assert doc["recordsTotal"] == 20_000
    # Each 200 ms batch reads at most 2,000 per partition: 5,000 per partition takes 3 batches.
    assert [e["batch"] for e in doc["history"]] == [1, 2, 3]
    assert all(until - start <= 2_000 for _, _, start, until in jsonl_ranges(out))

    status = cli("status", str(manifest), "--state-dir", str(state), cwd=tmp_path, check=True)
    assert "total lag: 0" in status.stdout
    assert "20,000" in status.stdout

    # Nothing new: the next run commits nothing and exits at once.
    again = cli(
        "run", str(manifest), "--until-caught-up", "--state-dir", str(state), cwd=tmp_path, check=True
    )
    assert "caught up" in again.stderr
    assert state_file(state)["history"] == doc["history"]


def test_executors_killed_at_random_points_still_give_exactly_once(kafka: KafkaBroker, topic_name, tmp_path):
    kafka.create_topic(topic_name, partitions=3)
    kafka.produce(topic_name, 30_000, partitions=3, value=lambda i: os.urandom(200))
    out, state = tmp_path / "out", tmp_path / "state"
    manifest = write_stream(
        tmp_path / "s.yaml",
        "killed",
        kafka.bootstrap,
        jsonl_spec(
            topic_name,
            out,
            maxAttempts=20,
            rate={"maxPerPartition": 15_000},
            executors={"max": 3, "maxRecords": 1000},
        ),
    )
    kills, stderr = run_with_kills(manifest, state, tmp_path, kills=6, seed=11, max_pause=0.6)
    assert kills >= 3, f"only {kills} executors were killed; the test did not exercise retries"
    assert "retrying the same ranges" in stderr
    latest = latest_offsets(kafka.bootstrap, topic_name)
    seen = jsonl_offsets(out)
    assert set(seen) == expected_offsets(latest)
    assert max(seen.values()) == 1
    ledger = state_file(state)["history"]
    assert [e["batch"] for e in ledger] == list(range(1, len(ledger) + 1)), "a batch was skipped"
    assert any(e["attempts"] > 1 for e in ledger)
    assert group_offsets(kafka.bootstrap, "killed", topic_name) == latest


def test_driver_killed_mid_batch_resumes_the_recorded_plan(kafka: KafkaBroker, topic_name, tmp_path):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 2_000, partitions=2)
    slow = tmp_path / "slowsink.py"
    slow.write_text(
        "import time\n"
        "class Slow:\n"
        "    def __init__(self, options, unit):\n"
        "        self.out = options['out']\n"
        "    def process(self, records, rng):\n"
        "        time.sleep(0.5)\n"
        "        with open(self.out, 'a') as f:\n"
        "            f.writelines(f'{r.partition()} {r.offset()}\\n' for r in records)\n"
    )
    state = tmp_path / "state"
    manifest = write_stream(
        tmp_path / "s.yaml",
        "resumed",
        kafka.bootstrap,
        {
            "topics": [topic_name],
            "batchInterval": "100ms",
            "processor": {
                "sink": "python",
                "options": {"entryPoint": "slowsink:Slow", "out": str(tmp_path / "o")},
            },
        },
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    driver = subprocess.Popen(
        [*CLI, "run", str(manifest), "--until-caught-up", "--state-dir", str(state)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if (state / "state.json").exists() and state_file(state)["pending"]:
            break
        time.sleep(0.05)
    recorded = state_file(state)["pending"]
    assert recorded, "the plan must be recorded before executors run"
    recorded_until = pending_until(state)
    time.sleep(0.3)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert pending_until(state) == recorded_until

    result = subprocess.run(
        [*CLI, "run", str(manifest), "--until-caught-up", "--state-dir", str(state)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"batch {recorded['batch']}: resuming the recorded plan" in result.stderr
    ledger = state_file(state)["history"]
    assert ledger[0]["batch"] == recorded["batch"]
    assert state_committed(state) == recorded_until
    assert group_offsets(kafka.bootstrap, "resumed", topic_name) == latest_offsets(
        kafka.bootstrap, topic_name
    )


def test_aborted_transactions_and_compaction_do_not_stall(kafka: KafkaBroker, topic_name, tmp_path):
    kafka.create_topic(topic_name, partitions=1)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": f"tx-{topic_name}"})
    producer.init_transactions(30)
    for round_ in range(6):
        producer.begin_transaction()
        for i in range(50):
            producer.produce(topic_name, key=f"k{i}".encode(), value=f"{round_}-{i}".encode())
        if round_ % 2:
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
    out, state = tmp_path / "out", tmp_path / "state"
    manifest = write_stream(tmp_path / "s.yaml", "tx", kafka.bootstrap, jsonl_spec(topic_name, out))
    cli(
        "run",
        str(manifest),
        "--until-caught-up",
        "--state-dir",
        str(state),
        cwd=tmp_path,
        timeout=120,
        check=True,
    )
    latest = latest_offsets(kafka.bootstrap, topic_name)
    assert state_committed(state) == latest
    values = [doc for doc in jsonl_offsets(out)]
    assert len(values) == 150, "exactly the three committed transactions' records"
    texts = [
        json.loads(line)["value"] for p in out.glob("*/*/*.jsonl") for line in p.read_text().splitlines()
    ]
    assert all(int(v.split("-")[0]) % 2 == 0 for v in texts), "an aborted record reached the sink"


def test_data_loss_fail_stops_and_earliest_skips(kafka: KafkaBroker, topic_name, tmp_path):
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 100)
    out, state = tmp_path / "out", tmp_path / "state"
    manifest = write_stream(tmp_path / "s.yaml", "loss", kafka.bootstrap, jsonl_spec(topic_name, out))
    cli("run", str(manifest), "--until-caught-up", "--state-dir", str(state), cwd=tmp_path, check=True)
    kafka.produce(topic_name, 100)
    for f in kafka.admin().delete_records([TopicPartition(topic_name, 0, 150)]).values():
        f.result(30)

    failed = cli("run", str(manifest), "--until-caught-up", "--state-dir", str(state), cwd=tmp_path)
    assert failed.returncode == 1
    assert f"{topic_name}[0] offsets 100..150 (50 records) were deleted" in failed.stderr
    assert state_committed(state) == {(topic_name, 0): 100}, "a committed offset moved on data loss"
    assert group_offsets(kafka.bootstrap, "loss", topic_name) == {(topic_name, 0): 100}

    skipping = write_stream(
        tmp_path / "s2.yaml", "loss", kafka.bootstrap, jsonl_spec(topic_name, out, onDataLoss="earliest")
    )
    ok = cli("run", str(skipping), "--until-caught-up", "--state-dir", str(state), cwd=tmp_path, check=True)
    assert "skipping to offset 150" in ok.stderr
    assert state_committed(state) == {(topic_name, 0): 200}
    assert "skipped 50 lost records" in state_file(state)["history"][-1]["note"]
    assert set(jsonl_offsets(out)) == {(topic_name, 0, o) for o in [*range(100), *range(150, 200)]}


def test_new_partitions_and_pattern_topics_are_picked_up_mid_run(kafka: KafkaBroker, topic_name, tmp_path):
    first = kafka.create_topic(f"{topic_name}-a", partitions=1)
    kafka.produce(first, 50)
    out, state = tmp_path / "out", tmp_path / "state"
    manifest = write_stream(
        tmp_path / "s.yaml",
        "pattern",
        kafka.bootstrap,
        {
            "topicPattern": f"^{topic_name}-.*$",
            "batchInterval": "200ms",
            "startingOffsets": "latest",
            "processor": {"sink": "jsonl", "options": {"directory": str(out)}},
        },
    )
    driver = subprocess.Popen(
        [*CLI, "run", str(manifest), "--state-dir", str(state)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not ((state / "state.json").exists() and state_committed(state)):
            time.sleep(0.1)
        assert state_committed(state) == {(first, 0): 50}, "startingOffsets latest applies to the first batch"
        for f in kafka.admin().create_partitions([NewPartitions(first, 2)]).values():
            f.result(30)
        second = kafka.create_topic(f"{topic_name}-b", partitions=1)
        producer = Producer({"bootstrap.servers": kafka.bootstrap})
        for i in range(30):
            producer.produce(first, value=b"x", partition=i % 2)
            producer.produce(second, value=b"y")
        producer.flush(30)
        want = {(first, 0): 65, (first, 1): 15, (second, 0): 30}
        deadline = time.time() + 60
        while time.time() < deadline and state_committed(state) != want:
            time.sleep(0.2)
        assert state_committed(state) == want
    finally:
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 0, stderr
    seen = jsonl_offsets(out)
    assert set(seen) == {(first, 0, o) for o in range(50, 65)} | {(first, 1, o) for o in range(15)} | {
        (second, 0, o) for o in range(30)
    }


def test_starting_from_a_timestamp(kafka: KafkaBroker, topic_name, tmp_path):
    kafka.create_topic(topic_name, partitions=1)
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    base = int(time.time() * 1000) - 3_600_000  # recent: retention would delete old timestamps
    for i in range(100):
        producer.produce(topic_name, value=str(i).encode(), timestamp=base + i * 1000)
    producer.flush(30)
    out, state = tmp_path / "out", tmp_path / "state"
    manifest = write_stream(
        tmp_path / "s.yaml",
        "bytime",
        kafka.bootstrap,
        jsonl_spec(topic_name, out, startingOffsets={"timestamp": base + 60_000}),
    )
    cli("run", str(manifest), "--until-caught-up", "--state-dir", str(state), cwd=tmp_path, check=True)
    assert set(jsonl_offsets(out)) == {(topic_name, 0, o) for o in range(60, 100)}


def test_stop_at_latest_drains_and_completes(kafka: KafkaBroker, topic_name, tmp_path):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 1_000, partitions=2)
    out, state = tmp_path / "out", tmp_path / "state"
    manifest = write_stream(
        tmp_path / "s.yaml",
        "drain",
        kafka.bootstrap,
        jsonl_spec(topic_name, out, stopAt="latest", rate={"maxPerPartition": 1_000}),
    )
    result = cli("run", str(manifest), "--state-dir", str(state), cwd=tmp_path, check=True)
    assert "caught up" in result.stderr
    assert all(until - start <= 200 for _, _, start, until in jsonl_ranges(out))
    assert len(jsonl_offsets(out)) == 1_000


def test_unreachable_broker_and_bad_spec_are_clear_errors(tmp_path):
    manifest = write_stream(
        tmp_path / "s.yaml", "nowhere", "127.0.0.1:1", {"topics": ["t"], "processor": {"sink": "count"}}
    )
    result = cli(
        "run", str(manifest), "--once", "--state-dir", str(tmp_path / "st"), cwd=tmp_path, timeout=120
    )
    assert result.returncode == 1
    assert "127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: directstream.io/v1alpha1\nkind: DirectStream\nmetadata: {name: b}\n"
        "spec: {kafka: {bootstrapServers: 'x:1'}, topics: [t], batchInterval: soon}\n"
    )
    result = cli("plan", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "spec.batchInterval" in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_is_a_dry_run(kafka: KafkaBroker, topic_name, tmp_path):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 10, partitions=2)
    manifest = write_stream(
        tmp_path / "s.yaml", "dry", kafka.bootstrap, jsonl_spec(topic_name, tmp_path / "out")
    )
    result = cli("plan", str(manifest), "--state-dir", str(tmp_path / "st"), cwd=tmp_path, check=True)
    assert "next batch 1: 10 offsets in 2 range(s)" in result.stdout
    assert not (tmp_path / "st" / "state.json").exists()
    assert sys.executable


def test_reset_rewinds_once_and_reprocesses(kafka: KafkaBroker, topic_name, tmp_path):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 400, partitions=2)
    out, state = tmp_path / "out", tmp_path / "state"
    manifest = write_stream(tmp_path / "s.yaml", "rewind", kafka.bootstrap, jsonl_spec(topic_name, out))
    cli("run", str(manifest), "--until-caught-up", "--state-dir", str(state), cwd=tmp_path, check=True)
    assert state_file(state)["recordsTotal"] == 400

    rewound = write_stream(
        tmp_path / "r.yaml",
        "rewind",
        kafka.bootstrap,
        jsonl_spec(topic_name, out, reset={"id": "replay-1", "to": "earliest"}),
    )
    result = cli(
        "run", str(rewound), "--until-caught-up", "--state-dir", str(state), cwd=tmp_path, check=True
    )
    assert "reset replay-1: rewound to earliest" in result.stderr
    doc = state_file(state)
    assert doc["appliedReset"] == "replay-1"
    assert doc["recordsTotal"] == 800, "every record was processed once more"
    assert any("reset replay-1" in entry.get("note", "") for entry in doc["history"])
    assert max(jsonl_offsets(out).values()) == 1, "a replayed range replaces its file"
    assert group_offsets(kafka.bootstrap, "rewind", topic_name) == latest_offsets(kafka.bootstrap, topic_name)

    # The same reset id is not applied twice.
    again = cli("run", str(rewound), "--until-caught-up", "--state-dir", str(state), cwd=tmp_path, check=True)
    assert "rewound" not in again.stderr
    assert state_file(state)["recordsTotal"] == 800
