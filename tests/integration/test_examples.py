"""The manifests in ``examples/`` against the real API server, and one of them run end to end.

Every example is parsed by the operator's parser and accepted by the API server (CRD schema and CEL
rules, Secrets too) with a server-side dry run. ``examples/jsonl.yaml`` then runs for real under
the operator, changed only where it must point at this test's broker, topic and directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import group_offsets, jsonl_offsets, latest_offsets
from tests.harness.operator_fixtures import OperatorProcess, wait_committed, wait_until
from tests.unit.test_examples import EXAMPLES_DIR, example_params, parse_example

pytestmark = [pytest.mark.k8s]


@pytest.mark.parametrize("path", example_params())
def test_the_api_server_accepts_the_example(kube: Kube, crd: str, namespace: str, path: Path) -> None:
    parse_example(path)
    # Server-side dry run: the real admission chain (schema, defaults, CEL rules), nothing stored.
    out = kube.kubectl("apply", "-n", namespace, "--server-side", "--dry-run=server", "-f", str(path)).stdout
    kinds = [doc["kind"] for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert out.count("serverside-applied") == len(kinds), out


@pytest.mark.kafka
def test_the_jsonl_example_runs_as_written(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
) -> None:
    claim, doc = yaml.safe_load_all((EXAMPLES_DIR / "jsonl.yaml").read_text())
    assert claim["kind"] == "PersistentVolumeClaim"
    spec = doc["spec"]
    # The only changes: this test's broker and a unique topic (a shared `clicks` would collect other
    # runs' records and group offsets). The storage behind the example's claim is what an admin
    # provides: a PersistentVolume, here on a directory of the test node.
    spec["kafka"]["bootstrapServers"] = kafka.bootstrap
    spec["topics"] = [topic_name]
    volume = tmp_path / "volume"
    size = claim["spec"]["resources"]["requests"]["storage"]
    host_volumes.provide(namespace, claim["metadata"]["name"], volume, create_claim=False, size=size)
    (mount,) = spec["executors"]["volumeMounts"]
    out = volume / Path(spec["processor"]["options"]["directory"]).relative_to(mount["mountPath"])
    kafka.create_topic(topic_name, partitions=3)
    kafka.produce(topic_name, 300, partitions=3)
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all([claim, doc]))

    latest = latest_offsets(kafka.bootstrap, topic_name)
    name = doc["metadata"]["name"]
    stream = wait_committed(kube, namespace, name, latest, timeout=120)
    assert stream["status"]["recordsTotal"] == 300
    seen = jsonl_offsets(out)  # on the claim's volume, after the Jobs are gone
    assert set(seen) == {(t, p, o) for (t, p), end in latest.items() for o in range(end)}
    assert max(seen.values()) == 1, "every record in exactly one file"
    # The Kafka group is committed just after status: ordinary lag tools see the stream's progress.
    wait_until("group offsets", lambda: group_offsets(kafka.bootstrap, name, topic_name) == latest)
