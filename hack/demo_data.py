"""The demo's sample data and its summary (used by hack/demo.sh)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

PAGES = ["/", "/pricing", "/docs", "/blog", "/signup", "/login", "/docs/install", "/careers"]


def produce(bootstrap: str, topic: str, count: int, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=10).topics:
        for future in admin.delete_topics([topic]).values():
            future.result(30)
        for _ in range(100):
            if topic not in admin.list_topics(timeout=10).topics:
                break
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    rng = random.Random(7)
    for i in range(count):
        user = f"user-{rng.randrange(500)}"
        event = {"user": user, "page": rng.choice(PAGES), "n": i}
        while True:
            try:
                producer.produce(topic, key=user.encode(), value=json.dumps(event).encode())
                break
            except BufferError:  # the local queue is full: let deliveries drain, then retry
                producer.poll(0.5)
        if i % 5000 == 0:
            producer.poll(0)
    producer.flush(60)
    print(f"produced {count:,} sample click events to {topic} ({partitions} partitions)")


def summary(bootstrap: str, topic: str, group: str, out_dir: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    parts = admin.list_topics(topic, timeout=10).topics[topic].partitions
    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in parts}
    latest = {tp.partition: f.result().offset for tp, f in admin.list_offsets(request).items()}
    group_result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result()
    committed = {tp.partition: tp.offset for tp in group_result.topic_partitions}
    offsets_out: set[tuple[int, int]] = set()
    lines = 0
    for path in Path(out_dir, topic).glob("*/*.jsonl"):
        for line in path.read_text().splitlines():
            doc = json.loads(line)
            offsets_out.add((doc["partition"], doc["offset"]))
            lines += 1
    records_in = sum(latest.values())
    print("\nsummary")
    print(f"  records in (latest offsets):       {records_in:,}")
    print(f"  records out (JSON lines written):  {lines:,} ({len(offsets_out):,} distinct offsets)")
    for p in sorted(latest):
        print(f"  partition {p}: latest {latest[p]:,}  committed by group {group}: {committed.get(p, '-')}")
    ok = lines == len(offsets_out) == records_in and all(committed.get(p) == latest[p] for p in latest)
    print("  exactly once and fully committed: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(summary(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]))
