"""Topics that go away or come back under a running stream, against the real broker: a deleted
pattern topic, a topic deleted and recreated, retention inside a recorded plan (local mode),
offsets in PostgreSQL, and the operator on the cluster."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import KafkaException, TopicPartition

from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import (
    CLI,
    cli,
    group_offsets,
    jsonl_offsets,
    latest_offsets,
    pending_until,
    state_committed,
    state_file,
    write_stream,
)
from tests.harness.operator_fixtures import (
    OperatorProcess,
    condition,
    get_stream,
    stream_manifest,
    wait_committed,
)

pytestmark = pytest.mark.kafka


def delete_topic(kafka: KafkaBroker, topic: str) -> None:
    """Delete ``topic`` and wait until the broker's metadata no longer lists it."""
    for future in kafka.admin().delete_topics([topic], operation_timeout=30).values():
        future.result(30)
    deadline = time.time() + 30
    while topic in kafka.admin().list_topics(timeout=10).topics:
        assert time.time() < deadline, f"topic {topic} still listed 30 s after its deletion"
        time.sleep(0.2)


def recreate_topic(kafka: KafkaBroker, topic: str, partitions: int) -> None:
    """Delete ``topic`` and create it again under the same name (a new topic id)."""
    delete_topic(kafka, topic)
    deadline = time.time() + 30
    while True:
        try:
            kafka.create_topic(topic, partitions=partitions)
            return
        except KafkaException:  # the deletion may still be finishing
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def run_until_caught_up(
    manifest: Path, state: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``directstream run --until-caught-up`` with ``env`` added to the environment."""
    return subprocess.run(
        [*CLI, "run", str(manifest), "--until-caught-up", "--state-dir", str(state)],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_a_deleted_pattern_topic_is_dropped_from_the_state_and_never_committed(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
):
    kept = kafka.create_topic(f"{topic_name}-kept", partitions=2)
    gone = kafka.create_topic(f"{topic_name}-gone", partitions=1)
    kafka.produce(kept, 200, partitions=2)
    kafka.produce(gone, 100)
    out, state = tmp_path / "out", tmp_path / "state"
    manifest = write_stream(
        tmp_path / "s.yaml",
        "pattern-gone",
        kafka.bootstrap,
        {
            "topicPattern": f"^{topic_name}-.*$",
            "batchInterval": "200ms",
            "processor": {"sink": "jsonl", "options": {"directory": str(out)}},
        },
    )
    first = run_until_caught_up(manifest, state, tmp_path)
    assert first.returncode == 0, first.stderr
    assert state_committed(state) == {(kept, 0): 100, (kept, 1): 100, (gone, 0): 100}
    assert set(state_file(state)["topics"]) == {kept, gone}, "one topic id recorded per topic"

    delete_topic(kafka, gone)
    kafka.produce(kept, 100, partitions=2)
    second = run_until_caught_up(manifest, state, tmp_path)
    # Before: exit 1, "committing offsets ... Unknown topic or partition" (the stored offsets of
    # the deleted topic were compared with the group's and committed again).
    assert second.returncode == 0, second.stderr
    assert "Unknown topic or partition" not in second.stderr
    assert f"no longer reads topic {gone}" in second.stderr
    assert state_committed(state) == {(kept, 0): 150, (kept, 1): 150}
    assert set(state_file(state)["topics"]) == {kept}
    assert group_offsets(kafka.bootstrap, "pattern-gone", kept) == {(kept, 0): 150, (kept, 1): 150}
    seen = jsonl_offsets(out)
    assert max(seen.values()) == 1
    assert {(t, p, o) for t, p, o in seen if t == kept} == {(kept, p, o) for p in (0, 1) for o in range(150)}


def test_a_recreated_topic_is_data_loss_fail_names_it_and_earliest_reads_the_new_topic(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 2_000, partitions=2)
    state = tmp_path / "state"
    spec = {
        "topics": [topic_name],
        "batchInterval": "1s",
        "rate": {"maxPerPartition": 750},  # one batch reads 1,500 of the 2,000 records
        "processor": {"sink": "jsonl", "options": {"directory": str(tmp_path / "old")}},
    }
    manifest = write_stream(tmp_path / "s.yaml", "recreated", kafka.bootstrap, spec)
    cli("run", str(manifest), "--once", "--state-dir", str(state), cwd=tmp_path, check=True)
    assert state_committed(state) == {(topic_name, 0): 750, (topic_name, 1): 750}
    old_id = state_file(state)["topics"][topic_name]["id"]

    recreate_topic(kafka, topic_name, partitions=2)
    kafka.produce(topic_name, 6_000, partitions=2)
    new_out = tmp_path / "new"
    new_spec = {**spec, "rate": {}, "processor": {"sink": "jsonl", "options": {"directory": str(new_out)}}}

    failing = write_stream(
        tmp_path / "f.yaml", "recreated", kafka.bootstrap, {**new_spec, "onDataLoss": "fail"}
    )
    refused = run_until_caught_up(failing, state, tmp_path)
    # Before: exit 0, and offsets 0..750 of each new partition (1,500 records) never reached the sink.
    assert refused.returncode == 1, refused.stderr
    assert f"topic {topic_name} was deleted and recreated" in refused.stderr
    assert state_committed(state) == {(topic_name, 0): 750, (topic_name, 1): 750}, "nothing moved"
    assert state_file(state)["topics"][topic_name]["id"] == old_id
    assert not (tmp_path / "new").exists(), "no executor ran"

    skipping = write_stream(
        tmp_path / "e.yaml", "recreated", kafka.bootstrap, {**new_spec, "onDataLoss": "earliest"}
    )
    done = run_until_caught_up(skipping, state, tmp_path)
    assert done.returncode == 0, done.stderr
    latest = latest_offsets(kafka.bootstrap, topic_name)
    assert latest == {(topic_name, 0): 3_000, (topic_name, 1): 3_000}
    seen = jsonl_offsets(tmp_path / "new")
    assert set(seen) == {(topic_name, p, o) for p in (0, 1) for o in range(3_000)}, "every new record"
    assert max(seen.values()) == 1
    assert state_committed(state) == latest
    assert group_offsets(kafka.bootstrap, "recreated", topic_name) == latest
    doc = state_file(state)
    assert doc["topics"][topic_name]["id"] != old_id
    assert f"topic {topic_name} was deleted and recreated" in done.stderr
    assert "500 records of the old topic were never read" in done.stderr
    assert any("500 records of the old topic" in entry.get("note", "") for entry in doc["history"])


SWITCH_SINK = """
import os

class Switch:
    '''Fails while the file named by options['fail_while'] exists; appends "topic partition
    offset" lines to options['out'] otherwise.'''

    def __init__(self, options, unit):
        self.out, self.fail_while = options['out'], options['fail_while']

    def process(self, records, rng):
        if os.path.exists(self.fail_while):
            raise RuntimeError('switched off')
        with open(self.out, 'a') as f:
            f.writelines(f'{r.topic()} {r.partition()} {r.offset()}\\n' for r in records)
"""


def test_retention_inside_a_recorded_plan_goes_through_on_data_loss(
    kafka: KafkaBroker, topic_name: str, tmp_path: Path
):
    kafka.create_topic(topic_name, partitions=1)
    kafka.produce(topic_name, 1_000)
    (tmp_path / "switch.py").write_text(SWITCH_SINK)
    switch, rows, state = tmp_path / "off", tmp_path / "rows", tmp_path / "state"
    switch.touch()
    spec = {
        "topics": [topic_name],
        "batchInterval": "200ms",
        "maxAttempts": 1,
        "processor": {
            "sink": "python",
            "options": {"entryPoint": "switch:Switch", "out": str(rows), "fail_while": str(switch)},
        },
    }
    env = {"PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    failing = write_stream(tmp_path / "f.yaml", "retained", kafka.bootstrap, {**spec, "onDataLoss": "fail"})
    gave_up = run_until_caught_up(failing, state, tmp_path, env)
    assert gave_up.returncode == 1 and "switched off" in gave_up.stderr
    recorded, recorded_batch = pending_until(state), state_file(state)["pending"]["batch"]
    assert recorded == {(topic_name, 0): 1_000}

    # Retention deletes the start of the recorded range before it was ever read.
    for future in kafka.admin().delete_records([TopicPartition(topic_name, 0, 400)]).values():
        future.result(30)
    switch.unlink()
    refused = run_until_caught_up(failing, state, tmp_path, env)
    # Before: every attempt failed "offset 0 is no longer (or not yet) in the log", forever.
    assert refused.returncode == 1
    assert (
        f"recorded range {topic_name}[0] 0..1000: offsets 0..400 (400 records) were deleted" in refused.stderr
    )
    assert "onDataLoss: fail" in refused.stderr
    assert not rows.exists(), "no executor ran"
    assert pending_until(state) == recorded, "the plan stays recorded"

    skipping = write_stream(
        tmp_path / "e.yaml", "retained", kafka.bootstrap, {**spec, "onDataLoss": "earliest"}
    )
    done = run_until_caught_up(skipping, state, tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert "skipping to offset 400" in done.stderr
    doc = state_file(state)
    assert doc["history"][-1]["batch"] == recorded_batch, "the recorded batch committed"
    assert "skipped 400 lost records" in doc["history"][-1]["note"]
    assert state_committed(state) == {(topic_name, 0): 1_000}
    lines = Counter(rows.read_text().splitlines())
    assert set(lines) == {f"{topic_name} 0 {o}" for o in range(400, 1_000)}
    assert max(lines.values()) == 1


ROW_MAKER = """
def row(record):
    return {'topic': record.topic(), 'partition': record.partition(), 'offset': record.offset(),
            'value': record.value().decode()}
"""


@pytest.mark.postgres
def test_offsets_in_postgres_follow_deleted_and_recreated_topics(
    kafka: KafkaBroker, postgres: str, pg_schema: str, topic_name: str, tmp_path: Path
):
    kept, gone = f"{topic_name}-kept", f"{topic_name}-gone"
    kafka.create_topic(kept, partitions=2)
    kafka.create_topic(gone, partitions=1)
    kafka.produce(kept, 200, partitions=2, value=lambda i: f"old-{i}".encode())
    kafka.produce(gone, 100)
    (tmp_path / "rowmaker.py").write_text(ROW_MAKER)
    with psycopg.connect(postgres) as conn:  # no key: the new topic's offsets repeat the old one's
        conn.execute(
            f'CREATE TABLE {pg_schema}.rows (topic text, partition int, "offset" bigint, value text)'
        )
    spec = {
        "topicPattern": f"^{topic_name}-.*$",
        "batchInterval": "200ms",
        "onDataLoss": "earliest",
        "offsets": {"store": "postgres"},
        "processor": {
            "sink": "postgres",
            "options": {
                "table": f"{pg_schema}.rows",
                "offsetsTable": f"{pg_schema}.offsets",
                "transform": "rowmaker:row",
            },
        },
    }
    manifest = write_stream(tmp_path / "s.yaml", "pg-topics", kafka.bootstrap, spec)
    env = {"DIRECTSTREAM_POSTGRES_DSN": postgres, "PYTHONPATH": str(tmp_path)}
    state = tmp_path / "state"
    first = run_until_caught_up(manifest, state, tmp_path, env)
    assert first.returncode == 0, first.stderr

    delete_topic(kafka, gone)
    recreate_topic(kafka, kept, partitions=2)
    kafka.produce(kept, 300, partitions=2, value=lambda i: f"new-{i}".encode())
    second = run_until_caught_up(manifest, state, tmp_path, env)
    assert second.returncode == 0, second.stderr
    assert f"no longer reads topic {gone}" in second.stderr
    assert f"topic {kept} was deleted and recreated" in second.stderr
    latest = {(kept, 0): 150, (kept, 1): 150}
    with psycopg.connect(postgres) as conn:
        stored = conn.execute(f"SELECT topic, partition, next_offset FROM {pg_schema}.offsets").fetchall()
        rows = conn.execute(
            f"SELECT topic, partition, \"offset\" FROM {pg_schema}.rows WHERE value LIKE 'new-%'"
        ).fetchall()
    assert {(t, p): o for t, p, o in stored} == latest, (
        "the chains moved to the new topic; the gone one's left"
    )
    assert Counter(rows) == Counter((kept, p, o) for p in (0, 1) for o in range(150)), "every new record once"
    assert state_committed(state) == latest
    assert group_offsets(kafka.bootstrap, "pg-topics", kept) == latest


@pytest.mark.k8s
def test_the_operator_drops_a_deleted_topic_and_reads_a_recreated_one_from_its_start(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
):
    kept, gone = f"{topic_name}-kept", f"{topic_name}-gone"
    kafka.create_topic(kept, partitions=2)
    kafka.create_topic(gone, partitions=1)
    kafka.produce(kept, 200, partitions=2, value=lambda i: f"old-{i}".encode())
    kafka.produce(gone, 50)
    # The files go to a PersistentVolumeClaim (a jsonl directory on no volume is InvalidSpec on a cluster).
    host_volumes.provide(namespace, "out", tmp_path / "volume")
    out = tmp_path / "volume" / "out"
    manifest = stream_manifest(
        "lifecycle",
        namespace,
        kafka.bootstrap,
        {
            "topicPattern": f"^{topic_name}-.*$",
            "batchInterval": "1s",
            "onDataLoss": "earliest",
            "executors": {
                "volumes": [{"name": "out", "persistentVolumeClaim": {"claimName": "out"}}],
                "volumeMounts": [{"name": "out", "mountPath": "/data"}],
            },
            "processor": {"sink": "jsonl", "options": {"directory": "/data/out"}},
        },
    )
    kube.kubectl("apply", "-f", "-", input=manifest)
    wait_committed(kube, namespace, "lifecycle", {(kept, 0): 100, (kept, 1): 100, (gone, 0): 50})
    old_id = get_stream(kube, namespace, "lifecycle")["status"]["topics"][kept]["id"]

    delete_topic(kafka, gone)
    recreate_topic(kafka, kept, partitions=2)
    kafka.produce(kept, 300, partitions=2, value=lambda i: f"new-{i}".encode())
    latest = {(kept, 0): 150, (kept, 1): 150}
    wait_committed(kube, namespace, "lifecycle", latest, timeout=180)
    # The batch's offsets are written before the condition that reports its commit (a Kafka
    # error while the topic was recreated set Ready False until then): wait for that write too.
    kube.kubectl("wait", "--for=condition=Ready", "directstream/lifecycle", "-n", namespace, "--timeout=60s")
    stream = get_stream(kube, namespace, "lifecycle")
    status = stream["status"]
    assert set(status["topics"]) == {kept} and status["topics"][kept]["id"] != old_id
    assert condition(stream, "Ready")["status"] == "True"
    assert any("recreated" in entry.get("note", "") for entry in status["history"]), status["history"]
    events = kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "TopicsDropped" in events and f"no longer reads topic {gone}" in events
    assert "DataLoss" in events and f"topic {kept} was deleted and recreated" in events
    new = Counter(
        (doc["topic"], doc["partition"], doc["offset"])
        for path in out.glob(f"{kept}/*/*.jsonl")
        for doc in map(json.loads, path.read_text().splitlines())
        if doc["value"].startswith("new-")
    )
    assert new == Counter((kept, p, o) for p in (0, 1) for o in range(150)), sorted(
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
    )
    assert group_offsets(kafka.bootstrap, "lifecycle", kept) == latest
