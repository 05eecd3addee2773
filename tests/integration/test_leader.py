"""One leader: two ``directstream-operator`` processes watch the same namespace on the real API
server, with a real Kafka broker; only the holder of the Lease drives and commits."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import group_offsets, jsonl_offsets, latest_offsets
from tests.harness.operator_fixtures import (
    FAST_ELECTION,
    OperatorProcess,
    get_stream,
    lease_holder,
    stream_manifest,
    wait_committed,
    wait_until,
)

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]

# A sink that appends one line per record, so a range processed twice shows twice (no idempotence).
ROWS_SINK = (
    "import time\n"
    "class Rows:\n"
    "    def __init__(self, options, unit):\n"
    "        self.out, self.unit, self.delay = options['out'], unit, float(options.get('delay', 0))\n"
    "    def process(self, records, rng):\n"
    "        time.sleep(self.delay)\n"
    "        with open(self.out, 'a') as f:\n"
    "            f.writelines(f'{self.unit.batch_id} {self.unit.attempt} {r.partition()} {r.offset()}\\n'\n"
    "                         for r in records)\n"
)


def rows_spec(
    topic: str,
    tmp_path: Path,
    host_volumes: HostVolumes,
    namespace: str,
    *,
    delay: float = 0.0,
    rate: int = 0,
) -> dict[str, object]:
    (tmp_path / "rowsink.py").write_text(ROWS_SINK)
    return {
        "topics": [topic],
        "batchInterval": "1s",
        "rate": {"maxPerPartition": rate},
        "executors": {"max": 2, **host_volumes.code(namespace, tmp_path)},
        "processor": {
            "sink": "python",
            "options": {"entryPoint": "rowsink:Rows", "out": str(tmp_path / "rows"), "delay": str(delay)},
        },
    }


def rows(tmp_path: Path) -> Counter[tuple[int, int]]:
    """How many times each (partition, offset) reached the sink."""
    path = tmp_path / "rows"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter((int(p), int(o)) for _, _, p, o in (line.split() for line in lines))


def commits(process: OperatorProcess, stream: str) -> list[int]:
    """The batches this operator committed, from its own log lines (kopf's debug lines also quote
    the object, conditions and all, so only lines that start with the stream's name count)."""
    pattern = rf"^[\w.-]+/{stream}: batch (\d+) committed: "
    return [int(b) for b in re.findall(pattern, process.log(), flags=re.MULTILINE)]


def ran_jobs(process: OperatorProcess) -> list[str]:
    """The Jobs this operator created or adopted."""
    return re.findall(r"^(?:created|adopted running) Job (\S+)", process.log(), flags=re.MULTILINE)


def every_offset(latest: dict[tuple[str, int], int]) -> set[tuple[int, int]]:
    return {(p, o) for (_, p), end in latest.items() for o in range(end)}


@pytest.fixture
def two_operators(
    kube: Kube, crd: str, namespace: str, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    first = OperatorProcess(kube, [namespace], tmp_path / "operator-a.log")
    second = OperatorProcess(kube, [namespace], tmp_path / "operator-b.log")
    first.start()
    second.start()
    try:
        yield first, second
    finally:
        if any(p.proc is not None and p.proc.poll() is None for p in (first, second)):
            kube.kubectl("delete", "directstreams", "--all", "-n", namespace, "--timeout=60s", check=False)
        first.stop()
        second.stop()


def test_two_operators_at_once_only_one_drives_and_commits(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    two_operators: tuple[OperatorProcess, OperatorProcess],
    topic_name: str,
    tmp_path: Path,
    host_volumes: HostVolumes,
):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 400, partitions=2)
    kube.kubectl(
        "apply",
        "-f",
        "-",
        input=stream_manifest(
            "pair",
            namespace,
            kafka.bootstrap,
            rows_spec(topic_name, tmp_path, host_volumes, namespace, rate=100),
        ),
    )
    # Records keep arriving while both operators look at the stream, so plans made at different
    # moments differ.
    producing = threading.Thread(
        target=lambda: [kafka.produce(topic_name, 50, partitions=2) or time.sleep(0.7) for _ in range(8)]
    )
    producing.start()
    producing.join()
    latest = latest_offsets(kafka.bootstrap, topic_name)
    stream = wait_committed(kube, namespace, "pair", latest, timeout=180)

    seen = rows(tmp_path)
    assert set(seen) == every_offset(latest)
    assert max(seen.values()) == 1, "no record reached the sink twice"
    assert group_offsets(kafka.bootstrap, "pair", topic_name) == latest, "status equals the Kafka group"
    history = stream["status"]["history"]
    assert [h["batch"] for h in history] == list(range(1, len(history) + 1))

    drivers = [i for i, p in enumerate(two_operators) if ran_jobs(p)]
    committers = [i for i, p in enumerate(two_operators) if commits(p, "pair")]
    assert len(drivers) == 1, f"operators that ran Jobs: {drivers}"
    assert committers == drivers, f"operators that committed: {committers}"
    assert commits(two_operators[drivers[0]], "pair") == [h["batch"] for h in history]
    leader, standby = two_operators[drivers[0]], two_operators[1 - drivers[0]]
    assert lease_holder(kube, namespace) == leader.identity
    assert f"standby ({standby.identity})" in standby.log()
    assert f"{namespace}/pair: standby, not driving this stream" in standby.log()


def running_batch(kube: Kube, namespace: str, name: str) -> dict[str, object] | None:
    """The recorded plan once its Job is running (``status.pending.job``)."""
    pending = (get_stream(kube, namespace, name).get("status") or {}).get("pending") or {}
    return pending if pending.get("job") else None


# A standby counts the lease duration from when it saw the last renewal (up to a retry period x
# 1.2 after it was written) and notices the expiry on its next try (another 1.2 periods); the
# API calls on a loaded machine get 3 s more.
TAKEOVER_BOUND_S = FAST_ELECTION["lease_duration_s"] + 2 * 1.2 * FAST_ELECTION["retry_period_s"] + 3.0


def take_over_time(kube: Kube, namespace: str, standby: OperatorProcess) -> float:
    started = time.monotonic()
    wait_until(
        f"{standby.identity} to hold the Lease", lambda: lease_holder(kube, namespace) == standby.identity, 60
    )
    return time.monotonic() - started


def test_killing_the_leader_mid_batch_hands_the_stream_to_the_standby_exactly_once(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator_pair: tuple[OperatorProcess, OperatorProcess],
    topic_name: str,
    tmp_path: Path,
    host_volumes: HostVolumes,
):
    leader, standby = operator_pair
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 400, partitions=2)
    spec = rows_spec(topic_name, tmp_path, host_volumes, namespace, delay=4.0)
    kube.kubectl("apply", "-f", "-", input=stream_manifest("handover", namespace, kafka.bootstrap, spec))
    pending = wait_until("a running batch", lambda: running_batch(kube, namespace, "handover"), 90)
    leader.kill()
    took = take_over_time(kube, namespace, standby)
    print(f"the standby took the Lease {took:.1f}s after the leader was killed")
    assert took <= TAKEOVER_BOUND_S
    kafka.produce(topic_name, 200, partitions=2)  # the stream goes on under its new leader
    latest = latest_offsets(kafka.bootstrap, topic_name)
    stream = wait_committed(kube, namespace, "handover", latest, timeout=180)

    seen = rows(tmp_path)
    assert set(seen) == every_offset(latest) and max(seen.values()) == 1, "every record exactly once"
    assert group_offsets(kafka.bootstrap, "handover", topic_name) == latest
    assert f"adopted running Job {pending['job']}" in standby.log(), "the running attempt was adopted"
    history = {h["batch"]: h for h in stream["status"]["history"]}
    assert history[pending["batch"]]["attempts"] == 1
    assert pending["batch"] not in commits(leader, "handover")
    assert pending["batch"] in commits(standby, "handover")


def test_a_frozen_leader_is_deposed_and_commits_nothing_when_it_wakes(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator_pair: tuple[OperatorProcess, OperatorProcess],
    topic_name: str,
    tmp_path: Path,
    host_volumes: HostVolumes,
):
    """SIGSTOP (a long pause, a frozen node) keeps the process and everything it held: when it
    wakes after the standby took over, it finds it no longer leads and writes nothing."""
    leader, standby = operator_pair
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 400, partitions=2)
    spec = rows_spec(topic_name, tmp_path, host_volumes, namespace, delay=4.0)
    kube.kubectl("apply", "-f", "-", input=stream_manifest("frozen", namespace, kafka.bootstrap, spec))
    pending = wait_until("a running batch", lambda: running_batch(kube, namespace, "frozen"), 90)
    leader.pause()
    try:
        assert take_over_time(kube, namespace, standby) <= TAKEOVER_BOUND_S
        latest = latest_offsets(kafka.bootstrap, topic_name)
        wait_committed(kube, namespace, "frozen", latest, timeout=180)
    finally:
        leader.resume()
    wait_until("the woken operator to stop leading", lambda: "stopped leading" in leader.log(), 30)
    wait_until(
        "the woken operator to be a standby", lambda: f"standby ({leader.identity})" in leader.log(), 30
    )
    kafka.produce(topic_name, 200, partitions=2)
    latest = latest_offsets(kafka.bootstrap, topic_name)
    stream = wait_committed(kube, namespace, "frozen", latest, timeout=120)

    seen = rows(tmp_path)
    assert set(seen) == every_offset(latest) and max(seen.values()) == 1, "every record exactly once"
    assert group_offsets(kafka.bootstrap, "frozen", topic_name) == latest
    assert pending["batch"] in commits(standby, "frozen")
    assert commits(leader, "frozen") == [], "the deposed leader committed nothing"
    assert ran_jobs(leader)[-1] == pending["job"], "nor ran a Job after it woke"
    assert lease_holder(kube, namespace) == standby.identity
    assert [h["batch"] for h in stream["status"]["history"]] == list(
        range(1, len(stream["status"]["history"]) + 1)
    )


def healthz(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
        assert answer.status == 200
        body: dict[str, object] = json.loads(answer.read())["leadership"]
        return body


def test_healthz_and_the_metric_say_which_operator_leads(
    kube: Kube, crd: str, namespace: str, tmp_path: Path
):
    ports = [free_port() for _ in range(4)]
    operators = [
        OperatorProcess(
            kube,
            [namespace],
            tmp_path / f"operator-{tag}.log",
            ["--liveness-host=127.0.0.1", f"--liveness-port={ports[i]}"],
        )
        for i, tag in enumerate("ab")
    ]
    for i, process in enumerate(operators):
        process.metrics_port = ports[2 + i]
    leader, standby = operators
    leader.start()
    try:
        wait_until("the first to lead", lambda: lease_holder(kube, namespace) == leader.identity)
        standby.start()
        wait_until("the second to answer /healthz", lambda: _answers(ports[1]), 60)
        assert healthz(ports[0])["role"] == "leader"
        said = healthz(ports[1])
        assert said["role"] == "standby" and said["holder"] == leader.identity, said
        assert said["lease"] == f"{namespace}/directstream-operator"
        assert metric(ports[2], "directstream_operator_leader") == 1.0
        assert metric(ports[3], "directstream_operator_leader") == 0.0
        leader.stop()  # a clean stop hands the Lease back: the standby leads within a retry period or two
        started = time.monotonic()
        wait_until("the standby to lead", lambda: lease_holder(kube, namespace) == standby.identity, 30)
        print(f"after a clean stop the standby led within {time.monotonic() - started:.1f}s")
        wait_until("/healthz to say leader", lambda: healthz(ports[1])["role"] == "leader", 30)
        assert metric(ports[3], "directstream_operator_leader") == 1.0
    finally:
        leader.stop()
        standby.stop()


def _answers(port: int) -> bool:
    try:
        healthz(port)
    except OSError:
        return False
    return True


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} is not exported on port {port}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_two_installs_with_different_leases_fence_each_other_and_commit_every_batch_once(
    kube: Kube,
    kafka: KafkaBroker,
    crd: str,
    namespace: str,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
):
    """Both operators lead (each its own Lease): only the resourceVersion preconditions stand
    between them. The loser of each race is fenced and starts again from the stored state, so
    every batch is committed once: consecutive batch ids, recordsTotal equal to the records, the
    status equal to the Kafka group. (A range may still be processed twice here: each install
    drives as if alone until its conditional write is refused, so both may run an attempt; the
    jsonl sink replaces its range files, so the output is checked for completeness, not for single
    processing. Two installs over one namespace are a misconfiguration; one install is the contract.)"""
    operators = [
        OperatorProcess(
            kube, [namespace], tmp_path / f"install-{tag}.log", [f"--leader-elect-resource-name={tag}"]
        )
        for tag in ("one", "two")
    ]
    for process in operators:
        process.start()
    try:
        for process in operators:
            wait_until(f"{process.identity} to lead", lambda p=process: " leads: " in p.log(), 60)
        kafka.create_topic(topic_name, partitions=2)
        kafka.produce(topic_name, 400, partitions=2)
        # The files go to a PersistentVolumeClaim (a jsonl directory on no volume is InvalidSpec here).
        host_volumes.provide(namespace, "out", tmp_path / "volume")
        out = tmp_path / "volume" / "out"
        spec = {
            "topics": [topic_name],
            "batchInterval": "1s",
            "rate": {"maxPerPartition": 100},
            "executors": {
                "volumes": [{"name": "out", "persistentVolumeClaim": {"claimName": "out"}}],
                "volumeMounts": [{"name": "out", "mountPath": "/data"}],
            },
            "processor": {"sink": "jsonl", "options": {"directory": "/data/out"}},
        }
        kube.kubectl("apply", "-f", "-", input=stream_manifest("twice", namespace, kafka.bootstrap, spec))
        for _ in range(4):
            kafka.produce(topic_name, 50, partitions=2)
            time.sleep(1.0)
        latest = latest_offsets(kafka.bootstrap, topic_name)
        stream = wait_committed(kube, namespace, "twice", latest, timeout=240)
        assert {(p, o) for _, p, o in jsonl_offsets(out)} == every_offset(latest)
        assert group_offsets(kafka.bootstrap, "twice", topic_name) == latest
        status = stream["status"]
        assert status["recordsTotal"] == sum(latest.values()), "no batch was committed twice"
        batches = [h["batch"] for h in status["history"]]
        assert batches == list(range(1, len(batches) + 1))
        logs = "".join(p.log() for p in operators)
        assert "was changed by another writer" in logs, "the two raced and one was fenced"
        events = kube.kubectl("get", "events", "-n", namespace, "--field-selector", "reason=Fenced").stdout
        assert "another operator drives this stream" in events
    finally:
        kube.kubectl("delete", "directstreams", "--all", "-n", namespace, "--timeout=60s", check=False)
        for process in operators:
            process.stop()


def test_with_a_standby_a_deleted_stream_goes_and_its_group_with_it(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator_pair: tuple[OperatorProcess, OperatorProcess],
    topic_name: str,
):
    """spec.deleteConsumerGroup: the leader deletes the group; the standby's handler holds the
    finalizer meanwhile and lets go once the stream is gone (no hang, no early release)."""
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 50)
    spec = {
        "topics": [topic_name],
        "batchInterval": "500ms",
        "deleteConsumerGroup": True,
        "processor": {"sink": "count"},
    }
    kube.kubectl("apply", "-f", "-", input=stream_manifest("gone", namespace, kafka.bootstrap, spec))
    wait_committed(kube, namespace, "gone", {(topic_name, 0): 50})
    kube.kubectl("delete", "directstream", "gone", "-n", namespace, "--timeout=60s")
    assert group_offsets(kafka.bootstrap, "gone", topic_name) == {}
    leader, standby = operator_pair
    assert "deleted consumer group gone" in leader.log()
    assert "deleted consumer group gone" not in standby.log()
