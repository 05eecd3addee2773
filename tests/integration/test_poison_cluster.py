"""Poison records under the operator on the dev cluster: ``decode.value: json`` with garbage values,
``onError: deadLetter`` with the transactional kafka sink, executors SIGKILLed mid-batch; the output
and the dead-letter topic each hold their records once under read_committed, status counts the dead
letters and a DeadLettered event says which batches sent them."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.harness.executor_procs import ExecutorKiller
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import latest_offsets
from tests.harness.operator_fixtures import OperatorProcess, stream_manifest, wait_committed
from tests.integration.test_poison import COUNT, check_dead_letters, is_bad, produce_mixed, read_committed

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]


def test_dead_letters_under_the_operator_with_killed_executors(
    kube: Kube, kafka: KafkaBroker, namespace: str, operator: OperatorProcess, topic_name: str
) -> None:
    _, bad = produce_mixed(kafka, topic_name)
    output = kafka.create_topic(f"{topic_name}-out")
    dlq = kafka.create_topic(f"{topic_name}-dlq")
    spec = {
        "topics": [topic_name],
        "batchInterval": "1s",
        "maxAttempts": 20,
        "rate": {"maxPerPartition": 200},  # 200 per partition per batch: 3 batches to kill into
        "executors": {"max": 2},
        "processor": {
            "sink": "kafka",
            "options": {"topic": output, "transactional": True},
            "decode": {"value": "json"},
            "onError": "deadLetter",
            "deadLetter": {"topic": dlq},
        },
    }
    kube.kubectl("apply", "-f", "-", input=stream_manifest("poison", namespace, kafka.bootstrap, spec))
    with ExecutorKiller(topic_name, most=3, seed=11) as killer:
        stream = wait_committed(
            kube, namespace, "poison", latest_offsets(kafka.bootstrap, topic_name), timeout=240
        )
    assert killer.kills >= 1, "executors were killed mid-batch"

    outputs = Counter(m.key() for m in read_committed(kafka.bootstrap, output))
    assert set(outputs) == {f"k{i}".encode() for i in range(COUNT) if not is_bad(i)}
    assert max(outputs.values()) == 1
    check_dead_letters(kafka.bootstrap, dlq, "poison", bad, "value is not JSON")

    status = stream["status"]
    assert status["deadLetteredTotal"] == len(bad)
    assert sum(e.get("deadLettered", 0) for e in status["history"]) == len(bad)
    events = json.loads(kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    dead = [e for e in events if e.get("reason") == "DeadLettered"]
    assert dead and all(dlq in e["message"] and e["type"] == "Warning" for e in dead), dead
