"""The parquet sink's drain rate next to ``count`` and ``jsonl``, side by side on the same backlog.

    eval "$(bash hack/kafka.sh env)"; eval "$(bash hack/s3proxy.sh env)"
    .venv/bin/python bench/parquet_sink.py [--records 300000] [--size 200] [--partitions 4] [--rounds 2]

Produces ``--records`` JSON-like records of about ``--size`` bytes (varying fields, so that
compression has real work), then runs one work unit over the whole backlog with each sink in turn,
in-process (``run_unit``): ``count`` (the read alone), ``jsonl`` (files in a temporary directory),
``parquet`` into a temporary directory, and ``parquet`` to the S3 server of ``$DIRECTSTREAM_S3_ENDPOINT``
(S3Proxy on this machine: it shares the CPU with the executor). Prints the best records/s per sink,
the bytes written, and the ratios (goal: parquet >= jsonl).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from backlog import make_backlog, unit_rate

PAGES = [b"/", b"/search", b"/cart", b"/checkout", b"/product/%d"]


def click(i: int, size: int) -> bytes:
    doc = b'{"user":%d,"session":"s-%x","page":"%s","ref":"campaign-%d","ts":%d,"pad":"' % (
        i % 50_000,
        (i * 2_654_435_761) % 2**32,
        PAGES[i % len(PAGES)].replace(b"%d", b"%d" % (i % 977)),
        i % 13,
        1_800_000_000_000 + i * 7,
    )
    return doc + b"x" * max(0, size - len(doc) - 2) + b'"}'


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def s3_bytes(endpoint: str, bucket: str, prefix: str) -> int:
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    client = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sum(o["Size"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    parser.add_argument("--endpoint", default=os.environ.get("DIRECTSTREAM_S3_ENDPOINT"))
    parser.add_argument("--bucket", default=os.environ.get("DIRECTSTREAM_S3_BUCKET", "directstream"))
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not args.bootstrap or not args.endpoint:
        parser.error(
            "needs --bootstrap/$KAFKA_BOOTSTRAP and --endpoint/$DIRECTSTREAM_S3_ENDPOINT (and AWS_* env)"
        )
    ranges = make_backlog(
        args.bootstrap,
        "bench-parquet",
        args.records,
        args.size,
        args.partitions,
        True,
        lambda i: click(i, args.size),
    )
    best: dict[str, float] = {}
    written: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-parquet-") as scratch:
        for round_ in range(1, args.rounds + 1):
            prefix = f"bench-{uuid.uuid4().hex[:8]}"
            folders = {name: Path(scratch) / f"{name}-{round_}" for name in ("jsonl", "parquet")}
            sinks: list[tuple[str, str, dict[str, Any]]] = [
                ("count", "count", {}),
                ("jsonl", "jsonl", {"directory": str(folders["jsonl"])}),
                ("parquet (directory)", "parquet", {"url": str(folders["parquet"])}),
                (
                    "parquet (S3)",
                    "parquet",
                    {"url": f"s3://{args.bucket}/{prefix}", "endpoint": args.endpoint},
                ),
            ]
            for name, sink, options in sinks:
                rate = unit_rate(args.bootstrap, "bench-parquet", ranges, sink, options, batch=round_)
                best[name] = max(best.get(name, 0.0), rate)
                print(f"round {round_}: {name:<20} {rate:>12,.0f} records/s")
            written = {
                "jsonl": directory_bytes(folders["jsonl"]),
                "parquet (directory)": directory_bytes(folders["parquet"]),
                "parquet (S3)": s3_bytes(args.endpoint, args.bucket, prefix),
            }
    print()
    for name, rate in best.items():
        size = f"  {written[name] / 1e6:8.1f} MB written" if name in written else ""
        print(f"{name:<20} {rate:>12,.0f} records/s (best of {args.rounds}){size}")
    for name in ("parquet (directory)", "parquet (S3)"):
        print(f"{name + ' / jsonl':<28} = {best[name] / best['jsonl']:.2f} (goal >= 1)")
    print(f"{'parquet (S3) / count':<28} = {best['parquet (S3)'] / best['count']:.2f}")
    print(f"{'jsonl bytes / parquet bytes':<28} = {written['jsonl'] / written['parquet (directory)']:.1f}")


if __name__ == "__main__":
    main()
