"""Exactly-once sinks versus their plain counterparts, side by side on the same backlog.

    eval "$(bash hack/kafka.sh env)"; eval "$(bash hack/postgres.sh env)"
    .venv/bin/python bench/exactly_once_sinks.py [--records 200000] [--size 100] [--partitions 4] [--rounds 2]

Produces ``--records`` records of ``--size`` bytes, then runs one work unit over the whole backlog
with each sink in turn, in-process (``run_unit``): ``count`` (the read alone), ``kafka``
(idempotent, at-least-once across attempts), ``kafka`` with ``transactional: true`` and
``postgres`` (rows + offset chain per range). Each round uses a fresh output topic, a fresh batch
id and fresh tables. Prints the best records/s per sink and the ratios
(goals: transactional >= 0.8 x kafka; postgres >= 50,000 records/s).
"""

from __future__ import annotations

import argparse
import os
import uuid
from typing import Any

import psycopg
from backlog import make_backlog, unit_rate
from confluent_kafka.admin import AdminClient, NewTopic

from directstream.executor.contract import OffsetRange
from directstream.executor.offset_store_postgres import seed_offsets


def create_topic(bootstrap: str, name: str, partitions: int) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)
    return name


def prepare(bootstrap: str, records: int, size: int, partitions: int) -> list[OffsetRange]:
    return make_backlog(bootstrap, "bench-eos", records, size, partitions, keyed=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    parser.add_argument("--dsn", default=os.environ.get("DIRECTSTREAM_POSTGRES_DSN"))
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not args.bootstrap or not args.dsn:
        parser.error("needs --bootstrap/$KAFKA_BOOTSTRAP and --dsn/$DIRECTSTREAM_POSTGRES_DSN")
    os.environ["DIRECTSTREAM_POSTGRES_DSN"] = args.dsn
    ranges = prepare(args.bootstrap, args.records, args.size, args.partitions)
    best: dict[str, float] = {}
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        for round_ in range(1, args.rounds + 1):
            out = create_topic(args.bootstrap, f"bench-eos-out-{uuid.uuid4().hex[:8]}", args.partitions)
            table, offsets = f"{schema}.records_{round_}", f"{schema}.offsets_{round_}"
            seed_offsets(
                args.dsn, offsets, "bench-eos", {(r.topic, r.partition): r.from_offset for r in ranges}
            )
            sinks: list[tuple[str, str, dict[str, Any]]] = [
                ("count", "count", {}),
                ("kafka", "kafka", {"topic": out}),
                ("kafka transactional", "kafka", {"topic": out, "transactional": True}),
                ("postgres", "postgres", {"table": table, "offsetsTable": offsets}),
            ]
            for name, sink, options in sinks:
                rate = unit_rate(args.bootstrap, "bench-eos", ranges, sink, options, batch=round_)
                best[name] = max(best.get(name, 0.0), rate)
                print(f"round {round_}: {name:<20} {rate:>12,.0f} records/s")
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print()
    for name, rate in best.items():
        print(f"{name:<20} {rate:>12,.0f} records/s (best of {args.rounds})")
    print(f"kafka transactional / kafka = {best['kafka transactional'] / best['kafka']:.2f} (goal >= 0.8)")
    print(f"postgres / count            = {best['postgres'] / best['count']:.2f}")
    print(f"postgres >= 50,000 records/s: {'yes' if best['postgres'] >= 50_000 else 'NO'}")


if __name__ == "__main__":
    main()
