"""The CRD (crds/directstream.yaml) against the parser and the state: no drift, no pruned status field.

Pure: the schema is checked by a small validator for the subset of OpenAPI v3 the CRD uses. The API server's
own verdict (CEL rules, defaults, pruning) is in tests/integration/test_crd_cluster.py.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from directstream.executor.contract.kafka import SECRET_CONFIG, UNSAFE_CONFIG
from directstream.operator.core import spec as spec_module
from directstream.operator.core.durations import format_duration, parse_duration
from directstream.operator.core.spec import (
    FORBIDDEN_KAFKA_CONFIG,
    MAX_EXECUTORS,
    MAX_RATE_PER_PARTITION,
    MAX_RESET_ID_LENGTH,
    ON_DATA_LOSS,
    RESET_TO,
    SINKS,
    STARTING_OFFSETS,
    STOP_AT,
    SpecError,
    known_spec_fields,
    parse_stream,
)
from directstream.operator.core.spec_kafka import ISOLATION_LEVELS
from directstream.operator.core.state import LEDGER_LIMIT, StreamState
from tests.crd_support import (
    MINIMAL,
    apply_defaults,
    declared_properties,
    full_state,
    full_status,
    load_crd,
    node_at,
    property_paths,
    root_schema,
    schema_errors,
    version_of,
)

# Parser fields that are passed through as free-form values; the CRD may type their insides.
FREE_FORM = {
    "spec.kafka.config",
    "spec.executors.resources",
    "spec.executors.env",
    "spec.executors.tolerations",
    "spec.executors.securityContext",
    "spec.executors.containerSecurityContext",
    "spec.executors.affinity",
    "spec.processor.options",
    "spec.processor.deadLetter.config",
}

# --- names --------------------------------------------------------------------------------------------------


def test_names_scope_and_version() -> None:
    crd = load_crd()
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "directstreams.directstream.io"
    assert f"{spec['group']}/{version_of(crd)['name']}" == spec_module.API_VERSION
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        spec_module.KIND,
        "directstreams",
        "directstream",
    )
    assert names["shortNames"] == ["dstream"]
    assert "ds" not in names["shortNames"]  # kubectl's short name for DaemonSets
    assert names["categories"] == ["directstream"]
    version = version_of(crd)
    assert version["served"] is True and version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in version_of(load_crd())["additionalPrinterColumns"]}
    assert [name for name, c in columns.items() if not c.get("priority")] == [
        "Ready",
        "Batch",
        "Lag",
        "Records",
        "Age",
    ]
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Batch"]["jsonPath"] == ".status.batch"
    assert columns["Lag"]["jsonPath"] == ".status.lag.total"
    assert columns["Records"]["jsonPath"] == ".status.recordsTotal"
    wide = {name: c["jsonPath"] for name, c in columns.items() if c.get("priority") == 1}
    assert wide == {
        "Topics": ".spec.topics",
        "Pattern": ".spec.topicPattern",
        "Group": ".spec.groupId",
        "Reason": '.status.conditions[?(@.type=="Ready")].reason',
    }
    for column in columns.values():
        if column["jsonPath"].startswith((".spec", ".status")):
            field_path = re.sub(r"\[.*?\]", "", column["jsonPath"]).lstrip(".").split(".")[:2]
            node_at(".".join(field_path))  # the column shows a declared field


def test_every_field_has_a_description() -> None:
    missing = [
        path
        for top in ("spec", "status")
        for path, node in [(top, node_at(top)), *declared_properties(node_at(top), top)]
        if not node.get("description")
    ]
    assert missing == []


# --- spec: CRD and parser know the same fields --------------------------------------------------------------


def test_every_parser_field_is_declared() -> None:
    declared = set(property_paths(node_at("spec"), "spec"))
    assert set(known_spec_fields()) - declared == set()


def test_every_declared_field_is_read_by_the_parser() -> None:
    known = set(known_spec_fields())
    extra = set(property_paths(node_at("spec"), "spec")) - known
    outside_free_form = {p for p in extra if not any(p.startswith(f"{leaf}.") for leaf in FREE_FORM)}
    assert outside_free_form == set()
    assert known >= FREE_FORM


# A valid value for every string field with a pattern (each checked against the CRD below).
SAMPLES: dict[str, Any] = {
    "spec.kafka.bootstrapServers": "k1:9092, PLAINTEXT://k2:9093,[::1]:9094",
    "spec.kafka.configFrom.secretRef.name": "kafka-client.v1",
    "spec.kafka.config": {
        "security.protocol": "SASL_SSL",
        "fetch.max.bytes": 1048576,
        "enable.partition.eof": False,
    },
    "spec.topics": ["clicks", "views.v2", "..."],
    "spec.groupId": "clicks-group",
    "spec.startingOffsets": "latest",  # replaced per variant
    "spec.batchInterval": "1m30.5s",
    "spec.executors.timeout": 900,
    "spec.executors.pendingTimeout": "0.25",
    "spec.executors.resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": 1}},
    "spec.executors.securityContext": {"runAsNonRoot": True, "fsGroup": 2000},
    "spec.executors.containerSecurityContext": {"readOnlyRootFilesystem": False, "privileged": False},
    "spec.executors.volumes": [
        {"name": "out", "persistentVolumeClaim": {"claimName": "clicks-out"}},
        {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
    ],
    "spec.executors.volumeMounts": [
        {"name": "out", "mountPath": "/d"},
        {"name": "cache", "mountPath": "/cache", "readOnly": False},
    ],
    "spec.executors.podLabels": {"team": "ads", "example.com/tier": "batch"},
    "spec.executors.podAnnotations": {"sidecar.istio.io/inject": "false"},
    "spec.executors.priorityClassName": "batch-low",
    "spec.executors.affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "spec.processor.options": {
        "entryPoint": "shop.handlers:on_batch",
        "directory": "/d",
        "topic": "out",
        "x": 1,
    },
    "spec.reset.id": "replay-2026-11",
    "spec.reset.timestamp": "2026-11-01T00:00:00.250+01:00",
}


def sample(node: dict[str, Any], path: str) -> Any:
    """A valid, non-default value of every leaf below ``node``."""
    if path in SAMPLES:
        return copy.deepcopy(SAMPLES[path])
    if node.get("enum"):
        return node["enum"][-1]
    kind = node.get("type")
    if kind == "object" and "properties" in node:
        return {key: sample(child, f"{path}.{key}") for key, child in node["properties"].items()}
    if kind == "object":
        return (
            {"key": sample(node["additionalProperties"], f"{path}.key")}
            if "additionalProperties" in node
            else {}
        )
    if kind == "array":
        return [sample(node["items"], f"{path}[0]")]
    if kind == "integer":
        return min(node.get("maximum", 7), max(node.get("minimum", 0) + 2, 7))
    if kind == "number":
        return 12.5
    if kind == "boolean":
        return not node.get("default", False)
    if kind == "string":
        return "sample"
    if node.get("x-kubernetes-int-or-string"):
        return 1793491200000
    raise AssertionError(f"no sample for {path}: {node}")


def full_manifest(*, subscription: str, start: str, reset_to: str, sink: str) -> dict[str, Any]:
    spec = sample(node_at("spec"), "spec")
    del spec["topicPattern" if subscription == "topics" else "topics"]
    spec["startingOffsets"] = {
        "earliest": "earliest",
        "latest": "latest",
        "timestamp": {"timestamp": "2026-11-01T00:00:00Z"},
        "offsets": {"offsets": {"clicks": {"0": 42, "1": 7}}},
    }[start]
    spec["topicPattern"] = "clicks|views.*" if subscription == "pattern" else None
    spec["reset"]["to"] = reset_to
    spec["reset"]["offsets"] = {"clicks": {"3": 9}}
    for key in ("timestamp", "offsets"):
        if reset_to != key:
            del spec["reset"][key]
    spec["processor"]["sink"] = sink
    # offsets.store postgres needs the postgres sink (a cross-field rule on both sides)
    spec["offsets"] = {"store": "postgres" if sink == "postgres" else "kafka"}
    return {**MINIMAL, "spec": {k: v for k, v in spec.items() if v is not None}}


VARIANTS = [
    ("topics", "offsets", "timestamp", "python"),
    ("pattern", "timestamp", "offsets", "kafka"),
    ("topics", "latest", "earliest", "jsonl"),
    ("pattern", "earliest", "latest", "count"),
    ("topics", "earliest", "latest", "postgres"),
]


@pytest.mark.parametrize(("subscription", "start", "reset_to", "sink"), VARIANTS)
def test_every_declared_field_with_a_valid_value_parses(
    subscription: str, start: str, reset_to: str, sink: str
) -> None:
    doc = full_manifest(subscription=subscription, start=start, reset_to=reset_to, sink=sink)
    assert schema_errors(doc["spec"], node_at("spec"), "spec") == []
    s = parse_stream(doc)
    assert s.executors.timeout_seconds == 900.0 and s.executors.pending_timeout_seconds == 0.25
    assert s.batch_interval_seconds == 90.5
    assert s.delete_consumer_group is True and s.suspend is True
    assert s.reset is not None and (s.reset.id, s.reset.to) == ("replay-2026-11", reset_to)
    assert s.starting_offsets.kind == start


# --- defaults -----------------------------------------------------------------------------------------------

# Optional fields without a CRD default: the parser's default is "absent" or depends on other fields.
NO_DEFAULT = {
    "spec.processor.decode",  # unset: text when valid UTF-8, else base64
    "spec.processor.deadLetter",  # only with onError: deadLetter
    "spec.topics",
    "spec.topicPattern",
    "spec.groupId",  # metadata.name
    "spec.kafka.config",
    "spec.kafka.configFrom",
    "spec.executors.resources",
    "spec.executors.env",
    "spec.executors.nodeSelector",
    "spec.executors.tolerations",
    "spec.executors.securityContext",
    "spec.executors.containerSecurityContext",
    "spec.executors.volumes",
    "spec.executors.volumeMounts",
    "spec.executors.podLabels",
    "spec.executors.podAnnotations",
    "spec.executors.priorityClassName",
    "spec.executors.imagePullPolicy",
    "spec.executors.imagePullSecrets",
    "spec.executors.affinity",
    "spec.processor.options",
    "spec.reset",
}


def test_crd_defaults_mean_what_the_parser_defaults_to() -> None:
    defaulted = apply_defaults(copy.deepcopy(MINIMAL), root_schema())
    assert defaulted != MINIMAL
    assert schema_errors(defaulted["spec"], node_at("spec"), "spec") == []
    assert parse_stream(defaulted) == parse_stream(copy.deepcopy(MINIMAL))


def test_every_optional_parser_field_has_a_crd_default() -> None:
    required = {"spec.kafka", "spec.kafka.bootstrapServers"}
    missing = []
    for path in known_spec_fields():
        parent, _, _key = path.rpartition(".")
        if (
            parent in NO_DEFAULT
            or any(parent.startswith(f"{p}.") for p in NO_DEFAULT)
            or parent == "spec.startingOffsets"
        ):
            continue
        if path not in required | NO_DEFAULT and "default" not in node_at(path):
            missing.append(path)
    assert missing == []


def test_crd_default_values() -> None:
    """Spelled out, so that a change of a default is a visible decision."""
    spec = apply_defaults(copy.deepcopy(MINIMAL), root_schema())["spec"]
    s = parse_stream(copy.deepcopy(MINIMAL))
    assert parse_duration(spec["batchInterval"]) == s.batch_interval_seconds
    assert parse_duration(spec["executors"]["timeout"]) == s.executors.timeout_seconds == 600.0
    assert parse_duration(spec["executors"]["pendingTimeout"]) == s.executors.pending_timeout_seconds == 120.0
    assert spec["startingOffsets"] == s.starting_offsets.kind
    assert spec["deleteConsumerGroup"] is s.delete_consumer_group is False
    assert spec["rate"]["backpressure"]["minPerPartition"] == s.rate.backpressure.min_per_partition


# --- enums, ranges, patterns --------------------------------------------------------------------------------


def test_enums_and_ranges_equal_the_parser_constants() -> None:
    assert tuple(node_at("spec.kafka.isolationLevel")["enum"]) == ISOLATION_LEVELS
    assert tuple(node_at("spec.processor.sink")["enum"]) == SINKS
    assert tuple(node_at("spec.onDataLoss")["enum"]) == ON_DATA_LOSS
    assert tuple(node_at("spec.stopAt")["enum"]) == STOP_AT
    assert tuple(node_at("spec.reset.to")["enum"]) == RESET_TO
    assert tuple(node_at("spec.startingOffsets")["anyOf"][0]["enum"]) == STARTING_OFFSETS
    assert (node_at("spec.executors.max")["minimum"], node_at("spec.executors.max")["maximum"]) == (
        1,
        MAX_EXECUTORS,
    )
    assert node_at("spec.maxAttempts")["minimum"] == 1
    assert node_at("spec.reset.id")["maxLength"] == MAX_RESET_ID_LENGTH
    assert node_at("status.history")["maxItems"] == LEDGER_LIMIT


def test_forbidden_kafka_config_keys_point_to_the_same_fields() -> None:
    config = node_at("spec.kafka.config")
    refused = set(FORBIDDEN_KAFKA_CONFIG) | set(UNSAFE_CONFIG) | SECRET_CONFIG
    assert set(config["properties"]) == refused
    messages = [" ".join(rule["message"].split()) for rule in config["x-kubernetes-validations"]]
    for key, hint in FORBIDDEN_KAFKA_CONFIG.items():
        assert any(m.startswith(f"'{key}' is managed by directstream: {hint}") for m in messages), key


@pytest.mark.parametrize("key", sorted(set(FORBIDDEN_KAFKA_CONFIG) | set(UNSAFE_CONFIG) | SECRET_CONFIG))
def test_refused_kafka_keys_have_the_same_message_in_the_crd_and_the_parser(key: str) -> None:
    """The API server's rule for a refused key says what the parser says (local mode, the operator)."""
    config = node_at("spec.kafka.config")
    rules = {rule["rule"]: " ".join(rule["message"].split()) for rule in config["x-kubernetes-validations"]}
    cel_key = key.replace(".", "__dot__")
    message = rules[f"!has(self.{cel_key})"]
    doc = copy.deepcopy(MINIMAL)
    doc["spec"]["kafka"]["config"] = {key: "x"}
    with pytest.raises(SpecError) as caught:
        parse_stream(doc)
    assert [(p.path, p.message) for p in caught.value.problems] == [(f"spec.kafka.config.{key}", message)]


def test_rate_bounds_are_the_parser_bounds() -> None:
    for field in ("rate.maxPerPartition", "rate.backpressure.minPerPartition"):
        node = node_at(f"spec.{field}")
        assert node["maximum"] == MAX_RATE_PER_PARTITION
        assert parses(field, MAX_RATE_PER_PARTITION) and not parses(field, MAX_RATE_PER_PARTITION * 10)
        assert schema_errors(MAX_RATE_PER_PARTITION * 10, node) and not schema_errors(
            MAX_RATE_PER_PARTITION, node
        )
        assert not parses(field, 1e308) and schema_errors(1e308, node)


def matches(path: str, value: str) -> bool:
    """The CRD pattern as the API server applies it: Go's ``$`` matches only at the very end."""
    pattern = node_at(path)["pattern"]
    anchored = pattern.startswith("^") and pattern.endswith("$")
    return (re.fullmatch(pattern, value) if anchored else re.search(pattern, value)) is not None


def parses(field: str, value: object) -> bool:
    doc = copy.deepcopy(MINIMAL)
    target = doc["spec"]
    *parents, last = field.split(".")
    for parent in parents:
        target = target.setdefault(parent, {})
    target[last] = value
    try:
        parse_stream(doc)
    except SpecError:
        return False
    return True


NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
DURATION_LIKE = st.from_regex(rf"\A(?:(?:{NUMBER}(?:ms|h|m|s)){{1,3}}|{NUMBER})\Z") | st.text(
    "0123456789.hms ", max_size=8
)


@settings(max_examples=400, deadline=None)
@given(DURATION_LIKE)
def test_duration_pattern_equals_the_parser(text: str) -> None:
    for field in ("batchInterval", "executors.timeout", "executors.pendingTimeout"):
        assert matches(f"spec.{field}", text) == parses(field, text) or text != text.strip(), (field, text)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=86_400_000, max_value=253_402_000_000_000),
    st.integers(-2, 7),
    st.sampled_from(["Z", "+01:00", "-05:30", ""]),
)
def test_timestamp_pattern_equals_the_parser(millis: int, digits: int, zone: str) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{moment.microsecond:06d}"[: digits + 1] if digits > 0 else ""
    )
    text += zone
    for field in ("startingOffsets.timestamp", "reset.timestamp"):
        assert matches(f"spec.{field}", text) == bool(zone)
    assert parses("startingOffsets", {"timestamp": text}) == bool(zone)
    assert parses("reset", {"id": "r", "to": "timestamp", "timestamp": text}) == bool(zone)


@pytest.mark.parametrize(
    "text", ["2026-11-01t00:00:00z", "2026-11-01 00:00:00Z", "2026-11-01T00:00:00+0100", "20261101T000000Z"]
)
def test_timestamps_outside_rfc3339_are_refused_by_both(text: str) -> None:
    assert not matches("spec.reset.timestamp", text)
    assert not parses("startingOffsets", {"timestamp": text})


def crd_accepts(path: str, value: Any) -> bool:
    node = root_schema()
    for key in path.split("."):
        node = node["items"] if key == "[]" else node["properties"][key]
    return not schema_errors(value, node)


@pytest.mark.parametrize(
    ("path", "value", "field", "manifest_value"),
    [
        ("spec.topics.[]", ".", "topics", ["."]),
        ("spec.topics.[]", "..", "topics", [".."]),
        ("spec.topics.[]", "...", "topics", ["..."]),
        ("spec.topics.[]", ".a", "topics", [".a"]),
        ("spec.topics.[]", "a b", "topics", ["a b"]),
        ("spec.topics.[]", "x" * 250, "topics", ["x" * 250]),
        ("spec.topics.[]", "x" * 249, "topics", ["x" * 249]),
        ("spec.kafka.bootstrapServers", "k1", "kafka.bootstrapServers", "k1"),
        ("spec.kafka.bootstrapServers", "k1:9092,,k2:9092", "kafka.bootstrapServers", "k1:9092,,k2:9092"),
        (
            "spec.kafka.bootstrapServers",
            "SSL://k1:9092, [::1]:1",
            "kafka.bootstrapServers",
            "SSL://k1:9092, [::1]:1",
        ),
        (
            "spec.kafka.configFrom.secretRef.name",
            "Kafka",
            "kafka.configFrom",
            {"secretRef": {"name": "Kafka"}},
        ),
        ("spec.kafka.configFrom.secretRef.name", "k.v1", "kafka.configFrom", {"secretRef": {"name": "k.v1"}}),
        ("spec.groupId", "  ", "groupId", "  "),
        ("spec.groupId", " g ", "groupId", " g "),
        ("spec.reset.id", "", "reset", {"id": "", "to": "latest"}),
        ("spec.reset.id", "x" * 64, "reset", {"id": "x" * 64, "to": "latest"}),
        ("spec.reset.id", "x" * 63, "reset", {"id": "x" * 63, "to": "latest"}),
        (
            "spec.processor.options.entryPoint",
            "a.b",
            "processor",
            {"sink": "python", "options": {"entryPoint": "a.b"}},
        ),
        (
            "spec.processor.options.entryPoint",
            "a.b:c.d",
            "processor",
            {"sink": "python", "options": {"entryPoint": "a.b:c.d"}},
        ),
    ],
)
def test_patterns_agree_with_the_parser(path: str, value: Any, field: str, manifest_value: Any) -> None:
    assert crd_accepts(path, value) == parses(field, manifest_value)


def test_durations_are_int_or_string_and_floats_are_refused_by_both() -> None:
    for field in ("batchInterval", "executors.timeout", "executors.pendingTimeout"):
        node = node_at(f"spec.{field}")
        assert node["x-kubernetes-int-or-string"] is True and node["minimum"] == 1
        assert parses(field, 5) and parses(field, "5") and parses(field, "0.5")
        assert not parses(field, 0.5) and not parses(field, 0) and not parses(field, "0ms")
        assert schema_errors(0.5, node) and schema_errors(0, node) and schema_errors("0ms", node)
    assert format_duration(parse_duration(node_at("spec.executors.timeout")["default"])) == "10m"


def test_full_state_has_every_part() -> None:
    status = full_state().to_json()
    pending = status["pending"]
    assert {
        "dataLoss",
        "firstRead",
        "lastError",
        "starts",
        "counts",
        "pinned",
        "budgetFrom",
        "exhausted",
    } <= set(pending)
    pinned = full_state().pending
    assert pinned is not None and pinned.pinned is not None
    assert any(not isinstance(e, int) for unit in pinned.pinned.layout for e in unit), (
        "a split range is a piece"
    )
    assert pending["pinned"]["units"] == len(pinned.pinned.layout) and "layout" not in pending["pinned"]
    assert len(status["history"]) == LEDGER_LIMIT and status["rate"]["rate"] is not None


def test_status_schema_declares_everything_the_operator_writes() -> None:
    assert schema_errors(full_status(), node_at("status"), "status") == []
    assert (
        schema_errors(StreamState().to_json(), node_at("status"), "status") == []
    )  # pending: null, rate: null


def test_status_schema_is_closed() -> None:
    """No preserve-unknown-fields in status: an undeclared field is a bug the test above must catch."""
    status = full_status()
    status["pending"]["surprise"] = 1
    assert schema_errors(status, node_at("status"), "status") == [
        "status.pending.surprise: not declared (would be pruned)"
    ]
    assert "x-kubernetes-preserve-unknown-fields" not in yaml.safe_dump(node_at("status"))


def test_conditions_are_a_list_map_keyed_by_type() -> None:
    conditions = node_at("status.conditions")
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert node_at("status.phase")["enum"] == ["Pending", "Running", "Suspended", "Completed", "Failed"]
    assert node_at("status.lag.partitions")["maxItems"] == 100


def test_status_schema_accepts_what_build_status_writes() -> None:
    """The operator's own status builder (core/status.py), with every optional part present."""
    status_module = pytest.importorskip("directstream.operator.core.status")
    state = full_state()
    conditions: list[dict[str, Any]] = []
    for kind in status_module.CONDITION_TYPES:
        conditions = status_module.set_condition(
            conditions, kind, "True", "SomeReason", "x" * 5000, generation=2, now_iso="2026-11-01T00:00:00Z"
        )
    latest = {tp: offset + 10 for tp, offset in state.committed.items()}
    latest.update({("views", p): 1000 for p in range(150)})
    progress = SimpleNamespace(active=1, pending=1, succeeded=2, failed=1)  # the JobProgress counts it reads
    built = status_module.build_status(
        state,
        generation=2,
        phase="Running",
        conditions=conditions,
        latest=latest,
        job_name="clicks-8-2",
        now_iso="2026-11-01T00:00:05Z",
        executors=progress,
    )
    assert {"lag", "executors", "appliedReset", "conditions", "observedGeneration"} <= set(built)
    assert schema_errors(built, node_at("status"), "status") == []
    assert tuple(node_at("status.phase")["enum"]) == status_module.PHASES
    assert (
        tuple(node_at("status.conditions")["items"]["properties"]["status"]["enum"])
        == status_module.CONDITION_STATUSES
    )
    assert node_at("status.lag.partitions")["maxItems"] == status_module.LAG_PARTITIONS_LIMIT
