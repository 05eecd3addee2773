"""Small-batch overhead and end-to-end latency in local mode: ``executors.mode`` job vs pool.

    .venv/bin/python bench/batch_overhead.py [--bootstrap HOST:PORT] [--batches 20] [--seconds 20]

1. Overhead: ``--batches`` small batches (``--records`` new records each, 4 partitions, ``count``
   sink, ``executors.max: 4``) through the real local wiring (``build_local_driver``: Kafka, the
   state file, the launcher), each timed from plan to commit (plan, record, run, commit). The
   pool's executors start before the first timed batch (one warm-up batch for both modes).
2. Latency: ``directstream run`` semantics (the real loop) at ``batchInterval: 1s`` while a
   producer sends 20 records/s; per record, produce (acked) to the commit that covers it.

Both modes run in the same process, one after the other; the ratio is printed side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from directstream.operator.core import events as ev
from directstream.operator.core.spec import StreamSpec, parse_stream
from directstream.operator.driver import DEFAULT_SETTINGS
from directstream.operator.driver.loop import run_stream
from directstream.operator.driver.outcomes import RunMode
from directstream.operator.hosts.local import LocalHost, build_local_driver

PARTITIONS = 4


def stream_spec(bootstrap: str, topic: str, mode: str, interval: str = "5s") -> StreamSpec:
    return parse_stream(
        {
            "apiVersion": "directstream.io/v1alpha1",
            "kind": "DirectStream",
            "metadata": {"name": f"bench-{mode}-{uuid.uuid4().hex[:6]}"},
            "spec": {
                "kafka": {"bootstrapServers": bootstrap},
                "topics": [topic],
                "batchInterval": interval,
                "executors": {"mode": mode, "max": 4},
                "processor": {"sink": "count"},
            },
        }
    )


def new_topic(admin: AdminClient) -> str:
    topic = f"bench-batch-{uuid.uuid4().hex[:8]}"
    for f in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        f.result(30)
    return topic


async def overhead(bootstrap: str, topic: str, mode: str, batches: int, records: int) -> list[float]:
    work = Path(tempfile.mkdtemp(prefix=f"ds-bench-{mode}-"))
    spec = stream_spec(bootstrap, topic, mode)
    driver = build_local_driver(spec, work / "state", lambda e: None, DEFAULT_SETTINGS, asyncio.Event())
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    state = await driver.load_state()
    seconds = []
    try:
        for i in range(batches + 1):
            for n in range(records):
                producer.produce(topic, value=b"x" * 100, partition=n % PARTITIONS)
            producer.flush(10)
            start = time.perf_counter()
            state, plan = await driver.run_batch(state)
            if i > 0:  # the first batch warms up (and starts the pool)
                seconds.append(time.perf_counter() - start)
            assert plan is not None, f"batch {i} found no records"
    finally:
        await driver.close()
    return seconds


def committed_of(state_dir: Path) -> dict[int, int]:
    doc: dict[str, Any] = json.loads((state_dir / "state.json").read_text())
    return {int(p): o for parts in doc["committed"].values() for p, o in parts.items()}


async def latency(bootstrap: str, topic: str, mode: str, seconds: float) -> list[float]:
    work = Path(tempfile.mkdtemp(prefix=f"ds-lat-{mode}-"))
    state_dir = work / "state"
    spec = stream_spec(bootstrap, topic, mode, interval="1s")
    stop = asyncio.Event()
    commits: list[tuple[float, dict[int, int]]] = []

    def observe(event: ev.Event) -> None:
        if isinstance(event, ev.Committed):
            commits.append((time.time(), committed_of(state_dir)))

    driver = build_local_driver(spec, state_dir, observe, DEFAULT_SETTINGS, stop)
    host = LocalHost(
        spec=spec, driver=driver, observe=observe, mode=RunMode.FOREVER, settings=DEFAULT_SETTINGS, stop=stop
    )
    acked: list[tuple[int, int, float]] = []  # partition, offset, produced (acked) at
    producing = threading.Event()

    def produce() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        sent = 0
        while producing.is_set():
            producer.produce(
                topic,
                value=b"x" * 100,
                partition=sent % PARTITIONS,
                on_delivery=lambda err, msg: acked.append((msg.partition(), msg.offset(), time.time())),
            )
            sent += 1
            producer.poll(0)
            time.sleep(0.05)
        producer.flush(10)

    async def stopper() -> None:
        warm = Producer({"bootstrap.servers": bootstrap})
        warm.produce(topic, value=b"warm-up", partition=0)  # the first batch starts the pool
        warm.flush(10)
        await asyncio.sleep(6)  # records before this do not count
        producing.set()
        thread = threading.Thread(target=produce)
        thread.start()
        await asyncio.sleep(seconds)
        producing.clear()
        await asyncio.to_thread(thread.join)
        await asyncio.sleep(3)  # the last records get committed
        stop.set()

    try:
        await asyncio.gather(run_stream(host, RunMode.FOREVER, DEFAULT_SETTINGS), stopper())
    finally:
        await driver.close()
    out = []
    for partition, offset, at in acked:
        done = next((t for t, c in commits if c.get(partition, 0) > offset and t >= at), None)
        if done is not None:
            out.append(done - at)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(bootstrap: str, batches: int, records: int, seconds: float) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = []
    medians = {}
    print(
        f"{batches} batches of {records} records over {PARTITIONS} partitions (count sink, max 4), medians:"
    )
    for mode in ("job", "pool"):
        topics.append(new_topic(admin))
        medians[mode] = statistics.median(await overhead(bootstrap, topics[-1], mode, batches, records))
        print(f"  {mode:4}: batch (plan, record, run, commit) {medians[mode] * 1000:7.1f} ms")
    print(f"  pool / job: {medians['pool'] / medians['job']:.3f}x  (goal: pool <= 50 ms)")
    print(
        f"end-to-end latency, produce (acked) -> committed, batchInterval 1s, 20 records/s for {seconds:g}s:"
    )
    for mode in ("job", "pool"):
        topics.append(new_topic(admin))
        lat = await latency(bootstrap, topics[-1], mode, seconds)
        p50, p99 = pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000
        print(f"  {mode:4}: p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  ({len(lat)} records)")
    for f in admin.delete_topics(topics).values():
        f.result(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--records", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the latency run produces")
    args = parser.parse_args()
    if not args.bootstrap:
        parser.error(
            "needs --bootstrap or KAFKA_BOOTSTRAP (bash hack/kafka.sh up; eval $(bash hack/kafka.sh env))"
        )
    asyncio.run(run(args.bootstrap, args.batches, args.records, args.seconds))


if __name__ == "__main__":
    main()
