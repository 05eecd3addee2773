"""Executor pod start to first record on the dev node, next to the same reader as a local process.

    eval "$(bash hack/cluster.sh env)"; eval "$(bash hack/kafka.sh env)"
    .venv/bin/python bench/executor_pod_start.py [--bootstrap HOST:PORT] [--rounds 5]

One record in a new topic. Each round, side by side: (a) a local process of the project's interpreter and
(b) a pod in the executor image (hack/images.py) on the dev node run the same script: import confluent_kafka
and the executor, `assign` partition 0 at offset 0, poll the first record, and report the wall clock then
(stdout, or the pod's termination message). Start to first record is that clock minus the moment just
before the process was spawned or the pod created (one machine, one clock). The pod's figure includes
scheduling, the sandbox (catatonit), the container start and the kubelet's status; also printed: pod
create to phase Succeeded as the API shows it. Medians over the rounds, and the pod/local ratio.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kubernetes import client, config

IMAGE = f"directstream/executor:{importlib.metadata.version('directstream')}"
SCRIPT = """
import json, sys, time
from confluent_kafka import Consumer, TopicPartition
import directstream.executor.main
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "bench", "enable.auto.commit": False})
c.assign([TopicPartition(sys.argv[2], 0, 0)])
while (m := c.poll(5)) is None or m.error():
    pass
t = time.time()
out = json.dumps({"first_record_at": t, "offset": m.offset()})
print(out)
try:
    open("/dev/termination-log", "w").write(out)
except OSError:
    pass
c.close()
"""


def local_round(bootstrap: str, topic: str) -> float:
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, bootstrap, topic], capture_output=True, text=True, check=True
    ).stdout
    return float(json.loads(out.splitlines()[-1])["first_record_at"]) - t0


def pod_round(
    core: client.CoreV1Api, namespace: str, bootstrap: str, topic: str, i: int
) -> tuple[float, float]:
    name = f"start-{i}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "c", "image": IMAGE, "command": ["python3", "-c", SCRIPT, bootstrap, topic]}
            ],
        },
    }
    t0 = time.time()
    core.create_namespaced_pod(namespace, pod)
    while True:
        p = core.read_namespaced_pod(name, namespace)
        if p.status.phase in ("Succeeded", "Failed"):
            done = time.time() - t0
            break
        time.sleep(0.05)
    term = p.status.container_statuses[0].state.terminated
    if p.status.phase != "Succeeded":
        raise SystemExit(f"pod {name} failed: {term.message if term else p.status}")
    return float(json.loads(term.message)["first_record_at"]) - t0, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    topic = f"bench-start-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    prod = Producer({"bootstrap.servers": args.bootstrap})
    prod.produce(topic, b"x")
    prod.flush(10)
    api = config.new_client_from_config(os.environ.get("KUBECONFIG"))
    core = client.CoreV1Api(api)
    namespace = f"bench-start-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    while not any(
        sa.metadata.name == "default" for sa in core.list_namespaced_service_account(namespace).items
    ):
        time.sleep(0.1)
    local: list[float] = []
    pods: list[tuple[float, float]] = []
    try:
        for i in range(args.rounds):
            local.append(local_round(args.bootstrap, topic))
            pods.append(pod_round(core, namespace, args.bootstrap, topic, i))
    finally:
        core.delete_namespace(namespace)
        admin.delete_topics([topic])
    rows: list[tuple[str, Any]] = [
        ("local process: start to first record (s)", statistics.median(local)),
        ("executor pod: create to first record (s)", statistics.median(p[0] for p in pods)),
        ("executor pod: create to Succeeded (s)", statistics.median(p[1] for p in pods)),
        (
            "pod / local, start to first record",
            statistics.median(p[0] / x for p, x in zip(pods, local, strict=True)),
        ),
    ]
    print(f"{args.rounds} rounds, image {IMAGE}, medians")
    for label, value in rows:
        print(f"  {label:<45} {value:8.2f}")


if __name__ == "__main__":
    main()
