"""Helpers for tests that run ``directstream`` in local mode against the real broker."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from directstream.operator.core.state import StreamState

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "directstream.operator.cli"]


def write_stream(path: Path, name: str, bootstrap: str, spec: dict[str, Any]) -> Path:
    """A DirectStream manifest with the given spec (kafka.bootstrapServers filled in)."""
    full = {"kafka": {"bootstrapServers": bootstrap}, **spec}
    doc = {
        "apiVersion": "directstream.io/v1alpha1",
        "kind": "DirectStream",
        "metadata": {"name": name},
        "spec": full,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def cli(
    *args: str,
    cwd: Path,
    timeout: float = 240,
    check: bool = False,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``directstream *args`` in ``cwd``, with this process's environment (or ``env``)."""
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"directstream {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def jsonl_offsets(out_dir: Path) -> Counter[tuple[str, int, int]]:
    """How many times each (topic, partition, offset) appears in a JSON-lines sink directory."""
    seen: Counter[tuple[str, int, int]] = Counter()
    for path in out_dir.glob("*/*/*.jsonl"):
        for line in path.read_text().splitlines():
            doc = json.loads(line)
            seen[(doc["topic"], doc["partition"], doc["offset"])] += 1
    return seen


def jsonl_ranges(out_dir: Path) -> list[tuple[str, int, int, int]]:
    """The (topic, partition, from, until) of every range file."""
    out = []
    for path in out_dir.glob("*/*/*.jsonl"):
        start, until = path.stem.split("-")
        out.append((path.parent.parent.name, int(path.parent.name), int(start), int(until)))
    return sorted(out)


def latest_offsets(bootstrap: str, topic: str) -> dict[tuple[str, int], int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    parts = admin.list_topics(topic, timeout=10).topics[topic].partitions
    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in parts}
    return {(tp.topic, tp.partition): f.result(30).offset for tp, f in admin.list_offsets(request).items()}


def group_offsets(bootstrap: str, group: str, topic: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets for ``topic`` (group names repeat across test runs)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(30)
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in result.topic_partitions
        if tp.offset >= 0 and tp.topic == topic
    }


def state_file(state_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((state_dir / "state.json").read_text())
    return doc


def state_committed(state_dir: Path) -> dict[tuple[str, int], int]:
    return dict(StreamState.from_json(state_file(state_dir)).committed)


def pending_until(state_dir: Path) -> dict[tuple[str, int], int]:
    """Where each range of the recorded plan ends ({} with none recorded)."""
    pending = StreamState.from_json(state_file(state_dir)).pending
    return dict(pending.plan.next_offsets()) if pending is not None else {}


def run_with_kills(
    manifest: Path,
    state: Path,
    cwd: Path,
    *,
    kills: int,
    seed: int,
    env: dict[str, str] | None = None,
    max_pause: float = 0.5,
) -> tuple[int, str]:
    """``run --until-caught-up`` while executors are SIGKILLed at random moments (at most
    ``kills``); asserts the run still succeeds and returns the kills made and the run's stderr."""
    driver = subprocess.Popen(
        [*CLI, "run", str(manifest), "--until-caught-up", "--state-dir", str(state)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    done = 0
    rng = random.Random(seed)

    def killer() -> None:
        nonlocal done
        while driver.poll() is None and done < kills:
            time.sleep(rng.uniform(0.05, max_pause))
            found = subprocess.run(
                ["pgrep", "-f", f"directstream.executor --work-unit {state}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if found:
                os.kill(int(rng.choice(found)), signal.SIGKILL)
                done += 1

    thread = threading.Thread(target=killer)
    thread.start()
    _, stderr = driver.communicate(timeout=300)
    thread.join()
    assert driver.returncode == 0, stderr
    return done, stderr
