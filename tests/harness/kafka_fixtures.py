"""pytest fixtures for the real Kafka broker started by ``hack/kafka.sh``.

``kafka`` reuses a running broker ($KAFKA_BOOTSTRAP or this checkout's .dev/kafka) and
otherwise starts one for the session and stops it afterwards. It never skips: a broker that
cannot start is a test error with the script's message.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "hack" / "kafka.sh"


def _answers(bootstrap: str) -> bool:
    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=3)
    except Exception:
        return False
    return bool(md.brokers)


def _script_env() -> str | None:
    out = subprocess.run(
        ["bash", str(KAFKA_SH), "env"], capture_output=True, text=True, check=False, timeout=60
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
