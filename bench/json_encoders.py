"""JSON encoders for the jsonl sink's chunks, side by side in one run (no Kafka needed).

    .venv/bin/python bench/json_encoders.py [--records 10000] [--size 100] [--keyed] [--rounds 15]

Builds one chunk of ``confluent_kafka.Message`` objects like a consumer returns (``--size`` byte text
values, null keys unless ``--keyed``, no headers) and encodes it as JSON lines with:

- ``stdlib json``: a dict per record (``record_to_json``) and ``json`` (the encoder before msgspec);
- ``orjson, dicts``: the same dicts, one ``orjson.dumps`` per record (orjson has no lines encoder);
- ``orjson, chunk``: dicts built from columns taken with C-level ``map`` calls, one ``orjson.dumps``
  of the chunk's list, turned into lines;
- ``msgspec, dicts``: the same dicts, one ``encode_lines`` call for the chunk;
- ``msgspec, structs``: what the sink runs (``encode_json_lines``): structs built lazily from columns
  while one ``encode_lines`` call encodes the chunk.

Every encoder's output is checked byte for byte against the stdlib one. Prints the CPU time per record
(the median of ``--rounds``) and each one's speed-up over stdlib json, with the garbage collector set
as the executor's reader sets it. orjson is a dev dependency only.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable

import msgspec
import orjson
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from directstream.executor.reader import READ_GC_THRESHOLD
from directstream.executor.records import encode_json_lines, record_to_json

_stdlib = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_msgspec = msgspec.json.Encoder()


def stdlib_json(chunk: list[Message]) -> bytes:
    lines = [_stdlib(record_to_json(record)) for record in chunk]
    lines.append("")
    return "\n".join(lines).encode("utf-8")


def orjson_dicts(chunk: list[Message]) -> bytes:
    newline = orjson.OPT_APPEND_NEWLINE
    return b"".join([orjson.dumps(record_to_json(record), option=newline) for record in chunk])


def orjson_chunk(chunk: list[Message]) -> bytes:
    """orjson's fastest form found: dicts built from columns, one ``dumps`` call for the chunk's
    list, the array turned into lines at the record boundaries (text keys and values only, what
    this benchmark produces; a ``"`` inside a string is always escaped, so ``},{"topic":`` only
    occurs between records)."""
    keys = [None if key is None else key.decode() for key in map(Message.key, chunk)]
    stamps = [stamp for _, stamp in map(Message.timestamp, chunk)]
    values = map(bytes.decode, map(Message.value, chunk))
    topics, partitions = map(Message.topic, chunk), map(Message.partition, chunk)
    columns = zip(topics, partitions, map(Message.offset, chunk), stamps, keys, values, strict=True)
    docs = [
        {"topic": t, "partition": p, "offset": o, "timestamp": s, "key": k, "value": v, "headers": []}
        for t, p, o, s, k, v in columns
    ]
    return orjson.dumps(docs)[1:-1].replace(b'},{"topic":', b'}\n{"topic":') + b"\n"


def msgspec_dicts(chunk: list[Message]) -> bytes:
    return _msgspec.encode_lines([record_to_json(record) for record in chunk])


def msgspec_structs(chunk: list[Message]) -> bytes:
    return encode_json_lines(chunk)


ENCODERS: dict[str, Callable[[list[Message]], bytes]] = {
    "stdlib json": stdlib_json,
    "orjson, dicts": orjson_dicts,
    "orjson, chunk": orjson_chunk,
    "msgspec, dicts": msgspec_dicts,
    "msgspec, structs": msgspec_structs,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--keyed", action="store_true", help="text keys instead of null keys")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    value = b"v" * args.size
    chunk = [
        Message(
            topic="bench-topic",
            partition=2,
            offset=1_000_000 + i,
            key=b"key-%d" % i if args.keyed else None,
            value=value,
            timestamp=(TIMESTAMP_CREATE_TIME, 1_700_000_000_000 + i),
        )
        for i in range(args.records)
    ]
    expected = stdlib_json(chunk)
    for name, encoder in ENCODERS.items():
        assert encoder(chunk) == expected, f"{name} writes different bytes"
    times: dict[str, list[float]] = {name: [] for name in ENCODERS}
    # The GC threshold the executor's reader sets: each encoder's garbage is not collected
    # (traversing the chunk's Messages) in the next one's time.
    gc.set_threshold(READ_GC_THRESHOLD, *gc.get_threshold()[1:])
    for _ in range(args.rounds):
        for name, encoder in ENCODERS.items():
            gc.collect()
            started = time.process_time()
            encoder(chunk)
            times[name].append((time.process_time() - started) / args.records * 1e9)
    keys = "text" if args.keyed else "null"
    print(f"one chunk of {args.records:,} records, {args.size} B values, {keys} keys")
    print(f"{'':<18} {'ns/record':>10} {'vs stdlib':>10}")
    base = statistics.median(times["stdlib json"])
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<18} {median:>10,.0f} {base / median:>9.1f}x")


if __name__ == "__main__":
    main()
