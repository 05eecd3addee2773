"""Per-batch overhead of the operator on Kubernetes, beyond the executors' own run time.

    eval "$(bash hack/cluster.sh env)"; eval "$(bash hack/kafka.sh env)"
    .venv/bin/python bench/operator_overhead.py [--bootstrap HOST:PORT] [--batches 10] [--records 20]

Starts ``directstream-operator`` in a fresh namespace of the cluster at $KUBECONFIG, applies one
stream with the ``count`` sink over a small new topic, and runs ``--batches`` batches, producing
``--records`` records before each. Everything is read back from the Kubernetes objects, with two
watches started before the stream exists:

- the DirectStream: ``status.history[].seconds`` (the operator's own clock, from the plan's status
  patch to the results read and the Job deleted), and the wall times at which ``status.pending``
  of a batch and then its commit (``status.batch``) became visible, which adds the commit's
  status patch;
- the executor pods: each one's result (the termination message), whose ``seconds`` the executor
  measures itself, from the start of its run to the end.

The executors' run time is that in-process ``seconds`` (slowest unit of the batch), not the pods'
start/finish timestamps: the API gives those in whole seconds, too coarse for sub-second batches.
Process start (interpreter and imports) thus counts as overhead; the baseline separates it: in the
same run, every batch's work units (taken from the pods' spec) are run again as bare
``directstream-executor`` processes, reading the same ranges.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from directstream.executor.contract import ExecutorResult, WorkUnit
from directstream.operator.core.manifests import COMPLETION_INDEX_ANNOTATION, LABEL_BATCH, WORK_UNITS_KEY

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
GROUP, VERSION, PLURAL = "directstream.io", "v1alpha1", "directstreams"
# The image hack/images.py builds and `hack/cluster.sh up` loads into the dev node.
EXECUTOR_IMAGE = f"directstream/executor:{importlib.metadata.version('directstream')}"


# -- cluster plumbing (shared with operator_scale.py) -----------------------------------------------


def kube_api() -> client.ApiClient:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        sys.exit('needs KUBECONFIG (eval "$(bash hack/cluster.sh env)")')
    return config.new_client_from_config(config_file=kubeconfig)


def ensure_crd(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    try:
        ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        return
    except ApiException as exc:
        if exc.status != 404:
            raise
    ext.create_custom_resource_definition(yaml.safe_load((ROOT / "crds" / "directstream.yaml").read_text()))
    wait_for("the CRD to be established", lambda: _established(ext), timeout=60)


def _established(ext: client.ApiextensionsV1Api) -> bool:
    crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def wait_for(what: str, check: Any, timeout: float, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def stream_doc(name: str, bootstrap: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DirectStream",
        "metadata": {"name": name},
        "spec": {"kafka": {"bootstrapServers": bootstrap}, **spec},
    }


@contextmanager
def operator_in_fresh_namespace(
    api: client.ApiClient, prefix: str, log: Path, extra_args: Sequence[str] = ()
) -> Iterator[tuple[str, int]]:
    """A new namespace watched by a ``directstream-operator`` process: yields (namespace, pid).

    Cleanup order matters: the operator's finalizer is on every DirectStream, so the streams are
    deleted while it still runs; only then is it stopped and the namespace deleted.
    """
    core = client.CoreV1Api(api)
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace, "labels": {"directstream.io/bench": "true"}}})
    # Pods need the namespace's default ServiceAccount, which the controller-manager creates.
    wait_for(
        "the default ServiceAccount",
        lambda: core.list_namespaced_service_account(namespace, field_selector="metadata.name=default").items,
        timeout=30,
    )
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    args = [
        str(VENV_BIN / "directstream-operator"),
        "--namespace",
        namespace,
        "--executor-image",
        EXECUTOR_IMAGE,
        # Its own Lease: a bench operator killed earlier must not keep this one waiting as a standby.
        "--leader-elect-resource-namespace",
        namespace,
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*args, "--liveness-port", "0", "--log-format", "plain", *extra_args],
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        yield namespace, proc.pid
    finally:
        custom = client.CustomObjectsApi(api)
        with suppress(ApiException):
            custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        gone = _wait_quietly(
            lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        )
        if not gone:  # the operator is not finishing them: drop its finalizer so the namespace can go
            for item in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
                patch = {"metadata": {"finalizers": None}}
                with suppress(ApiException):
                    custom.patch_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, item["metadata"]["name"], patch
                    )
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        core.delete_namespace(namespace, propagation_policy="Background")
        print(f"(cleaned up namespace {namespace}; operator log: {log})")


def _wait_quietly(check: Any, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(ApiException):
            if check():
                return True
        time.sleep(0.5)
    return False


def create_topic(bootstrap: str, topic: str, partitions: int) -> AdminClient:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)
    return admin


def delete_topic(admin: AdminClient, topic: str) -> None:
    for future in admin.delete_topics([topic]).values():
        with suppress(Exception):
            future.result(30)


# -- what the watches see ---------------------------------------------------------------------------


@dataclass
class Observed:
    """Per batch id: when its plan and its commit became visible, its history entry, its pods."""

    planned: dict[int, float] = field(default_factory=dict)
    committed: dict[int, float] = field(default_factory=dict)
    history: dict[int, dict[str, Any]] = field(default_factory=dict)
    results: dict[int, dict[int, ExecutorResult]] = field(default_factory=dict)
    units: dict[int, dict[int, WorkUnit]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_stream(self, obj: dict[str, Any], seen: float) -> None:
        status = obj.get("status") or {}
        with self.lock:
            pending = status.get("pending") or {}
            if "batch" in pending:
                self.planned.setdefault(int(pending["batch"]), seen)
            if status.get("batch"):
                self.committed.setdefault(int(status["batch"]), seen)
            for entry in status.get("history") or []:
                self.history[int(entry["batch"])] = entry

    def on_pod(self, pod: client.V1Pod) -> None:
        batch = (pod.metadata.labels or {}).get(LABEL_BATCH)
        index = (pod.metadata.annotations or {}).get(COMPLETION_INDEX_ANNOTATION)
        if batch is None or index is None:
            return
        b, i = int(batch), int(index)
        with self.lock:
            for state in pod.status.container_statuses or []:
                terminated = state.state.terminated if state.state else None
                if terminated is not None and terminated.message:
                    self.results.setdefault(b, {})[i] = ExecutorResult.loads(terminated.message)

    def on_configmap(self, configmap: client.V1ConfigMap) -> None:
        """An attempt's work units (the ConfigMap its Job's pods mount)."""
        batch = (configmap.metadata.labels or {}).get(LABEL_BATCH)
        units_json = (configmap.data or {}).get(WORK_UNITS_KEY)
        if batch is None or not units_json:
            return
        with self.lock:
            units = self.units.setdefault(int(batch), {})
            for i, doc in enumerate(json.loads(units_json)):
                units.setdefault(i, WorkUnit.from_json(doc))


def start_watches(api: client.ApiClient, namespace: str, observed: Observed, stop: threading.Event) -> None:
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)

    def streams() -> None:
        while not stop.is_set():
            w = watch.Watch()
            for event in w.stream(
                custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, timeout_seconds=5
            ):
                observed.on_stream(event["object"], time.time())
                if stop.is_set():
                    w.stop()

    def pods() -> None:
        while not stop.is_set():
            w = watch.Watch()
            for event in w.stream(core.list_namespaced_pod, namespace, timeout_seconds=5):
                observed.on_pod(event["object"])
                if stop.is_set():
                    w.stop()

    def configmaps() -> None:
        while not stop.is_set():
            w = watch.Watch()
            for event in w.stream(core.list_namespaced_config_map, namespace, timeout_seconds=5):
                observed.on_configmap(event["object"])
                if stop.is_set():
                    w.stop()

    for target in (streams, pods, configmaps):
        threading.Thread(target=target, daemon=True).start()


# -- the baseline --------------------------------------------------------------------------------------


def bare_executors(units: Sequence[WorkUnit], work: Path) -> tuple[float, float]:
    """The same units as plain parallel ``directstream-executor`` processes: (wall, slowest reported)."""
    start = time.perf_counter()
    procs = []
    for unit in units:
        path, result = (
            work / f"bare-{unit.batch_id}-{unit.index}.json",
            work / f"bare-{unit.batch_id}-{unit.index}.result",
        )
        path.write_text(unit.dumps())
        command = [
            str(VENV_BIN / "directstream-executor"),
            "--work-unit",
            str(path),
            "--result-file",
            str(result),
        ]
        procs.append((subprocess.Popen(command, stderr=subprocess.DEVNULL), result))
    for proc, _ in procs:
        proc.wait()
    wall = time.perf_counter() - start
    reported = [ExecutorResult.loads(result.read_text()) for _, result in procs]
    assert all(r.ok for r in reported), [r.error for r in reported if not r.ok]
    return wall, max(r.seconds for r in reported)


# -- the run ----------------------------------------------------------------------------------------------


def run(bootstrap: str, batches: int, records: int, partitions: int) -> None:
    api = kube_api()
    ensure_crd(api)
    custom = client.CustomObjectsApi(api)
    topic = f"bench-op-overhead-{uuid.uuid4().hex[:8]}"
    admin = create_topic(bootstrap, topic, partitions)
    work = Path(tempfile.mkdtemp(prefix="ds-bench-op-"))
    observed, stop = Observed(), threading.Event()
    try:
        with operator_in_fresh_namespace(api, "bench-op-overhead", work / "operator.log") as (namespace, _):
            start_watches(api, namespace, observed, stop)
            time.sleep(1)  # let both watches list before the first event of interest
            name = "overhead"
            spec = {
                "topics": [topic],
                "batchInterval": "1s",
                "executors": {"max": partitions},
                "processor": {"sink": "count"},
            }
            custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, stream_doc(name, bootstrap, spec)
            )
            producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
            for i in range(batches):
                for n in range(records):
                    producer.produce(topic, value=b"x" * 100, partition=n % partitions)
                producer.flush(10)
                total = (i + 1) * records

                def caught_up(total: int = total) -> bool:
                    status = (
                        custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get(
                            "status"
                        )
                        or {}
                    )
                    return status.get("recordsTotal", 0) >= total and not status.get("pending")

                wait_for(f"batch {i + 1} to commit {total} records", caught_up, timeout=120)
            time.sleep(1)  # the last pods' terminated state may trail the commit on the watch
            stop.set()
        report(observed, work, batches, records, partitions)  # its baseline reads the topic again
    finally:
        delete_topic(admin, topic)


class BatchRow(NamedTuple):
    history: float  # status.history[].seconds
    visible: float  # plan visible -> commit visible on the watch
    executors: float  # the slowest unit's own result seconds
    units: list[WorkUnit]


def report(observed: Observed, work: Path, batches: int, records: int, partitions: int) -> None:
    rows: list[BatchRow] = []
    with observed.lock:
        ids = sorted(b for b, e in observed.history.items() if e.get("records", 0) > 0)
        for b in ids:
            results = observed.results.get(b, {})
            units = observed.units.get(b, {})
            if (
                not results
                or len(results) != len(units)
                or b not in observed.planned
                or b not in observed.committed
            ):
                print(f"  (batch {b}: incomplete observation, left out)")
                continue
            rows.append(
                BatchRow(
                    history=float(observed.history[b]["seconds"]),
                    visible=observed.committed[b] - observed.planned[b],
                    executors=max(r.seconds for r in results.values()),
                    units=[units[i] for i in sorted(units)],
                )
            )
    if not rows:
        raise SystemExit("no batch was fully observed")
    baseline = [bare_executors(units, work) for units in (r.units for r in rows)]
    med = statistics.median
    history, visible = med(r.history for r in rows), med(r.visible for r in rows)
    executor = med(r.executors for r in rows)
    bare_wall, bare_run = med(w for w, _ in baseline), med(s for _, s in baseline)
    pods = med(len(r.units) for r in rows)
    for (hist, seen, run_s, _), (wall, _) in zip(rows, baseline, strict=True):
        print(
            f"  batch: history {hist:6.3f}s  visible {seen:6.3f}s  executors {run_s:6.3f}s  bare {wall:6.3f}s"
        )
    print(f"{len(rows)} of {batches} batches observed; {records} records per batch, {partitions} partitions,")
    print(f"{pods:.0f} executor pod(s) per batch (count sink); medians:")
    lines = [
        ("batch, operator's clock (plan patched -> results read, Job deleted)", history),
        ("batch, as seen on the API (plan visible -> commit visible)", visible),
        ("executors' own run (result seconds, slowest unit)", executor),
        ("baseline: the same units as bare directstream-executor processes", bare_wall),
        ("  of which their own run (result seconds)", bare_run),
        ("overhead per batch (visible - executors' run)", visible - executor),
        ("  process start (bare wall - bare run)", bare_wall - bare_run),
        ("  Kubernetes + operator (visible - bare wall)", visible - bare_wall),
    ]
    for label, seconds in lines:
        print(f"  {label:<70} {seconds * 1000:8.1f} ms")
    print("    (status patches, Job create, pod scheduling and start by the node, result read, commit)")
    print(f"  {'ratio batch on the operator / bare executors':<70} {visible / bare_wall:8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--records", type=int, default=20, help="records produced before each batch")
    parser.add_argument("--partitions", type=int, default=2, help="of the topic; one executor pod each")
    args = parser.parse_args()
    if not args.bootstrap:
        parser.error('needs --bootstrap or KAFKA_BOOTSTRAP (eval "$(bash hack/kafka.sh env)")')
    run(args.bootstrap, args.batches, args.records, args.partitions)


if __name__ == "__main__":
    main()
