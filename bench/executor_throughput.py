"""Executor read throughput versus a bare confluent-kafka consume loop, side by side.

    .venv/bin/python bench/executor_throughput.py [--bootstrap HOST:PORT] [--records 1000000]

Creates a topic, produces ``--records`` records of ``--size`` bytes over ``--partitions``
partitions, then alternates (a) a bare ``assign`` + ``consume(num_messages)`` loop and (b) the
executor's reader with the ``count`` processor (``run_unit``, in-process, same consumer settings)
over the same ranges. Prints records/s for both and the ratio (goal: executor/bare >= 0.9).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from backlog import make_backlog
from confluent_kafka import Consumer, KafkaError, TopicPartition

from directstream.executor.contract import KafkaClientSettings, OffsetRange, ProcessorSettings, WorkUnit
from directstream.executor.processors import CountProcessor
from directstream.executor.reader import DEFAULT_CHUNK_SIZE, ReaderOptions, consumer_config
from directstream.executor.runner import run_unit


def prepare(bootstrap: str, records: int, size: int, partitions: int) -> list[OffsetRange]:
    return make_backlog(bootstrap, "bench-executor", records, size, partitions)


def bare_loop(unit: WorkUnit, chunk_size: int) -> int:
    """What a careful hand-written loop does: assign, consume, stop each partition at until."""
    consumer = Consumer(consumer_config(unit))
    consumer.assign([TopicPartition(r.topic, r.partition, r.from_offset) for r in unit.ranges])
    until = {r.partition: r.until_offset for r in unit.ranges}
    count = 0
    while until:
        for message in consumer.consume(num_messages=chunk_size, timeout=0.5):
            error = message.error()
            partition = message.partition()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and message.offset() >= until.get(partition, 0):
                    until.pop(partition, None)
                continue
            if partition in until:
                count += 1
                if message.offset() + 1 >= until[partition]:
                    del until[partition]
    consumer.close()
    return count


def executor_loop(unit: WorkUnit, chunk_size: int) -> int:
    processor = CountProcessor()
    result = run_unit(unit, processor, ReaderOptions(chunk_size=chunk_size))
    assert result.ok, result.error
    return processor.records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    args = parser.parse_args()
    if not args.bootstrap:
        parser.error("give --bootstrap or set $KAFKA_BOOTSTRAP (bash hack/kafka.sh env)")
    ranges = prepare(args.bootstrap, args.records, args.size, args.partitions)
    unit = WorkUnit(
        stream="bench",
        batch_id=0,
        attempt=1,
        index=0,
        ranges=tuple(ranges),
        kafka=KafkaClientSettings(args.bootstrap),
        processor=ProcessorSettings("count"),
    )
    rates: dict[str, list[float]] = {"bare": [], "executor": []}
    loops = {"bare": bare_loop, "executor": executor_loop}
    for repetition in range(args.repetitions):
        for name, loop in loops.items():
            started = time.perf_counter()
            count = loop(unit, args.chunk_size)
            seconds = time.perf_counter() - started
            assert count == args.records, f"{name} read {count} records, expected {args.records}"
            rates[name].append(count / seconds)
            print(f"  rep {repetition + 1} {name:>8}: {count / seconds:>12,.0f} records/s ({seconds:.2f}s)")
    bare, executor = statistics.median(rates["bare"]), statistics.median(rates["executor"])
    print(f"bare consume loop: {bare:,.0f} records/s (median of {args.repetitions})")
    print(f"executor + count : {executor:,.0f} records/s (median of {args.repetitions})")
    print(f"ratio executor/bare: {executor / bare:.2f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
