"""Per-batch overhead of local mode: plan + record + launch + commit, beyond the executors' run.

    .venv/bin/python bench/local_batch_overhead.py [--bootstrap HOST:PORT] [--batches 20]

Runs ``--batches`` small batches (``--records`` new records each, 4 partitions, ``count``
sink) through the real driver loop, local state file and process launcher, and times each
batch from plan to commit. Side by side, in the same run, it times the baseline: the same
work units run as bare executor processes (what the launcher itself costs). Prints medians
and the overhead (goal: batch - executors <= 150 ms median).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from directstream.executor.contract import ExecutorResult, WorkUnit
from directstream.operator.adapters.kafka import KafkaOffsets, KafkaOffsetsPort
from directstream.operator.adapters.local.launcher import LocalLauncher
from directstream.operator.adapters.local.state import LocalStateStore
from directstream.operator.core.events import Event
from directstream.operator.core.pinning import AttemptRun
from directstream.operator.core.spec import parse_stream
from directstream.operator.core.work import executor_kafka_settings
from directstream.operator.driver import Driver


class TimedLauncher:
    """The real launcher, timed, keeping each batch's units for the baseline run."""

    def __init__(self, inner: LocalLauncher) -> None:
        self.inner = inner
        self.seconds: list[float] = []
        self.units: list[Sequence[WorkUnit]] = []

    async def run(self, attempt: AttemptRun) -> list[ExecutorResult]:
        start = time.perf_counter()
        results = await self.inner.run(attempt)
        self.seconds.append(time.perf_counter() - start)
        self.units.append(attempt.units)
        return results

    async def release(self, batch_id: int) -> None:
        await self.inner.release(batch_id)


def bare_executors(units: Sequence[WorkUnit], work: Path) -> float:
    """The baseline: the same units as plain parallel executor processes."""
    start = time.perf_counter()
    procs = []
    for unit in units:
        path = work / f"bare-{unit.batch_id}-{unit.index}.json"
        path.write_text(unit.dumps())
        result = work / f"bare-{unit.batch_id}-{unit.index}.result"
        command = [sys.executable, "-m", "directstream.executor", "--work-unit", str(path)]
        procs.append(subprocess.Popen([*command, "--result-file", str(result)], stderr=subprocess.DEVNULL))
    for proc in procs:
        proc.wait()
    return time.perf_counter() - start


async def run(bootstrap: str, batches: int, records: int) -> None:
    topic = f"bench-overhead-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, 4, 1)]).values():
        f.result(30)
    work = Path(tempfile.mkdtemp(prefix="ds-bench-"))
    spec = parse_stream(
        {
            "apiVersion": "directstream.io/v1alpha1",
            "kind": "DirectStream",
            "metadata": {"name": f"bench-{uuid.uuid4().hex[:6]}"},
            "spec": {
                "kafka": {"bootstrapServers": bootstrap},
                "topics": [topic],
                "processor": {"sink": "count"},
            },
        }
    )
    store = LocalStateStore(work / "state")
    launcher = TimedLauncher(LocalLauncher(work / "attempts"))
    events: list[Event] = []
    driver = Driver(
        spec,
        offsets=KafkaOffsetsPort(KafkaOffsets(spec)),
        state=store,
        launcher=launcher,
        executor_kafka=executor_kafka_settings(spec),
        observe=events.append,
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    state = await driver.load_state()
    batch_seconds = []
    for i in range(batches):
        for n in range(records):
            producer.produce(topic, value=b"x" * 100, partition=n % 4)
        producer.flush(10)
        start = time.perf_counter()
        state, plan = await driver.run_batch(state)
        batch_seconds.append(time.perf_counter() - start)
        assert plan is not None, f"batch {i} found no records"
    baseline = [bare_executors(units, work) for units in launcher.units]
    overhead = [b - e for b, e in zip(batch_seconds, launcher.seconds, strict=True)]
    med = statistics.median
    print(f"{batches} batches of {records} records over 4 partitions (count sink), medians:")
    print(f"  whole batch (plan, record, launch, run, commit): {med(batch_seconds) * 1000:7.1f} ms")
    print(f"  inside the launcher (executor processes):        {med(launcher.seconds) * 1000:7.1f} ms")
    print(f"  baseline: the same units as bare processes:      {med(baseline) * 1000:7.1f} ms")
    print(
        f"  driver overhead (batch - launcher):              {med(overhead) * 1000:7.1f} ms  (goal <= 150 ms)"
    )
    print(f"  ratio whole batch / bare executors:              {med(batch_seconds) / med(baseline):7.2f}x")
    for f in admin.delete_topics([topic]).values():
        f.result(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--records", type=int, default=40)
    args = parser.parse_args()
    if not args.bootstrap:
        parser.error(
            "needs --bootstrap or KAFKA_BOOTSTRAP (bash hack/kafka.sh up; eval $(bash hack/kafka.sh env))"
        )
    asyncio.run(run(args.bootstrap, args.batches, args.records))


if __name__ == "__main__":
    main()
