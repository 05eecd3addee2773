"""Planning time for many partitions, and Kafka offset requests per batch.

    .venv/bin/python bench/planning.py [--partitions 10000] [--bootstrap HOST:PORT]

Part 1 (pure, no Kafka): ``plan_batch`` + ``split_work`` for ``--partitions`` partitions,
against a baseline that only pairs each committed offset with its latest offset (the least
any planner must do), side by side; prints medians and the ratio (goal: plan <= 20 ms).

Part 2 (real broker, if reachable): one batch's watermark look-up over a topic with
``--request-partitions`` partitions, counting ListOffsets requests from librdkafka's own
statistics (goal: one per broker for each end of the log).

Part 3 (real broker): what telling recreated topics apart costs per batch: the look-ups of a
batch (metadata, watermarks) with and without the topic-id request (DescribeTopics), side by
side over ``--pattern-topics`` topics; and the pure comparison of topic ids over
``--partitions`` partitions against planning them.
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
from directstream.operator.core.topic_lifecycle import TopicInfo, TopicRecord, compare_topics


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


def bench_topic_compare(partitions: int, repeat: int) -> None:
    topics = [f"t{i}" for i in range(max(1, partitions // 100))]
    tps = [(topics[i % len(topics)], i // len(topics)) for i in range(partitions)]
    committed = {tp: 1_000 for tp in tps}
    marks = {tp: Watermarks(0, 2_000) for tp in tps}
    records = {t: TopicRecord(f"id-{t}", 0) for t in topics}
    infos = {t: TopicInfo(f"id-{t}", tuple(range(100))) for t in topics}
    spec = StreamSpec(name="bench", kafka=KafkaSpec("127.0.0.1:9092"), topics=tuple(topics))
    planned = time_ms(lambda: plan_batch(spec, PlanInputs(committed, marks), 2), repeat)
    compared = time_ms(lambda: compare_topics(committed, records, tps, infos), repeat)
    print(f"\ncomparing topic ids of {partitions:,} partitions ({len(topics)} topics), median of {repeat}:")
    print(f"  plan_batch:     {planned:7.2f} ms")
    print(f"  compare_topics: {compared:7.2f} ms  {compared / planned:4.2f}x of planning")


def bench_topic_lookup(bootstrap: str, n_topics: int, repeat: int) -> None:
    prefix = f"bench-ids-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [f"{prefix}-{i}" for i in range(n_topics)]
    for f in admin.create_topics([NewTopic(n, 4, 1) for n in names]).values():
        f.result(30)
    spec = StreamSpec(name="bench", kafka=KafkaSpec(bootstrap), topic_pattern=f"^{prefix}-.*$")
    offsets = KafkaOffsets(spec)
    tps = offsets.partitions()
    while len(tps) < 4 * n_topics:  # the new topics reach the metadata
        time.sleep(0.2)
        tps = offsets.partitions()
    offsets.watermarks(tps)  # warm-up: leadership of the new topics settles
    offsets.topics(names)

    def without_ids() -> None:
        offsets.watermarks(offsets.partitions())

    def with_ids() -> None:
        found = offsets.partitions()
        offsets.topics(sorted({t for t, _ in found}))
        offsets.watermarks(found)

    base, ids = [], []
    for _ in range(repeat):  # interleaved, so both see the same broker load
        base.append(time_ms(without_ids, 1))
        ids.append(time_ms(with_ids, 1))
    b, i = statistics.median(base), statistics.median(ids)
    print(f"\none batch's Kafka look-ups over {n_topics} topics ({len(tps)} partitions), median of {repeat}:")
    print(f"  metadata + watermarks:                  {b:7.2f} ms")
    print(f"  metadata + topic ids + watermarks:      {i:7.2f} ms  {i / b:4.2f}x")
    for f in admin.delete_topics(names).values():
        f.result(30)


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
    parser.add_argument("--pattern-topics", type=int, default=50)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    args = parser.parse_args()
    bench_planning(args.partitions, args.repeat)
    bench_topic_compare(args.partitions, args.repeat)
    if args.bootstrap:
        bench_requests(args.bootstrap, args.request_partitions)
        bench_topic_lookup(args.bootstrap, args.pattern_topics, args.repeat)
    else:
        print("\n(no --bootstrap / KAFKA_BOOTSTRAP: skipped the request count)")


if __name__ == "__main__":
    main()
