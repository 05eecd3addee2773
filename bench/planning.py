"""Planning time for many partitions, and Kafka offset requests per batch.

    .venv/bin/python bench/planning.py [--partitions 10000] [--bootstrap HOST:PORT]

Part 1 (pure, no Kafka): ``plan_batch`` + ``split_work`` for ``--partitions`` partitions,
against a baseline that only pairs each committed offset with its latest offset (the least
any planner must do), side by side; prints medians and the ratio (goal: plan <= 20 ms).

Part 2 (real broker, if reachable): one batch's watermark look-up over a topic with
``--request-partitions`` partitions, counting ListOffsets requests from librdkafka's own
statistics (goal: one per broker for each end of the log).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import uuid

from confluent_kafka.admin import AdminClient, NewTopic

from directstream.operator.adapters.kafka import KafkaOffsets
from directstream.operator.core.planning import PlanInputs, Watermarks, plan_batch, split_work
from directstream.operator.core.spec import KafkaSpec, RateSpec, StreamSpec


def time_ms(fn: object, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def bench_planning(partitions: int, repeat: int) -> None:
    rng = random.Random(1)
    topics = [f"t{i}" for i in range(max(1, partitions // 100))]
    tps = [(topics[i % len(topics)], i // len(topics)) for i in range(partitions)]
    committed = {tp: rng.randrange(1_000_000) for tp in tps}
    marks = {tp: Watermarks(0, committed[tp] + rng.randrange(10_000)) for tp in tps}
    spec = StreamSpec(
        name="bench",
        kafka=KafkaSpec("127.0.0.1:9092"),
        topics=tuple(topics),
        rate=RateSpec(max_per_partition=1000),
    )
    inputs = PlanInputs(committed, marks)

    def baseline() -> None:
        {tp: (committed[tp], marks[tp].latest) for tp in marks}

    batch = plan_batch(spec, inputs, 2)
    base = time_ms(baseline, repeat)
    planned = time_ms(lambda: plan_batch(spec, inputs, 2), repeat)
    split = time_ms(lambda: split_work(batch.ranges, 16, 5000), repeat)
    print(f"planning {partitions:,} partitions, median of {repeat}:")
    print(f"  baseline (pair committed with latest): {base:7.2f} ms")
    print(
        f"  plan_batch (ranges, caps, data loss):  {planned:7.2f} ms  {planned / base:4.1f}x  (goal <= 20 ms)"
    )
    print(f"  split_work into 16 executors:          {split:7.2f} ms  {split / base:4.1f}x")


def bench_requests(bootstrap: str, partitions: int) -> None:
    topic = f"bench-offsets-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(30)
    stats: list[dict[str, object]] = []
    spec = StreamSpec(
        name="bench",
        kafka=KafkaSpec(bootstrap, config={"statistics.interval.ms": "100"}),
        topics=(topic,),
    )
    offsets = KafkaOffsets(spec)
    offsets._admin = AdminClient(  # a client whose statistics we can read
        {
            "bootstrap.servers": bootstrap,
            "statistics.interval.ms": 100,
            "stats_cb": lambda s: stats.append(json.loads(s)),
        }
    )
    tps = offsets.partitions()

    def list_offsets_requests() -> int:
        seen = len(stats)
        while len(stats) < seen + 2:  # a sample taken after everything so far
            offsets._admin.poll(0.1)
        last = stats[-1]
        brokers = last["brokers"]  # type: ignore[index]
        return sum(b["req"].get("ListOffsets", 0) for b in brokers.values() if b["nodeid"] >= 0)  # type: ignore[attr-defined,union-attr]

    offsets.watermarks(tps)  # warm-up: leadership of a new topic settles, metadata is cached
    time.sleep(0.5)
    before = list_offsets_requests()
    calls = 5
    for _ in range(calls):
        offsets.watermarks(tps)
    per_batch = (list_offsets_requests() - before) / calls
    n_brokers = len(admin.list_topics(timeout=10).brokers)
    print(f"\nwatermarks of {len(tps)} partitions on {n_brokers} broker(s), {calls} batches:")
    print(f"  {per_batch:.1f} ListOffsets requests per batch")
    print("  (goal: one per broker per end of the log: earliest + latest = 2 per broker)")
    for f in admin.delete_topics([topic]).values():
        f.result(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--partitions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--request-partitions", type=int, default=64)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    args = parser.parse_args()
    bench_planning(args.partitions, args.repeat)
    if args.bootstrap:
        bench_requests(args.bootstrap, args.request_partitions)
    else:
        print("\n(no --bootstrap / KAFKA_BOOTSTRAP: skipped the request count)")


if __name__ == "__main__":
    main()
