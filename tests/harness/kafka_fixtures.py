"""pytest fixtures for the real Kafka broker started by ``hack/kafka.sh``.

``kafka`` reuses a running broker ($KAFKA_BOOTSTRAP or this checkout's .dev/kafka) and
otherwise starts one for the session and stops it afterwards. It never skips: a broker that
cannot start is a test error with the script's message.

``dedicated_broker`` starts a broker of a test's own (same script, its own state dir and port) for
loads the shared broker must not carry, such as 10,000 partitions; ``wait_partitions_ready`` waits
until a broker serves every partition it was asked to create.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "hack" / "kafka.sh"


def _answers(bootstrap: str) -> bool:
    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=3)
    except Exception:
        return False
    return bool(md.brokers)


def _script_env(env: dict[str, str] | None = None) -> str | None:
    out = subprocess.run(
        ["bash", str(KAFKA_SH), "env"], capture_output=True, text=True, check=False, env=env, timeout=60
    )
    match = re.search(r"KAFKA_BOOTSTRAP=(\S+)", out.stdout)
    return match.group(1) if match else None


@dataclass
class KafkaBroker:
    bootstrap: str
    _admin: AdminClient | None = None

    def admin(self) -> AdminClient:
        # One long-lived client: a temporary one would be destroyed before its futures resolve.
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return self._admin

    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        futures = self.admin().create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
        )
        for future in futures.values():
            future.result(timeout=30)
        return name

    def produce(
        self,
        topic: str,
        count: int,
        partitions: int = 1,
        value: Callable[[int], bytes] = lambda i: f"record-{i}".encode(),
        key: Callable[[int], bytes | None] = lambda i: f"key-{i}".encode(),
    ) -> None:
        """Produce ``count`` records round-robin over ``partitions`` and wait for all acks."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "acks": "all"})
        for i in range(count):
            while True:
                try:
                    producer.produce(topic, value=value(i), key=key(i), partition=i % partitions)
                    break
                except BufferError:  # the local queue is full: let deliveries drain, then retry
                    producer.poll(0.5)
            if i % 10_000 == 0:
                producer.poll(0)
        remaining = producer.flush(60)
        assert remaining == 0, f"{remaining} records were not delivered"


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP") or _script_env()
    if bootstrap and _answers(bootstrap):
        yield KafkaBroker(bootstrap)
        return
    started = subprocess.run(
        ["bash", str(KAFKA_SH), "up"], capture_output=True, text=True, check=False, timeout=300
    )
    if started.returncode != 0:
        pytest.fail(f"could not start Kafka with hack/kafka.sh up:\n{started.stderr}", pytrace=False)
    bootstrap = _script_env()
    assert bootstrap, "hack/kafka.sh up succeeded but printed no KAFKA_BOOTSTRAP"
    try:
        yield KafkaBroker(bootstrap)
    finally:
        subprocess.run(["bash", str(KAFKA_SH), "down"], capture_output=True, check=False, timeout=300)


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A unique topic name per test (not created: tests choose partitions and config)."""
    base = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:40].strip("-")
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic(kafka: KafkaBroker, topic_name: str) -> str:
    """A fresh 4-partition topic."""
    return kafka.create_topic(topic_name, partitions=4)


def fast_state_dir(fallback: Path, need_bytes: int = 2 << 30) -> Path:
    """A directory on tmpfs (/dev/shm) when it has room, else ``fallback``.

    A broker creates a new partition's log on one metadata thread, one partition at a time, and
    fsyncs a leader-epoch checkpoint (and more) for each: measured on the dev disk, ~4 fsyncs of
    ~2 ms each, so 10,000 partitions took 110 s to become servable; on tmpfs fsync costs nothing
    and the same 10,000 took 39 s."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        stats = os.statvfs(shm)
        if stats.f_bavail * stats.f_frsize >= need_bytes:
            return Path(shm / f"directstream-kafka-{uuid.uuid4().hex[:8]}")
    return fallback


@contextmanager
def dedicated_broker(state_dir: Path, heap: str = "1g") -> Iterator[KafkaBroker]:
    """A broker of its own, started by ``hack/kafka.sh up`` with ``state_dir`` as its dev dir (so its
    own port, data and pid file), stopped and its data deleted on exit."""
    env = {**os.environ, "DIRECTSTREAM_DEV_DIR": str(state_dir), "KAFKA_HEAP": heap}
    env.pop("KAFKA_PORT", None)
    try:
        up = subprocess.run(
            ["bash", str(KAFKA_SH), "up"], capture_output=True, text=True, check=False, env=env, timeout=300
        )
        if up.returncode != 0:
            pytest.fail(
                f"could not start a dedicated Kafka with hack/kafka.sh up:\n{up.stderr}", pytrace=False
            )
        bootstrap = _script_env(env)
        assert bootstrap, "hack/kafka.sh up succeeded but printed no KAFKA_BOOTSTRAP"
        broker = KafkaBroker(bootstrap)
        try:
            yield broker
        finally:
            broker._admin = None  # its client would keep reconnecting to the stopped broker
    finally:
        subprocess.run(
            ["bash", str(KAFKA_SH), "down"], capture_output=True, check=False, env=env, timeout=300
        )
        shutil.rmtree(state_dir, ignore_errors=True)


def wait_partitions_ready(
    bootstrap: str, partitions: dict[str, int], timeout: float
) -> dict[tuple[str, int], int]:
    """The latest offset of every partition of ``partitions`` (topic -> count), once the broker
    serves them all: each has a leader in metadata and answers ListOffsets. The controller
    acknowledges CreateTopics before the broker has created the logs; until then ListOffsets
    answers NOT_LEADER_FOR_PARTITION. Fails with how many are still not served."""
    deadline = time.monotonic() + timeout
    admin = AdminClient({"bootstrap.servers": bootstrap})
    unserved: object = "no answer yet"
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=30).topics
        missing = [t for t in partitions if t not in metadata or len(metadata[t].partitions) != partitions[t]]
        leaderless = sum(
            1 for t in partitions if t in metadata for p in metadata[t].partitions.values() if p.leader < 0
        )
        if missing or leaderless:
            unserved = f"topics not in metadata: {missing}, partitions without a leader: {leaderless}"
            time.sleep(2)
            continue
        request = {TopicPartition(t, p): OffsetSpec.latest() for t, n in partitions.items() for p in range(n)}
        latest: dict[tuple[str, int], int] = {}
        failed: list[str] = []
        for tp, future in admin.list_offsets(request, request_timeout=60).items():
            try:
                latest[(tp.topic, tp.partition)] = future.result(120).offset
            except KafkaException as exc:
                failed.append(f"{tp.topic}[{tp.partition}]: {exc.args[0].str()}")
        if not failed:
            return latest
        unserved = f"{len(failed)} partitions do not answer ListOffsets yet, e.g. {failed[0]}"
        time.sleep(2)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for the broker to serve every partition: {unserved}"
    )
