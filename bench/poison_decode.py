"""What ``processor.decode: {value: json}`` and the poison policies cost, side by side in one run.

    .venv/bin/python bench/poison_decode.py [--bootstrap HOST:PORT] [--records 300000] [--rounds 3]

One backlog of ~100 B JSON values, one in a thousand of them garbage, drained in-process as one work
unit over every partition, round after round, by:

- ``jsonl``: the jsonl sink, no decoding (today's default: values written as text);
- ``jsonl/json+skip``: values parsed as JSON and written as JSON values, the garbage skipped;
- ``jsonl/json+dlq``: the same, the garbage dead-lettered (its own transactional producer per unit).

Prints each one's median records/s and the median of its per-round ratios to ``jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from backlog import make_backlog
from confluent_kafka.admin import AdminClient, NewTopic

from directstream.executor.contract import (
    KafkaClientSettings,
    OffsetRange,
    PoisonPolicy,
    ProcessorSettings,
    WorkUnit,
    parse_poison,
)
from directstream.executor.processors import build_processor
from directstream.executor.reader import ReaderOptions
from directstream.executor.runner import run_unit


def value_of(i: int) -> bytes:
    if i % 1000 == 7:
        return b"\xffgarbage"
    return json.dumps({"id": i, "user": f"u{i % 977}", "page": "/p/" + "x" * 40, "ms": i % 5000}).encode()


def drain(bootstrap: str, ranges: list[OffsetRange], directory: Path, poison: PoisonPolicy) -> int:
    unit = WorkUnit(
        stream=f"bench-poison-{uuid.uuid4().hex[:6]}",
        batch_id=1,
        attempt=1,
        index=0,
        ranges=tuple(ranges),
        kafka=KafkaClientSettings(bootstrap),
        processor=ProcessorSettings("jsonl", {"directory": str(directory)}, poison),
    )
    result = run_unit(unit, build_processor(unit.processor, unit), ReaderOptions())
    assert result.ok, result.error
    return result.records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not args.bootstrap:
        parser.error("give --bootstrap or set $KAFKA_BOOTSTRAP (bash hack/kafka.sh env)")
    ranges = make_backlog(args.bootstrap, "bench-poison", args.records, 0, args.partitions, value_of=value_of)
    dlq = f"bench-poison-dlq-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})  # kept alive until the futures resolve
    for future in admin.create_topics([NewTopic(dlq, 1, 1)]).values():
        future.result(timeout=30)
    policies: dict[str, PoisonPolicy] = {
        "jsonl": PoisonPolicy(),
        "jsonl/json+skip": parse_poison({"decode": {"value": "json"}, "onError": "skip"}),
        "jsonl/json+dlq": parse_poison(
            {"decode": {"value": "json"}, "onError": "deadLetter", "deadLetter": {"topic": dlq}}
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in policies}
    out = Path(tempfile.mkdtemp(prefix="poison-decode-"))
    try:
        drain(args.bootstrap, ranges, out / "warm", PoisonPolicy())  # the log into the page cache
        for round_ in range(1, args.rounds + 1):
            for name, policy in policies.items():
                started = time.perf_counter()
                count = drain(args.bootstrap, ranges, out / f"{round_}-{name.replace('/', '_')}", policy)
                seconds = time.perf_counter() - started
                rates[name].append(count / seconds)
                print(f"  round {round_} {name:<16} {count / seconds:>12,.0f} records/s ({seconds:.2f}s)")
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"\n{args.records:,} JSON records (1 in 1000 garbage), medians of {args.rounds} rounds:")
    print(f"{'':<16} {'records/s':>12} {'/jsonl':>7}")
    for name in policies:
        ratio = statistics.median(a / b for a, b in zip(rates[name], rates["jsonl"], strict=True))
        print(f"{name:<16} {statistics.median(rates[name]):>12,.0f} {ratio:>7.2f}")


if __name__ == "__main__":
    main()
