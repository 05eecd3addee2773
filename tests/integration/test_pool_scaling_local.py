"""Lag-driven pool scaling in local mode against the real broker: a pool with ``min: 1, max: 3``
grows under a backlog and shrinks back once caught up, with executors SIGKILLed at random
meanwhile, and every record lands exactly once in a sink that writes one file per range."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.executor_procs import ExecutorKiller
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.local_mode import (
    CLI,
    group_offsets,
    latest_offsets,
    state_committed,
    state_file,
    write_stream,
)

pytestmark = pytest.mark.kafka

# 0.5 ms per record (executors, not Kafka, bound the rate); each range's offsets go to one file,
# written under a temporary name and renamed, so a unit run again replaces its files.
SLOW_RANGES = """
import os, time

class SlowRanges:
    def __init__(self, options, unit):
        self.out, self.offsets = options["out"], {}

    def open_range(self, rng):
        self.offsets[(rng.partition, rng.from_offset)] = []

    def process(self, records, rng):
        time.sleep(0.0005 * len(records))
        self.offsets[(rng.partition, rng.from_offset)].extend(r.offset() for r in records)

    def close_range(self, rng):
        os.makedirs(self.out, exist_ok=True)
        path = os.path.join(self.out, f"{rng.partition}-{rng.from_offset}-{rng.until_offset}")
        with open(path + f".tmp{os.getpid()}", "w") as f:
            f.write(" ".join(map(str, self.offsets.pop((rng.partition, rng.from_offset)))))
        os.replace(path + f".tmp{os.getpid()}", path)
"""


def pool_pids(stream: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"directstream.executor.pool_worker .*--stream {stream}$"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return [int(pid) for pid in found]


def written(out: Path) -> Counter[tuple[int, int]]:
    seen: Counter[tuple[int, int]] = Counter()
    for path in out.iterdir():
        if ".tmp" not in path.name:
            partition = int(path.name.split("-")[0])
            seen.update((partition, int(o)) for o in path.read_text().split())
    return seen


def scale(state: Path) -> dict[str, Any]:
    try:
        return dict(state_file(state).get("scale") or {})
    except (OSError, ValueError):
        return {}


def wait_for(what: str, check: Callable[[], bool], driver: subprocess.Popen[str], seconds: float) -> None:
    """Poll until ``check``; a driver that exits or a wait past ``seconds`` fails with what it said."""
    deadline = time.monotonic() + seconds
    while not check():
        if driver.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            _, stderr = driver.communicate()
            raise AssertionError(f"never saw {what}; driver output:\n{stderr}")
        time.sleep(0.05)


def test_a_pool_grows_under_a_backlog_and_shrinks_after_catching_up_with_kills_exactly_once(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
):
    kafka.create_topic(topic_name, partitions=3)
    kafka.produce(topic_name, 12_000, partitions=3)
    (tmp_path / "slowranges.py").write_text(SLOW_RANGES)
    out, state, stream = tmp_path / "out", tmp_path / "state", f"scale-{topic_name}"
    spec = {
        "topics": [topic_name],
        "batchInterval": "200ms",
        "maxAttempts": 20,
        "rate": {"maxPerPartition": 2_500},  # 500 per partition per batch: a backlog of 8 batches
        "executors": {"mode": "pool", "min": 1, "max": 3},
        "processor": {"sink": "python", "options": {"entryPoint": "slowranges:SlowRanges", "out": str(out)}},
    }
    manifest = write_stream(tmp_path / "s.yaml", stream, kafka.bootstrap, spec)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    driver = subprocess.Popen(
        [*CLI, "run", str(manifest), "--state-dir", str(state)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    targets: list[int] = []
    running: set[int] = set()

    def observe() -> dict[str, Any]:
        now = scale(state)
        if now and (not targets or targets[-1] != now["target"]):
            targets.append(int(now["target"]))
        running.add(len(pool_pids(stream)))
        return now

    latest = latest_offsets(kafka.bootstrap, topic_name)
    with ExecutorKiller(stream, most=4, seed=13, find=lambda: pool_pids(stream)) as killer:
        wait_for("the pool grow to 3", lambda: observe().get("target") == 3, driver, 120)
        wait_for("the backlog committed", lambda: observe() and state_committed(state) == latest, driver, 180)
        wait_for(
            "the pool shrink to 1",
            lambda: observe().get("target") == 1 and targets[-2:] == [3, 1],
            driver,
            120,
        )
    wait_for("one executor left", lambda: len(pool_pids(stream)) == 1, driver, 60)
    driver.send_signal(signal.SIGINT)  # stop at the next batch boundary
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 0, stderr

    assert killer.kills >= 2, "executors were killed while the pool changed size"
    assert targets[0] == 1 and 3 in targets and targets[-1] == 1, targets
    assert targets == [1, 3, 1], f"grew once, shrank once, no flapping: {targets}"
    assert 3 in running, f"three executors ran at once: {sorted(running)}"
    assert "executors: lag " in stderr and "1 -> 3" in stderr, "the change and its reason are logged"
    assert "executors: caught up for " in stderr and "3 -> 1" in stderr
    seen = written(out)
    assert set(seen) == {(p, o) for (_, p), end in latest.items() for o in range(end)}, "no record lost"
    assert max(seen.values()) == 1, "no record written twice"
    assert state_committed(state) == latest and group_offsets(kafka.bootstrap, stream, topic_name) == latest
    history = state_file(state)["history"]
    assert {e.get("executors") for e in history if e["records"]} >= {3}, "batches ran on 3 executors"
    assert pool_pids(stream) == [], "the run's end stops its executors"

    status = subprocess.run(
        [*CLI, "status", str(manifest), "--state-dir", str(state)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "executors: 1 running, target 1 (caught up for" in status
