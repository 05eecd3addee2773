"""The operator's own cost with many streams: CPU, memory and committed batches per minute.

    eval "$(bash hack/cluster.sh env)"; eval "$(bash hack/kafka.sh env)"
    .venv/bin/python bench/operator_scale.py [--streams 50] [--seconds 60] [--interval 5s]

One ``directstream-operator`` process watches a fresh namespace holding ``--streams`` DirectStreams
(``count`` sink, one small topic, each stream its own consumer group). A producer adds one record
per partition every ``--produce-every`` seconds, so every stream has work at every batch interval
and runs one executor Job per batch. After a warm-up (every stream has committed a batch, plus
``--warmup`` seconds) the operator process is sampled for ``--seconds``: CPU from the utime+stime
deltas of /proc/<pid>/stat (percent of one core), RSS from /proc/<pid>/status, and the batches
committed meanwhile from the streams' ``status.batch``. Side by side, the ideal rate: one batch per
stream per interval.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from kubernetes import client
from operator_overhead import (  # same directory: python puts the script's dir on sys.path
    GROUP,
    PLURAL,
    VERSION,
    create_topic,
    delete_topic,
    ensure_crd,
    kube_api,
    operator_in_fresh_namespace,
    stream_doc,
    wait_for,
)

from directstream.operator.core.spec import parse_stream

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15 of the line.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def committed_batches(custom: client.CustomObjectsApi, namespace: str) -> dict[str, int]:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    return {i["metadata"]["name"]: int((i.get("status") or {}).get("batch") or 0) for i in items}


def produce_steadily(
    bootstrap: str, topic: str, partitions: int, every: float, stop: threading.Event
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    while not stop.wait(every):
        for partition in range(partitions):
            producer.produce(topic, value=b"x" * 100, partition=partition)
        producer.poll(0)
    producer.flush(10)


def run(args: argparse.Namespace) -> None:
    api = kube_api()
    ensure_crd(api)
    custom = client.CustomObjectsApi(api)
    topic = f"bench-op-scale-{uuid.uuid4().hex[:8]}"
    admin = create_topic(args.bootstrap, topic, args.partitions)
    stop = threading.Event()
    producer = threading.Thread(
        target=produce_steadily,
        args=(args.bootstrap, topic, args.partitions, args.produce_every, stop),
        daemon=True,
    )
    producer.start()
    work = Path(tempfile.mkdtemp(prefix="ds-bench-scale-"))
    spec = {"topics": [topic], "batchInterval": args.interval, "processor": {"sink": "count"}}
    interval = parse_stream(stream_doc("probe", args.bootstrap, spec)).batch_interval_seconds
    try:
        with operator_in_fresh_namespace(api, "bench-op-scale", work / "operator.log") as (namespace, pid):
            for n in range(args.streams):
                doc = stream_doc(f"s{n:03d}", args.bootstrap, spec)
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)
            started = time.monotonic()
            wait_for(
                f"all {args.streams} streams to commit a batch",
                lambda: min(committed_batches(custom, namespace).values(), default=0) > 0,
                timeout=max(120, args.streams * 3),
                every=1,
            )
            print(f"every stream committed a batch after {time.monotonic() - started:.0f}s; warming up")
            time.sleep(args.warmup)

            before = committed_batches(custom, namespace)
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            rss = []
            while time.monotonic() - t0 < args.seconds:
                rss.append(rss_mib(pid))
                time.sleep(1)
            cpu1, t1 = cpu_seconds(pid), time.monotonic()
            after = committed_batches(custom, namespace)
    finally:
        stop.set()
        producer.join(15)
        delete_topic(admin, topic)

    elapsed = t1 - t0
    batches = sum(after[name] - before.get(name, 0) for name in after)
    per_minute = batches * 60 / elapsed
    ideal = args.streams * 60 / interval
    print(
        f"{args.streams} streams, {interval:g}s interval, count sink, one {args.partitions}-partition topic;"
    )
    print(f"operator process sampled for {elapsed:.0f}s after warm-up:")
    print(f"  CPU (utime+stime, % of one core):        {100 * (cpu1 - cpu0) / elapsed:8.1f} %")
    print(f"  RSS MiB median / max:                    {statistics.median(rss):8.1f} / {max(rss):.1f}")
    print(f"  batches committed per minute, all streams: {per_minute:6.1f}")
    print(f"  ideal (one per stream per interval):       {ideal:6.1f}  ({per_minute / ideal:.0%} of it)")
    print(f"  CPU per committed batch:                 {1000 * (cpu1 - cpu0) / max(batches, 1):8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    parser.add_argument("--streams", type=int, default=50, help="DirectStreams (e.g. 50 or 200)")
    parser.add_argument("--seconds", type=float, default=60, help="sampling window")
    parser.add_argument("--warmup", type=float, default=15, help="seconds after every stream committed once")
    parser.add_argument("--interval", default="5s", help="batchInterval of every stream")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument(
        "--produce-every", type=float, default=1.0, help="seconds between records per partition"
    )
    args = parser.parse_args()
    if not args.bootstrap:
        parser.error('needs --bootstrap or KAFKA_BOOTSTRAP (eval "$(bash hack/kafka.sh env)")')
    run(args)


if __name__ == "__main__":
    main()
