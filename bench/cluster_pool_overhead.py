"""Median small-batch overhead on the cluster: ``executors.mode: job`` next to ``pool``, in one run.

    eval "$(bash hack/cluster.sh env)"; eval "$(bash hack/kafka.sh env)"
    .venv/bin/python bench/cluster_pool_overhead.py [--bootstrap HOST:PORT] [--batches 10] [--records 20]

One ``directstream-operator`` with the pool endpoint (``--pool-port``, on 127.0.0.1: the dev node's
pods share the host network) in a fresh namespace; one stream per mode, one after the other, with the
``count`` sink over a small new topic, ``--batches`` batches of ``--records`` records each (the first,
which starts the pool's pods, is left out). Per batch: ``status.history[].seconds`` (the operator's
clock, plan to commit) minus the slowest unit's own run time (job: the pods' termination messages,
watched; pool: the executors' log line for the unit). Prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
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
    Observed,
    create_topic,
    delete_topic,
    ensure_crd,
    kube_api,
    operator_in_fresh_namespace,
    start_watches,
    stream_doc,
    wait_for,
)

from directstream.operator.core.manifests import LABEL_STREAM

UNIT_LINE = re.compile(r"batch (\d+) attempt \d+ unit \d+: ok, \d+ records in ([0-9.]+)s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def job_unit_seconds(observed: Observed) -> dict[int, float]:
    """batch -> the slowest unit's own seconds, from the Job pods' termination messages (watched: a
    succeeded Job and its pods are deleted once the batch is committed)."""
    with observed.lock:
        return {b: max(r.seconds for r in results.values()) for b, results in observed.results.items()}


def pool_unit_seconds(core: client.CoreV1Api, namespace: str, stream: str) -> dict[int, float]:
    """batch -> the slowest unit's own seconds, from the warm executors' logs."""
    slowest: dict[int, float] = {}
    selector = f"{LABEL_STREAM}={stream},directstream.io/pool"
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        log = core.read_namespaced_pod_log(pod.metadata.name, namespace)
        for batch, seconds in UNIT_LINE.findall(log):
            slowest[int(batch)] = max(slowest.get(int(batch), 0.0), float(seconds))
    return slowest


def run_mode(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    bootstrap: str,
    mode: str,
    batches: int,
    records: int,
    observed: Observed,
) -> list[float]:
    topic = f"bench-pool-{mode}-{uuid.uuid4().hex[:8]}"
    admin = create_topic(bootstrap, topic, 2)
    name = f"overhead-{mode}"
    spec = {
        "topics": [topic],
        "batchInterval": "1s",
        "executors": {"mode": mode, "max": 2},
        "processor": {"sink": "count"},
    }
    try:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, stream_doc(name, bootstrap, spec)
        )
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        for i in range(batches + 1):
            for n in range(records):
                producer.produce(topic, value=b"x" * 100, partition=n % 2)
            producer.flush(10)
            total = (i + 1) * records

            def caught_up(total: int = total) -> bool:
                stream = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                status = stream.get("status") or {}
                return status.get("recordsTotal", 0) >= total and not status.get("pending")

            wait_for(f"{mode} batch {i + 1} to commit {total} records", caught_up, timeout=180)
        time.sleep(1)  # the last results may trail the commit
        stream = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        history = {int(h["batch"]): float(h["seconds"]) for h in stream["status"]["history"]}
        units = pool_unit_seconds(core, namespace, name) if mode == "pool" else job_unit_seconds(observed)
        first = min(history)  # the pool's pods start during the first batch: not a small batch's cost
        return [history[b] - units[b] for b in sorted(history) if b != first and b in units]
    finally:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        delete_topic(admin, topic)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--records", type=int, default=20, help="records produced before each batch")
    args = parser.parse_args()
    if not args.bootstrap:
        parser.error("--bootstrap or $KAFKA_BOOTSTRAP is required")
    api = kube_api()
    ensure_crd(api)
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    work = Path(tempfile.mkdtemp(prefix="ds-bench-pool-"))
    pool_args = ["--pool-host", "127.0.0.1", "--pool-port", str(free_port())]
    overhead: dict[str, list[float]] = {}
    with operator_in_fresh_namespace(api, "bench-pool", work / "operator.log", pool_args) as (namespace, _):
        observed, stop = Observed(), threading.Event()
        start_watches(api, namespace, observed, stop)  # only Job pods carry results the watch reads
        time.sleep(1)
        try:
            for mode in ("job", "pool"):
                overhead[mode] = run_mode(
                    custom, core, namespace, args.bootstrap, mode, args.batches, args.records, observed
                )
        finally:
            stop.set()
    print(f"{args.records} records per batch over 2 partitions, count sink, max 2 (first batch left out)")
    for mode, values in overhead.items():
        ms = [round(v * 1000) for v in values]
        print(
            f"{mode:>4}: median overhead {statistics.median(values) * 1000:7.0f} ms over {len(values)} "
            f"batches (min {min(ms)}, max {max(ms)}; all, ms: {json.dumps(ms)})"
        )
    ratio = statistics.median(overhead["job"]) / max(statistics.median(overhead["pool"]), 1e-6)
    print(f"job / pool median overhead: {ratio:.1f}x")


if __name__ == "__main__":
    main()
