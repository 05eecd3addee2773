"""Drain rates of the executor's sinks versus a bare confluent-kafka loop, side by side in one run.

    .venv/bin/python bench/drain_rates.py [--bootstrap HOST:PORT] [--records 2000000] [--size 100]
        [--partitions 4] [--rounds 3] [--out-dir DIR]

Produces one backlog (``backlog.make_backlog``), then drains all of it, in-process and one work unit
over every partition, with each of these in turn, round after round:

- ``bare``: the hand-written ``assign`` + ``consume`` loop of ``executor_throughput.py``, with the
  executor's librdkafka settings (``consumer_config``);
- ``count``: the executor's reader and the ``count`` sink (the read alone);
- ``jsonl``: JSON-lines files per range (encoded, written, fsynced, renamed), under ``--out-dir``;
- ``jsonl/stdlib``: the same files encoded as before msgspec, a dict per record and stdlib ``json``
  (the reference the chunk encoder replaced; ``--no-stdlib`` leaves it out);
- ``python/record`` and ``python/chunk``: the ``python`` sink with a user object that reads every
  record's value length, through ``process_record(record, range)`` and ``process(records, range)``.

Prints each one's median records/s over the rounds, the median of its per-round ratios to ``count``
and to ``bare`` (a round's runs are seconds apart, so their ratios hold up better than the rates
on a shared machine), and the process's CPU time per record (all threads, librdkafka's included).
Goal: jsonl >= 0.5 x count. A warm-up read first brings the log into the page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from backlog import make_backlog
from executor_throughput import bare_loop

from directstream.executor.contract import KafkaClientSettings, OffsetRange, ProcessorSettings, WorkUnit
from directstream.executor.processors import build_processor
from directstream.executor.processors.jsonl import JsonlProcessor
from directstream.executor.reader import DEFAULT_CHUNK_SIZE, ReaderOptions
from directstream.executor.records import KafkaRecord, record_to_json
from directstream.executor.runner import run_unit


class ValueBytesPerRecord:
    """A user processor called once per record (``entryPoint: drain_rates:ValueBytesPerRecord``)."""

    def __init__(self, options: dict[str, Any], unit: WorkUnit) -> None:
        self.total = 0

    def process_record(self, record: KafkaRecord, range_: OffsetRange) -> None:
        self.total += len(record.value() or b"")


class ValueBytesPerChunk:
    """The same work, called once per chunk: the loop over the records runs in the user's code."""

    def __init__(self, options: dict[str, Any], unit: WorkUnit) -> None:
        self.total = 0

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        total = self.total
        for record in records:
            total += len(record.value() or b"")
        self.total = total


_stdlib_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class StdlibJsonl(JsonlProcessor):
    """The jsonl sink with its previous encoder: one dict per record, encoded by stdlib ``json``."""

    def __init__(self, options: dict[str, Any], unit: WorkUnit) -> None:
        super().__init__(options)

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        lines = [_stdlib_encode(record_to_json(record)) for record in records]
        lines.append("")
        self._file(range_).file.write("\n".join(lines).encode("utf-8"))


def unit_for(bootstrap: str, ranges: list[OffsetRange], sink: str, options: dict[str, Any]) -> WorkUnit:
    return WorkUnit(
        stream="bench-drain",
        batch_id=0,
        attempt=1,
        index=0,
        ranges=tuple(ranges),
        kafka=KafkaClientSettings(bootstrap),
        processor=ProcessorSettings(sink, options),
    )


# A drain: (bootstrap, ranges, chunk size) -> records read.
Drain = Callable[[str, list[OffsetRange], int], int]


def sink_loop(sink: str, options: Callable[[], dict[str, Any]]) -> Drain:
    def drain(bootstrap: str, ranges: list[OffsetRange], chunk_size: int) -> int:
        unit = unit_for(bootstrap, ranges, sink, options())
        result = run_unit(unit, build_processor(unit.processor, unit), ReaderOptions(chunk_size=chunk_size))
        assert result.ok, result.error
        return result.records

    return drain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--out-dir", type=Path, default=None, help="where jsonl writes (default: a temp dir)")
    parser.add_argument("--no-stdlib", action="store_true", help="leave out the jsonl/stdlib reference")
    args = parser.parse_args()
    if not args.bootstrap:
        parser.error("give --bootstrap or set $KAFKA_BOOTSTRAP (bash hack/kafka.sh env)")
    ranges = make_backlog(args.bootstrap, "bench-drain", args.records, args.size, args.partitions)
    out_root = Path(tempfile.mkdtemp(prefix="drain-rates-", dir=args.out_dir))
    jsonl_dirs = iter(range(1_000_000))

    def jsonl_options() -> dict[str, Any]:
        return {"directory": str(out_root / str(next(jsonl_dirs)))}

    loops: dict[str, Drain] = {
        "bare": lambda bootstrap, ranges, chunk: bare_loop(unit_for(bootstrap, ranges, "count", {}), chunk),
        "count": sink_loop("count", dict),
        "jsonl": sink_loop("jsonl", jsonl_options),
        "jsonl/stdlib": sink_loop(
            "python", lambda: {"entryPoint": "drain_rates:StdlibJsonl", **jsonl_options()}
        ),
        "python/record": sink_loop("python", lambda: {"entryPoint": "drain_rates:ValueBytesPerRecord"}),
        "python/chunk": sink_loop("python", lambda: {"entryPoint": "drain_rates:ValueBytesPerChunk"}),
    }
    if args.no_stdlib:
        del loops["jsonl/stdlib"]
    rates: dict[str, list[float]] = {name: [] for name in loops}
    cpu: dict[str, list[float]] = {name: [] for name in loops}
    try:
        loops["bare"](args.bootstrap, ranges, args.chunk_size)  # warm-up: the log into the page cache
        for round_ in range(1, args.rounds + 1):
            for name, loop in loops.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                count = loop(args.bootstrap, ranges, args.chunk_size)
                seconds = time.perf_counter() - started
                cpu_seconds = time.process_time() - cpu_started
                assert count == args.records, f"{name} read {count} records, expected {args.records}"
                rates[name].append(count / seconds)
                cpu[name].append(cpu_seconds / count * 1e6)
                print(
                    f"  round {round_} {name:<14} {count / seconds:>12,.0f} records/s "
                    f"({seconds:.2f}s, {cpu_seconds:.2f} CPU-s)"
                )
                shutil.rmtree(out_root, ignore_errors=True)  # keep at most one run's files on disk
    finally:
        shutil.rmtree(out_root, ignore_errors=True)

    def ratio(name: str, base: str) -> float:
        return statistics.median(a / b for a, b in zip(rates[name], rates[base], strict=True))

    print(
        f"\n{args.records:,} records x {args.size} B on {args.partitions} partitions, "
        f"one work unit, medians of {args.rounds} rounds:"
    )
    print(f"{'':<14} {'records/s':>12} {'/count':>7} {'/bare':>7} {'CPU us/record':>14}")
    for name in loops:
        print(
            f"{name:<14} {statistics.median(rates[name]):>12,.0f} {ratio(name, 'count'):>7.2f} "
            f"{ratio(name, 'bare'):>7.2f} {statistics.median(cpu[name]):>14.2f}"
        )
    print(f"jsonl / count = {ratio('jsonl', 'count'):.2f} (goal >= 0.5)")


if __name__ == "__main__":
    main()
