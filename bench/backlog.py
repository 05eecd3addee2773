"""A backlog of records to benchmark against (shared by the benchmark scripts in this folder)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from directstream.executor.contract import KafkaClientSettings, OffsetRange, ProcessorSettings, WorkUnit
from directstream.executor.processors import build_processor
from directstream.executor.runner import run_unit


def make_backlog(
    bootstrap: str,
    prefix: str,
    records: int,
    size: int,
    partitions: int,
    keyed: bool = False,
    value_of: Callable[[int], bytes] | None = None,
) -> list[OffsetRange]:
    """Create a fresh topic, produce ``records`` records of ``size`` bytes round-robin over
    ``partitions`` (``value_of(i)`` instead of ``size`` repeated bytes when given), and return the
    full range of every partition."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000})
    value = b"v" * size
    started = time.monotonic()
    for i in range(records):
        key = b"%d" % i if keyed else None
        while True:
            try:
                producer.produce(
                    topic, key=key, value=value if value_of is None else value_of(i), partition=i % partitions
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain
                producer.poll(0.05)
    assert producer.flush(120) == 0
    print(f"produced {records} records of {size} bytes to {topic} in {time.monotonic() - started:.1f}s")
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench"})
    ranges = []
    for partition in range(partitions):
        low, high = probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        ranges.append(OffsetRange(topic, partition, low, high))
    probe.close()
    return ranges


def unit_rate(
    bootstrap: str, stream: str, ranges: list[OffsetRange], sink: str, options: dict[str, Any], batch: int
) -> float:
    """Records per second of one work unit over ``ranges`` into ``sink``, run in this process."""
    unit = WorkUnit(
        stream=stream,
        batch_id=batch,
        attempt=1,
        index=0,
        ranges=tuple(ranges),
        kafka=KafkaClientSettings(bootstrap),
        processor=ProcessorSettings(sink, options),
    )
    started = time.monotonic()
    result = run_unit(unit, build_processor(unit.processor, unit))
    seconds = time.monotonic() - started
    assert result.ok, result.error
    return result.records / seconds
