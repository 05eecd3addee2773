"""Warm executors (``executors.mode: pool``) in local mode against the real broker: executors and
the driver killed and the spec edited during pool batches leave every record exactly once, and
the pool replaces the executors it lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.local_mode import (
    CLI,
    cli,
    group_offsets,
    jsonl_offsets,
    jsonl_ranges,
    latest_offsets,
    state_committed,
    state_file,
    write_stream,
)

pytestmark = pytest.mark.kafka


def pool_spec(topic: str, out: Path, **executors: object) -> dict[str, object]:
    return {
        "topics": [topic],
        "batchInterval": "200ms",
        "maxAttempts": 20,
        "rate": {"maxPerPartition": 1_000},  # 200 per partition per batch: many batches to kill into
        "executors": {"mode": "pool", "max": 2, **executors},
        "processor": {"sink": "jsonl", "options": {"directory": str(out)}},
    }


def pool_pids(stream: str) -> list[int]:
    """This test's warm executors (the stream name is unique to the test)."""
    found = subprocess.run(
        ["pgrep", "-f", f"directstream.executor.pool_worker .*--stream {stream}$"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return [int(pid) for pid in found]


def started_executors(state: Path) -> set[str]:
    return {p.stem.removeprefix("executor-") for p in (state / "pool").glob("executor-*.log")}


def assert_exactly_once(kafka: KafkaBroker, topic: str, group: str, out: Path, state: Path) -> None:
    latest = latest_offsets(kafka.bootstrap, topic)
    seen = jsonl_offsets(out)
    assert set(seen) == {(t, p, o) for (t, p), end in latest.items() for o in range(end)}
    assert max(seen.values()) == 1, "a record was written twice"
    assert state_committed(state) == latest
    assert group_offsets(kafka.bootstrap, group, topic) == latest


def committed_any(state: Path) -> bool:
    try:
        return sum(state_committed(state).values()) > 0
    except (OSError, ValueError, KeyError):
        return False


def driver(manifest: Path, state: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "run", str(manifest), "--until-caught-up", "--state-dir", str(state)],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_pool_runs_batches_with_the_same_executors(kafka: KafkaBroker, topic_name: str, tmp_path: Path):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 2_000, partitions=2)
    out, state, stream = tmp_path / "out", tmp_path / "state", f"warm-{topic_name}"
    manifest = write_stream(tmp_path / "s.yaml", stream, kafka.bootstrap, pool_spec(topic_name, out))
    result = cli(
        "run", str(manifest), "--until-caught-up", "--state-dir", str(state), cwd=tmp_path, check=True
    )
    assert "caught up" in result.stderr
    assert_exactly_once(kafka, topic_name, stream, out, state)
    assert len(state_file(state)["history"]) >= 5, "1,000 per partition at 200 per batch"
    assert started_executors(state) == {"1-1", "1-2"}, "two executors served every batch"
    assert not (state / "attempts").exists() or not any((state / "attempts").iterdir()), (
        "no per-batch processes"
    )
    assert pool_pids(stream) == [], "the run's end stops its executors"


def test_killed_executors_are_replaced_and_their_units_rerun_exactly_once(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
):
    kafka.create_topic(topic_name, partitions=3)
    kafka.produce(topic_name, 6_000, partitions=3)
    out, state, stream = tmp_path / "out", tmp_path / "state", f"kill-{topic_name}"
    manifest = write_stream(
        tmp_path / "s.yaml", stream, kafka.bootstrap, pool_spec(topic_name, out, max=3, maxRecords=100)
    )
    run = driver(manifest, state, tmp_path)
    kills = 0
    rng = random.Random(3)

    def killer() -> None:
        nonlocal kills
        while run.poll() is None and kills < 6:
            time.sleep(rng.uniform(0.2, 0.8))
            pids = pool_pids(stream)
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1

    thread = threading.Thread(target=killer)
    thread.start()
    _, stderr = run.communicate(timeout=300)
    thread.join()
    assert run.returncode == 0, stderr
    assert kills >= 3
    assert_exactly_once(kafka, topic_name, stream, out, state)
    assert len(started_executors(state)) >= 3 + kills, "every killed executor was replaced"


def test_driver_kill_and_a_spec_edit_during_pool_batches_leave_every_record_once(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 4_000, partitions=2)
    out, state, stream = tmp_path / "out", tmp_path / "state", f"edit-{topic_name}"
    manifest = write_stream(tmp_path / "s.yaml", stream, kafka.bootstrap, pool_spec(topic_name, out))
    first = driver(manifest, state, tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline and not committed_any(state):
        time.sleep(0.05)
    time.sleep(0.5)  # some batches in: then the driver dies mid-batch, with its executors
    first.send_signal(signal.SIGKILL)
    first.communicate()
    deadline = time.time() + 10
    while pool_pids(stream) and time.time() < deadline:
        time.sleep(0.1)
    assert pool_pids(stream) == [], "the executors die with their driver"
    committed_before = state_committed(state)
    assert 0 < sum(committed_before.values()) < 4_000

    # The edit applies from the next batch: a pending batch replays with its pinned layout (2
    # executors), then the pool is replaced by 3 executors for the edited settings.
    edited = pool_spec(topic_name, out, max=3, maxRecords=50)
    write_stream(tmp_path / "s.yaml", stream, kafka.bootstrap, edited)
    second = driver(manifest, state, tmp_path)
    counts: set[int] = set()
    while second.poll() is None:
        counts.add(len(pool_pids(stream)))
        time.sleep(0.05)
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr
    assert_exactly_once(kafka, topic_name, stream, out, state)
    assert 3 in counts and max(counts) == 3, f"executors seen at once: {sorted(counts)}"
    later = [r for r in jsonl_ranges(out) if r[2] >= min(committed_before.values()) and r[3] < 2_000]
    assert any(until - start < 200 for _, _, start, until in later), "the edited split applies"
