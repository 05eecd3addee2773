"""The DirectStream CRD on a real API server: it installs, explains itself, fills the parser's defaults,
rejects bad objects with the schema's and the CEL rules' messages, keeps every status field, and prints
its columns."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from directstream.executor.contract import OffsetRange
from directstream.operator.core.planning import BatchPlan
from directstream.operator.core.spec import parse_stream
from directstream.operator.core.state import StreamState
from directstream.operator.core.status import state_from_status
from tests.crd_support import CRD_PATH, MINIMAL, apply_defaults, full_status, root_schema
from tests.harness.kube_fixtures import Kube, wait_crd_established

pytestmark = pytest.mark.k8s
GROUP, VERSION, PLURAL = "directstream.io", "v1alpha1", "directstreams"


@pytest.fixture(scope="module")
def crd(kube: Kube) -> str:
    """The CRD applied and Established; server-side apply, so an installed copy is simply updated."""
    kube.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=directstream-tests",
        "-f",
        str(CRD_PATH),
    )
    wait_crd_established(kube, "directstreams.directstream.io")
    return "directstreams.directstream.io"


@pytest.fixture
def objects(kube: Kube, crd: str) -> Iterator[client.CustomObjectsApi]:
    api = kube.api_client()
    yield client.CustomObjectsApi(api)
    api.close()


def manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(MINIMAL)
    doc["metadata"] = {"name": name, "namespace": namespace}
    for key, value in spec.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return doc


def create(kube: Kube, doc: dict[str, Any], *extra: str) -> Any:
    return kube.kubectl("create", "-f", "-", *extra, input=json.dumps(doc), check=False)


def test_explain_shows_the_descriptions(kube: Kube, crd: str) -> None:
    def explained() -> str:
        proc = kube.kubectl("explain", "directstream.spec.rate", check=False)
        return proc.stdout if proc.returncode == 0 else ""

    text = kube.wait_for("kubectl explain directstream.spec.rate", explained, timeout=60, every=1)
    assert "Rate limits applied when a batch is planned" in text
    for field in ("maxPerPartition", "firstBatchMaxRecords", "backpressure"):
        assert field in text
    assert "Records per second per partition at most" in text
    reset = kube.kubectl("explain", "dstream.spec.reset.to").stdout
    assert "earliest, latest, timestamp" in reset


def test_minimal_stream_gets_the_parser_defaults(
    kube: Kube, namespace: str, objects: client.CustomObjectsApi
) -> None:
    doc = manifest("clicks", namespace)
    create(kube, doc).check_returncode()
    stored = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "clicks")
    # The API server filled exactly the defaults the unit tests apply, and they mean the parser's defaults.
    assert stored["spec"] == apply_defaults(copy.deepcopy(MINIMAL), root_schema())["spec"]
    assert stored["spec"]["executors"]["timeout"] == "10m"
    assert parse_stream(stored) == parse_stream(doc)


def with_changes(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = copy.deepcopy(MINIMAL)
    change(doc["spec"])
    return doc


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target = spec
        for parent in parents:
            target = target.setdefault(parent, {})
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value

    return change


INVALID = [
    (
        "both topics and pattern",
        _set("topicPattern", "clicks-.*"),
        "set exactly one of spec.topics (a list of topics) or spec.topicPattern",
    ),
    (
        "neither topics nor pattern",
        _set("topics", None),
        "set exactly one of spec.topics (a list of topics) or spec.topicPattern",
    ),
    ("executors.max 0", _set("executors/max", 0), "spec.executors.max"),
    (
        "offsets in postgres without the postgres sink",
        _set("offsets", {"store": "postgres"}),
        "postgres keeps offsets in the postgres sink's table: needs processor.sink: postgres",
    ),
    ("executors.max 1001", _set("executors/max", 1001), "less than or equal to 1000"),
    ("maxAttempts 0", _set("maxAttempts", 0), "spec.maxAttempts"),
    ("bad enum", _set("onDataLoss", "skip"), 'supported values: "fail", "earliest"'),
    ("bad sink", _set("processor/sink", "s3"), 'Unsupported value: "s3"'),
    (
        "bad decode",
        _set("processor/decode", {"value": "avro"}),
        'supported values: "bytes", "string", "json"',
    ),
    (
        "deadLetter without a topic",
        _set("processor/onError", "deadLetter"),
        "onError deadLetter needs spec.processor.deadLetter.topic",
    ),
    (
        "deadLetter under skip",
        _set("processor/deadLetter", {"topic": "dlq"}),
        "spec.processor.deadLetter is only used with onError deadLetter",
    ),
    ("forbidden config key", _set("kafka/config", {"group.id": "x"}), "set spec.groupId instead"),
    (
        "forbidden auto commit",
        _set("kafka/config", {"enable.auto.commit": False}),
        "the driver commits offsets itself",
    ),
    (
        "reset to timestamp without timestamp",
        _set("reset", {"id": "r1", "to": "timestamp"}),
        "spec.reset.timestamp is required when spec.reset.to is timestamp",
    ),
    (
        "reset to latest with offsets",
        _set("reset", {"id": "r1", "to": "latest", "offsets": {"clicks": {"0": 1}}}),
        "spec.reset.offsets is required when spec.reset.to is offsets, and only then",
    ),
    ("reset without id", _set("reset", {"to": "latest"}), "spec.reset.id: Required value"),
    ("zero duration", _set("batchInterval", "0s"), "spec.batchInterval"),
    ("fractional seconds", _set("batchInterval", 0.5), "must be of type integer,string"),
    ("bad starting offsets", _set("startingOffsets", "smallest"), 'supported values: "earliest", "latest"'),
    (
        "negative offset",
        _set("startingOffsets", {"offsets": {"clicks": {"0": -1}}}),
        "greater than or equal to 0",
    ),
    ("jsonl without directory", _set("processor", {"sink": "jsonl"}), "options.directory"),
    (
        "parquet without url",
        _set("processor", {"sink": "parquet"}),
        "the parquet sink needs spec.processor.options.url",
    ),
    (
        "parquet with a bad bucket",
        _set("processor", {"sink": "parquet", "options": {"url": "s3://Lake_Bucket/raw"}}),
        "spec.processor.options.url",
    ),
    (
        "parquet with an unknown codec",
        _set("processor", {"sink": "parquet", "options": {"url": "s3://lake/raw", "compression": "xz"}}),
        'supported values: "zstd", "snappy"',
    ),
    ("bad topic", _set("topics", [".."]), "spec.topics[0]"),
    ("no port", _set("kafka/bootstrapServers", "k1"), "spec.kafka.bootstrapServers"),
]


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_streams_are_rejected(
    kube: Kube, namespace: str, crd: str, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    doc = with_changes(change)
    doc["metadata"]["namespace"] = namespace
    proc = create(kube, doc)
    assert proc.returncode != 0, proc.stdout
    assert message in " ".join(proc.stderr.split()), proc.stderr
    assert "DirectStream" in proc.stderr


def test_unknown_fields_are_rejected_with_strict_validation(kube: Kube, namespace: str, crd: str) -> None:
    doc = manifest("typo", namespace)
    doc["spec"]["batchIntervall"] = "5s"
    doc["spec"]["rate"] = {"maxPerPartion": 5}
    proc = create(kube, doc, "--validate=strict")
    assert proc.returncode != 0
    assert 'unknown field "spec.batchIntervall"' in proc.stderr
    assert 'unknown field "spec.rate.maxPerPartion"' in proc.stderr


def replace_spec(objects: client.CustomObjectsApi, namespace: str, name: str, **changes: Any) -> str:
    """Update the stream's spec (``None`` deletes a field); the API server's error message, or ""."""
    current = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    for key, value in changes.items():
        if value is None:
            current["spec"].pop(key, None)
        else:
            current["spec"][key] = value
    try:
        objects.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, current)
    except ApiException as exc:
        assert exc.status == 422, exc
        return str(json.loads(exc.body)["message"])
    return ""


def test_group_id_is_immutable(kube: Kube, namespace: str, objects: client.CustomObjectsApi) -> None:
    create(kube, manifest("orders", namespace, groupId="orders-v1")).check_returncode()
    assert "spec.groupId is immutable" in replace_spec(objects, namespace, "orders", groupId="orders-v2")
    assert "spec.groupId is immutable" in replace_spec(objects, namespace, "orders", groupId=None)
    assert replace_spec(objects, namespace, "orders", maxAttempts=5) == ""  # other fields may change

    # Without a groupId the group is metadata.name: spelling that out changes nothing; anything else does.
    create(kube, manifest("views", namespace)).check_returncode()
    assert "spec.groupId is immutable" in replace_spec(objects, namespace, "views", groupId="views-2")
    assert replace_spec(objects, namespace, "views", groupId="views") == ""
    assert replace_spec(objects, namespace, "views", groupId=None) == ""


def test_full_manifest_is_accepted(kube: Kube, namespace: str, objects: client.CustomObjectsApi) -> None:
    spec = {
        "kafka": {
            "bootstrapServers": "k1:9092, k2:9093",
            "isolationLevel": "read_uncommitted",
            "config": {
                "security.protocol": "SASL_SSL",
                "fetch.max.bytes": 1048576,
                "enable.partition.eof": False,
            },
            "configFrom": {"secretRef": {"name": "kafka-client"}},
        },
        "topics": ["clicks", "views.v2"],
        "groupId": "clicks-group",
        "startingOffsets": {"timestamp": "2026-11-01T00:00:00Z"},
        "batchInterval": 90,
        "rate": {
            "maxPerPartition": 250.5,
            "firstBatchMaxRecords": 1000,
            "backpressure": {"enabled": True, "minPerPartition": 10},
        },
        "executors": {
            "mode": "job",
            "max": 8,
            "min": 2,
            "maxRecords": 50000,
            "image": "registry.local/directstream:1.0",
            "timeout": "1h",
            "pendingTimeout": "30s",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "250m"}},
            "env": [
                {"name": "A", "value": "b"},
                {"name": "P", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            ],
            "serviceAccountName": "runner",
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
        },
        "processor": {
            "sink": "python",
            "options": {"entryPoint": "shop.handlers:on_batch", "table": "clicks"},
            "decode": {"key": "string", "value": "json"},
            "onError": "deadLetter",
            "deadLetter": {
                "topic": "clicks-dlq",
                "bootstrapServers": "k3:9092",
                "config": {"compression.type": "zstd"},
                "transactionalIdPrefix": "clicks-dlq",
            },
        },
        "onDataLoss": "earliest",
        "maxAttempts": 5,
        "suspend": True,
        "stopAt": "latest",
        "reset": {"id": "replay-1", "to": "offsets", "offsets": {"views.v2": {"3": 0}}},
        "deleteConsumerGroup": True,
        "offsets": {"store": "kafka"},
    }
    doc = {**MINIMAL, "metadata": {"name": "full", "namespace": namespace}, "spec": spec}
    create(kube, doc, "--validate=strict").check_returncode()
    stored = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "full")
    assert stored["spec"] == spec  # nothing pruned, nothing defaulted over
    assert parse_stream(stored) == parse_stream(doc)


def test_status_round_trips_unchanged_and_shows_in_columns(
    kube: Kube, namespace: str, objects: client.CustomObjectsApi
) -> None:
    create(kube, manifest("clicks", namespace, groupId="clicks-group")).check_returncode()
    current = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "clicks")
    status = full_status()
    objects.replace_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "clicks", {**current, "status": status}
    )
    stored = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "clicks")
    assert stored["status"] == status  # every field declared: nothing pruned
    assert json.dumps(stored["status"], sort_keys=True) == json.dumps(status, sort_keys=True)

    table = columns(kube.kubectl("get", "directstreams", "-n", namespace).stdout)
    assert list(table) == ["NAME", "READY", "BATCH", "LAG", "RECORDS", "AGE"]
    assert [table[c] for c in ("NAME", "READY", "BATCH", "LAG", "RECORDS")] == [
        "clicks",
        "True",
        "7",
        "123",
        "4711",
    ]
    assert status["batch"] == 7 and status["lag"]["total"] == 123 and status["recordsTotal"] == 4711
    wide = columns(kube.kubectl("get", "dstream", "-n", namespace, "-o", "wide").stdout)
    assert list(wide) == [*table, "TOPICS", "PATTERN", "GROUP", "REASON"]
    assert {k: wide[k] for k in ("TOPICS", "PATTERN", "GROUP", "REASON")} == {
        "TOPICS": '["clicks"]',
        "PATTERN": "",
        "GROUP": "clicks-group",
        "REASON": "Committing",
    }
    for resource in ("dstream", "directstream", "directstreams.directstream.io"):
        names = kube.kubectl("get", resource, "-n", namespace, "-o", "name").stdout
        assert names.split() == ["directstream.directstream.io/clicks"]


def test_a_compact_status_at_thousands_of_partitions_and_a_version_1_status_round_trip(
    kube: Kube, namespace: str, objects: client.CustomObjectsApi
) -> None:
    """5k partitions with a plan recorded (tables), and a status as state version 1 wrote it
    (an upgrade reads it before rewriting it): the API server keeps both whole."""
    committed = {(f"orders-{t}", p): 9_876_543_210 + 31 * p for t in range(5) for p in range(1000)}
    ranges = tuple(OffsetRange(t, p, off, off + p % 13) for (t, p), off in sorted(committed.items()))
    big = StreamState(committed=committed).with_plan(BatchPlan(batch_id=4, ranges=ranges), now=1793491201.5)
    old = json.loads((Path(__file__).parents[1] / "unit" / "data" / "status_v1_full.json").read_text())
    create(kube, manifest("clicks", namespace)).check_returncode()
    for status in (big.to_json(), old):
        current = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "clicks")
        objects.replace_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "clicks", {**current, "status": status}
        )
        stored = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "clicks")
        assert stored["status"] == status  # nothing pruned
        assert state_from_status(stored["status"]) == state_from_status(status)
    assert state_from_status(old).committed, "the old status's offsets are read"


def test_status_is_only_written_through_the_subresource(
    kube: Kube, namespace: str, objects: client.CustomObjectsApi
) -> None:
    create(kube, manifest("clicks", namespace)).check_returncode()
    current = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "clicks")
    objects.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "clicks", {**current, "status": full_status()}
    )
    assert "status" not in objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "clicks")


def columns(table: str) -> dict[str, str]:
    """The first row of ``kubectl get`` output by column (empty cells are blank, so cut at the headers)."""
    header, row = table.splitlines()[:2]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return dict(zip(header.split(), cells, strict=True))
