"""Draining a backlog with a warm pool: a fixed count vs the lag-driven count, side by side.

    .venv/bin/python bench/pool_scaling.py [--bootstrap HOST:PORT] [--records 12000]

Each configuration runs ``directstream run --until-caught-up`` over the same backlog (3 partitions,
``rate.maxPerPartition`` capping batches, a ``python`` sink that spends 0.5 ms per record, so the
executors and not Kafka bound the rate): ``min: 1, max: 1`` (fixed 1), ``min: 1, max: 3`` (the
lag-driven count) and ``min: 3, max: 3`` (fixed 3). It prints the wall time to catch up, the
executor-seconds the batches used (the ledger's seconds x executors) and the ratios to fixed 3.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

CLI = [sys.executable, "-m", "directstream.operator.cli"]
SINK = """
import time

class Slow:
    def __init__(self, options, unit):
        pass

    def process(self, records, rng):
        time.sleep(0.0005 * len(records))
"""
CONFIGS = {"fixed 1": (1, 1), "lag-driven 1..3": (1, 3), "fixed 3": (3, 3)}


def backlog(bootstrap: str, records: int) -> str:
    topic = f"bench-scale-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(records):
        producer.produce(topic, value=b"x" * 100, partition=i % 3)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    return topic


def run(bootstrap: str, topic: str, lo: int, hi: int, work: Path) -> tuple[float, float, list[int]]:
    name = f"bench-scale-{uuid.uuid4().hex[:6]}"
    manifest = work / f"{name}.yaml"
    spec = {
        "kafka": {"bootstrapServers": bootstrap},
        "topics": [topic],
        "batchInterval": "200ms",
        "rate": {"maxPerPartition": 2_500},
        "executors": {"mode": "pool", "min": lo, "max": hi},
        "processor": {"sink": "python", "options": {"entryPoint": "benchslow:Slow"}},
    }
    doc = {"apiVersion": "directstream.io/v1alpha1", "kind": "DirectStream", "metadata": {"name": name}}
    manifest.write_text(yaml.safe_dump({**doc, "spec": spec}))
    env = {**os.environ, "PYTHONPATH": f"{work}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    state = work / name
    started = time.monotonic()
    subprocess.run(
        [*CLI, "run", str(manifest), "--until-caught-up", "--state-dir", str(state)],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
    )
    wall = time.monotonic() - started
    history = json.loads((state / "state.json").read_text())["history"]
    used = sum(e["seconds"] * e.get("executors", 0) for e in history)
    return wall, used, [e.get("executors", 0) for e in history if e["records"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--records", type=int, default=12_000)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "benchslow.py").write_text(SINK)
        for label, (lo, hi) in CONFIGS.items():
            topic = backlog(args.bootstrap, args.records)
            results[label] = run(args.bootstrap, topic, lo, hi, work)
    base_wall, base_used, _ = results["fixed 3"]
    print(f"backlog {args.records:,} records over 3 partitions, 0.5 ms per record per executor")
    print(f"{'pool':<18}{'catch-up s':>11}{'vs fixed 3':>11}{'executor-s':>11}{'vs fixed 3':>11}  executors")
    for label, (wall, used, counts) in results.items():
        print(
            f"{label:<18}{wall:>11.2f}{wall / base_wall:>11.2f}{used:>11.2f}{used / base_used:>11.2f}  "
            + " ".join(map(str, counts[:12]))
            + (" ..." if len(counts) > 12 else "")
        )


if __name__ == "__main__":
    main()
