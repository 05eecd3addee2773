"""The DirectStream spec: defaults, full manifests, every kind of bad input, and no crash on junk."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from directstream.operator.core.spec import (
    FieldProblem,
    ResetSpec,
    SpecError,
    StreamSpec,
    format_duration,
    known_spec_fields,
    parse_duration,
    parse_spec,
    parse_stream,
)

MINIMAL = """
apiVersion: directstream.io/v1alpha1
kind: DirectStream
metadata: {name: clicks}
spec:
  kafka: {bootstrapServers: "127.0.0.1:9092"}
  topics: [clicks]
  processor: {options: {directory: /data/out}}
"""

FULL = """
apiVersion: directstream.io/v1alpha1
kind: DirectStream
metadata:
  name: clicks-eu
  namespace: streams
  labels: {team: web}
spec:
  kafka:
    bootstrapServers: "k1:9092, k2:9093"
    isolationLevel: read_uncommitted
    config: {security.protocol: SASL_SSL, fetch.max.bytes: 1048576, enable.partition.eof: false}
    configFrom: {secretRef: {name: kafka-client}}
  topics: [clicks, views.v2]
  groupId: clicks-group
  startingOffsets:
    offsets: {clicks: {"0": 42, 1: 7}}
  batchInterval: 1m30s
  rate:
    maxPerPartition: 250.5
    firstBatchMaxRecords: 1000
    backpressure: {enabled: true, minPerPartition: 10}
  executors:
    max: 8
    maxRecords: 50000
    image: registry.local/directstream:1.0
    timeout: 30m
    pendingTimeout: 45
    resources: {limits: {cpu: "1"}}
    env: [{name: A, value: b}]
    serviceAccountName: runner
    nodeSelector: {disk: ssd}
    tolerations: [{key: k, operator: Exists}]
    securityContext: {runAsNonRoot: true}
  processor:
    sink: python
    options: {entryPoint: "shop.handlers:on_batch", table: clicks}
  onDataLoss: earliest
  maxAttempts: 5
  suspend: true
  stopAt: latest
  reset: {id: replay-1, to: offsets, offsets: {views.v2: {"3": 0}}}
  deleteConsumerGroup: true
"""


def load(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def problems_of(doc: Any) -> list[FieldProblem]:
    with pytest.raises(SpecError) as caught:
        parse_stream(doc)
    return caught.value.problems


def test_minimal_manifest_gets_every_default() -> None:
    s = parse_stream(load(MINIMAL))
    assert (s.name, s.namespace) == ("clicks", "default")
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka.isolation_level == "read_committed"
    assert s.kafka.config == {}
    assert s.kafka.config_from_secret is None
    assert s.topics == ("clicks",)
    assert s.topic_pattern is None
    assert s.group_id == "clicks"
    assert s.starting_offsets.kind == "earliest"
    assert s.starting_offsets.timestamp_ms is None
    assert s.starting_offsets.offsets == {}
    assert s.batch_interval_seconds == 5.0
    assert s.rate.max_per_partition == 0.0
    assert s.rate.first_batch_max_records == 0
    assert s.rate.backpressure.enabled is False
    assert s.rate.backpressure.min_per_partition == 100.0
    e = s.executors
    assert (e.max, e.max_records, e.image, e.service_account_name) == (4, 0, "", "")
    assert (e.timeout_seconds, e.pending_timeout_seconds) == (600.0, 120.0)
    assert (e.resources, e.env, e.node_selector, e.tolerations, e.security_context) == ({}, (), {}, (), {})
    assert (e.container_security_context, e.volumes, e.volume_mounts, e.pod_labels, e.pod_annotations) == (
        {},
        (),
        (),
        {},
        {},
    )
    assert (e.priority_class_name, e.image_pull_policy, e.image_pull_secrets, e.affinity) == (
        "",
        None,
        (),
        {},
    )
    assert s.processor.sink == "jsonl"
    assert s.processor.options == {"directory": "/data/out"}
    assert s.on_data_loss == "fail"
    assert s.max_attempts == 3
    assert s.suspend is False
    assert s.stop_at == "never"
    assert s.reset is None
    assert s.delete_consumer_group is False


def test_default_namespace_is_used_without_metadata_namespace() -> None:
    assert parse_stream(load(MINIMAL), default_namespace="team-a").namespace == "team-a"


def test_null_sections_mean_defaults() -> None:
    doc = load(MINIMAL)
    doc["spec"].update(rate=None, executors=None, startingOffsets=None)
    s = parse_stream(doc)
    assert s.rate.max_per_partition == 0.0 and s.executors.max == 4 and s.starting_offsets.kind == "earliest"


def test_full_manifest_parses_every_field() -> None:
    s = parse_stream(load(FULL))
    assert (s.name, s.namespace) == ("clicks-eu", "streams")
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9093"
    assert s.kafka.isolation_level == "read_uncommitted"
    assert s.kafka.config == {
        "security.protocol": "SASL_SSL",
        "fetch.max.bytes": "1048576",
        "enable.partition.eof": "false",
    }
    assert s.kafka.config_from_secret == "kafka-client"
    assert s.topics == ("clicks", "views.v2")
    assert s.group_id == "clicks-group"
    assert s.starting_offsets.kind == "offsets"
    assert s.starting_offsets.offsets == {"clicks": {0: 42, 1: 7}}
    assert s.batch_interval_seconds == 90.0
    assert s.rate.max_per_partition == 250.5
    assert s.rate.first_batch_max_records == 1000
    assert s.rate.backpressure.enabled is True
    assert s.rate.backpressure.min_per_partition == 10.0
    e = s.executors
    assert (e.max, e.max_records, e.image) == (8, 50000, "registry.local/directstream:1.0")
    assert e.resources == {"limits": {"cpu": "1"}}
    assert e.env == ({"name": "A", "value": "b"},)
    assert e.service_account_name == "runner"
    assert e.node_selector == {"disk": "ssd"}
    assert e.tolerations == ({"key": "k", "operator": "Exists"},)
    assert e.security_context == {"runAsNonRoot": True}
    assert s.processor.sink == "python"
    assert s.processor.options == {"entryPoint": "shop.handlers:on_batch", "table": "clicks"}
    assert (s.on_data_loss, s.max_attempts, s.suspend, s.stop_at) == ("earliest", 5, True, "latest")
    assert (e.timeout_seconds, e.pending_timeout_seconds) == (1800.0, 45.0)
    assert s.reset == ResetSpec("replay-1", "offsets", offsets={"views.v2": {3: 0}})
    assert s.delete_consumer_group is True


@pytest.mark.parametrize(
    ("reset", "expected"),
    [
        ({"id": "r1", "to": "earliest"}, ResetSpec("r1", "earliest")),
        ({"id": "r1", "to": "latest"}, ResetSpec("r1", "latest")),
        (
            {"id": "r2", "to": "timestamp", "timestamp": "2026-11-01T00:00:00Z"},
            ResetSpec("r2", "timestamp", timestamp_ms=1793491200000),
        ),
        ({"id": "r3", "to": "timestamp", "timestamp": 5}, ResetSpec("r3", "timestamp", timestamp_ms=5)),
        (
            {"id": "x" * 63, "to": "offsets", "offsets": {"clicks": {"0": 1, 2: 3}}},
            ResetSpec("x" * 63, "offsets", offsets={"clicks": {0: 1, 2: 3}}),
        ),
    ],
)
def test_reset(reset: dict[str, Any], expected: ResetSpec) -> None:
    doc = load(MINIMAL)
    doc["spec"]["reset"] = reset
    assert parse_stream(doc).reset == expected


def test_known_spec_fields_lists_every_reader() -> None:
    fields = known_spec_fields()
    assert len(fields) == len(set(fields))
    assert {
        "spec.kafka.configFrom.secretRef.name",
        "spec.startingOffsets.timestamp",
        "spec.reset.offsets",
        "spec.executors.pendingTimeout",
        "spec.rate.backpressure.minPerPartition",
        "spec.deleteConsumerGroup",
    } <= set(fields)
    assert all(f.startswith("spec.") for f in fields)


def test_parse_spec_takes_a_bare_spec() -> None:
    spec = load(MINIMAL)["spec"]
    s = parse_spec("orders", spec, namespace="shop")
    assert (s.name, s.namespace, s.group_id) == ("orders", "shop", "orders")
    with pytest.raises(SpecError) as caught:
        parse_spec("orders", {**spec, "maxAttempts": 0})
    assert [p.path for p in caught.value.problems] == ["spec.maxAttempts"]


@pytest.mark.parametrize(
    ("value", "expected_ms"),
    [
        ("2026-11-01T00:00:00Z", 1793491200000),
        ("2026-11-01T01:00:00.250+01:00", 1793491200250),
        (datetime(2026, 11, 1, tzinfo=UTC), 1793491200000),
        (1793491200000, 1793491200000),
    ],
)
def test_starting_timestamp(value: object, expected_ms: int) -> None:
    doc = load(MINIMAL)
    doc["spec"]["startingOffsets"] = {"timestamp": value}
    s = parse_stream(doc)
    assert (s.starting_offsets.kind, s.starting_offsets.timestamp_ms) == ("timestamp", expected_ms)


def test_unquoted_yaml_timestamp_is_accepted() -> None:
    s = parse_stream(load(MINIMAL + "  startingOffsets: {timestamp: 2026-11-01T00:00:00Z}\n"))
    assert s.starting_offsets.timestamp_ms == 1793491200000


def test_latest_and_pattern_and_other_sinks() -> None:
    doc = load(MINIMAL)
    del doc["spec"]["topics"]
    doc["spec"].update(
        topicPattern="clicks-.*",
        startingOffsets="latest",
        batchInterval="0.5",
        processor={"sink": "kafka", "options": {"topic": "out"}},
    )
    s = parse_stream(doc)
    assert (s.topics, s.topic_pattern, s.starting_offsets.kind) == ((), "clicks-.*", "latest")
    assert s.batch_interval_seconds == 0.5
    assert s.processor.sink == "kafka"
    assert (
        parse_stream({**doc, "spec": {**doc["spec"], "processor": {"sink": "count"}}}).processor.options == {}
    )


def test_matches_topic_is_a_full_match() -> None:
    listed = parse_stream(load(MINIMAL))
    assert listed.matches_topic("clicks") and not listed.matches_topic("clicks-eu")
    pattern = StreamSpec(name="s", kafka=listed.kafka, topic_pattern="clicks-.*")
    anchored = StreamSpec(name="s", kafka=listed.kafka, topic_pattern="^clicks-.*$")
    for spec in (pattern, anchored):
        assert spec.matches_topic("clicks-eu")
        assert not spec.matches_topic("old-clicks-eu")
        assert not spec.matches_topic("clicks")
    everything = StreamSpec(name="s", kafka=listed.kafka, topic_pattern=".*")
    assert everything.matches_topic("x") and not everything.matches_topic("__consumer_offsets")


def spec_with(**changes: Any) -> dict[str, Any]:
    """The minimal manifest with spec fields set (dotted keys for nested ones; None deletes)."""
    doc = load(MINIMAL)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = doc["spec"]
        for parent in parents:
            target = target.setdefault(parent, {})
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    return doc


def doc_with(**top: Any) -> dict[str, Any]:
    doc = load(MINIMAL)
    doc.update(top)
    return doc


BAD_SPECS = [
    ("unknown field", spec_with(batchIntervall="5s"), "spec.batchIntervall", "did you mean 'batchInterval'"),
    ("snake case", spec_with(max_attempts=2), "spec.max_attempts", "did you mean 'maxAttempts'"),
    ("unknown nested", spec_with(rate__maxPerPartion=1), "spec.rate.maxPerPartion", "'maxPerPartition'"),
    (
        "string for number",
        spec_with(rate__maxPerPartition="10"),
        "spec.rate.maxPerPartition",
        "expected a number",
    ),
    ("bad duration", spec_with(batchInterval="5 seconds"), "spec.batchInterval", "not a duration"),
    ("zero duration", spec_with(batchInterval="0s"), "spec.batchInterval", "positive"),
    (
        "bad regex",
        spec_with(topics=None, topicPattern="clicks-(.*"),
        "spec.topicPattern",
        "not a valid regular expression: missing )",
    ),
    ("huge repeat", spec_with(topics=None, topicPattern="a{1001}"), "spec.topicPattern", "repetition size"),
    ("lookahead", spec_with(topics=None, topicPattern="(?!x)c.*"), "spec.topicPattern", "RE2 expression"),
    (
        "deep regex",
        spec_with(topics=None, topicPattern="(" * 2000),
        "spec.topicPattern",
        "not a valid regular",
    ),
    ("both", spec_with(topicPattern="c.*"), "spec.topicPattern", "not both"),
    ("neither", spec_with(topics=None), "spec.topics", "spec.topicPattern"),
    ("negative rate", spec_with(rate__maxPerPartition=-5), "spec.rate.maxPerPartition", ">= 0"),
    ("negative first", spec_with(rate__firstBatchMaxRecords=-1), "spec.rate.firstBatchMaxRecords", ">= 0"),
    (
        "zero min backpressure",
        spec_with(rate__backpressure__minPerPartition=0),
        "spec.rate.backpressure.minPerPartition",
        "> 0",
    ),
    ("unknown sink", spec_with(processor={"sink": "s3"}), "spec.processor.sink", "jsonl, kafka, stdout"),
    ("jsonl w/o dir", spec_with(processor={"sink": "jsonl"}), "spec.processor.options.directory", "required"),
    (
        "kafka w/o topic",
        spec_with(processor={"sink": "kafka", "options": {}}),
        "spec.processor.options.topic",
        "required by the kafka sink",
    ),
    (
        "entry point w/o colon",
        spec_with(processor={"sink": "python", "options": {"entryPoint": "pkg.mod.fn"}}),
        "spec.processor.options.entryPoint",
        "package.module:callable",
    ),
    (
        "bad timestamp",
        spec_with(startingOffsets={"timestamp": "yesterday"}),
        "spec.startingOffsets.timestamp",
        "RFC 3339",
    ),
    (
        "naive timestamp",
        spec_with(startingOffsets={"timestamp": "2026-11-01T00:00:00"}),
        "spec.startingOffsets.timestamp",
        "no UTC offset",
    ),
    ("unknown start", spec_with(startingOffsets="smallest"), "spec.startingOffsets", "earliest, latest"),
    (
        "negative offset",
        spec_with(startingOffsets={"offsets": {"clicks": {"0": -1}}}),
        "spec.startingOffsets.offsets.clicks.0",
        ">= 0",
    ),
    (
        "non-int partition",
        spec_with(startingOffsets={"offsets": {"clicks": {"p0": 1}}}),
        "spec.startingOffsets.offsets.clicks.p0",
        "partition must be a non-negative integer",
    ),
    (
        "offsets for unsubscribed topic",
        spec_with(startingOffsets={"offsets": {"views": {"0": 1}}}),
        "spec.startingOffsets.offsets.views",
        "not subscribed",
    ),
    ("maxAttempts 0", spec_with(maxAttempts=0), "spec.maxAttempts", ">= 1"),
    ("executors.max 0", spec_with(executors__max=0), "spec.executors.max", ">= 1"),
    ("executors.max huge", spec_with(executors__max=100_000), "spec.executors.max", "<= 1000"),
    (
        "bad isolation",
        spec_with(kafka__isolationLevel="committed"),
        "spec.kafka.isolationLevel",
        "read_committed",
    ),
    (
        "forbidden config",
        spec_with(kafka__config={"group.id": "x"}),
        "spec.kafka.config.group.id",
        "spec.groupId",
    ),
    (
        "auto commit",
        spec_with(kafka__config={"enable.auto.commit": True}),
        "spec.kafka.config.enable.auto.commit",
        "driver commits",
    ),
    ("bad name", doc_with(metadata={"name": "Clicks_EU"}), "metadata.name", "not a valid name"),
    ("long name", doc_with(metadata={"name": "a" * 64}), "metadata.name", "at most 63"),
    ("no name", doc_with(metadata={}), "metadata.name", "required"),
    ("apiVersion", doc_with(apiVersion="directstream.io/v1"), "apiVersion", "directstream.io/v1alpha1"),
    ("kind", doc_with(kind="Stream"), "kind", "'DirectStream'"),
    ("empty servers", spec_with(kafka__bootstrapServers=""), "spec.kafka.bootstrapServers", "at least one"),
    ("no port", spec_with(kafka__bootstrapServers="k1"), "spec.kafka.bootstrapServers", "host:port"),
    ("no kafka", spec_with(kafka=None), "spec.kafka", "required"),
    ("spec not mapping", doc_with(spec=["kafka"]), "spec", "expected a mapping, got a list"),
    ("duplicate topics", spec_with(topics=["a", "a"]), "spec.topics.1", "listed twice"),
    ("invalid topic", spec_with(topics=["a b"]), "spec.topics.0", "not a valid Kafka topic name"),
    ("topics string", spec_with(topics="clicks"), "spec.topics", "expected a list"),
    ("empty topics", spec_with(topics=[]), "spec.topics", "at least one"),
    ("bool for int", spec_with(maxAttempts=True), "spec.maxAttempts", "expected an integer, got a boolean"),
    (
        "float for int",
        spec_with(executors__maxRecords=1.5),
        "spec.executors.maxRecords",
        "expected an integer",
    ),
    ("string for bool", spec_with(suspend="yes"), "spec.suspend", "expected a boolean"),
    ("bad onDataLoss", spec_with(onDataLoss="skip"), "spec.onDataLoss", "fail, earliest"),
    ("bad stopAt", spec_with(stopAt="end"), "spec.stopAt", "never, latest"),
    ("env not list", spec_with(executors__env={"A": "b"}), "spec.executors.env", "expected a list"),
    (
        "nodeSelector int",
        spec_with(executors__nodeSelector={"n": 1}),
        "spec.executors.nodeSelector.n",
        "string",
    ),
    (
        "secretRef w/o name",
        spec_with(kafka__configFrom={"secretRef": {}}),
        "spec.kafka.configFrom.secretRef.name",
        "required",
    ),
    ("empty groupId", spec_with(groupId=""), "spec.groupId", "must not be empty"),
    ("top-level typo", doc_with(specs={}), "specs", "did you mean 'spec'"),
    ("float duration", spec_with(batchInterval=0.5), "spec.batchInterval", "whole number of seconds"),
    ("huge duration", spec_with(batchInterval="9" * 400), "spec.batchInterval", "finite"),
    ("zero timeout", spec_with(executors__timeout=0), "spec.executors.timeout", "positive"),
    ("bad pending", spec_with(executors__pendingTimeout="2 min"), "spec.executors.pendingTimeout", "not a"),
    (
        "timestamp not RFC 3339",
        spec_with(startingOffsets={"timestamp": "2026-11-01 00:00:00Z"}),
        "spec.startingOffsets.timestamp",
        "RFC 3339",
    ),
    ("reset w/o id", spec_with(reset={"to": "latest"}), "spec.reset.id", "required"),
    ("reset empty id", spec_with(reset={"id": " ", "to": "latest"}), "spec.reset.id", "must not be empty"),
    ("reset long id", spec_with(reset={"id": "x" * 64, "to": "latest"}), "spec.reset.id", "at most 63"),
    ("reset w/o to", spec_with(reset={"id": "r"}), "spec.reset.to", "required"),
    ("reset empty", spec_with(reset={}), "spec.reset.id", "required"),
    ("reset bad to", spec_with(reset={"id": "r", "to": "start"}), "spec.reset.to", "earliest, latest"),
    (
        "reset w/o timestamp",
        spec_with(reset={"id": "r", "to": "timestamp"}),
        "spec.reset.timestamp",
        "required when spec.reset.to is timestamp",
    ),
    (
        "reset w/o offsets",
        spec_with(reset={"id": "r", "to": "offsets"}),
        "spec.reset.offsets",
        "required when spec.reset.to is offsets",
    ),
    (
        "reset stray timestamp",
        spec_with(reset={"id": "r", "to": "latest", "timestamp": 5}),
        "spec.reset.timestamp",
        "only allowed when spec.reset.to is timestamp",
    ),
    (
        "reset stray offsets",
        spec_with(reset={"id": "r", "to": "earliest", "offsets": {"clicks": {"0": 1}}}),
        "spec.reset.offsets",
        "only allowed",
    ),
    (
        "reset unsubscribed",
        spec_with(reset={"id": "r", "to": "offsets", "offsets": {"views": {"0": 1}}}),
        "spec.reset.offsets.views",
        "not subscribed",
    ),
    (
        "reset negative",
        spec_with(reset={"id": "r", "to": "offsets", "offsets": {"clicks": {"0": -1}}}),
        "spec.reset.offsets.clicks.0",
        ">= 0",
    ),
    ("reset typo", spec_with(reset={"id": "r", "to": "latest", "ts": 1}), "spec.reset.ts", "unknown field"),
    ("reset not mapping", spec_with(reset="latest"), "spec.reset", "expected a mapping"),
    ("deleteConsumerGroup str", spec_with(deleteConsumerGroup="yes"), "spec.deleteConsumerGroup", "boolean"),
]


@pytest.mark.parametrize(
    ("doc", "path", "fragment"), [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS]
)
def test_bad_spec_names_the_field(doc: dict[str, Any], path: str, fragment: str) -> None:
    problems = problems_of(doc)
    matching = [p for p in problems if p.path == path]
    assert matching, f"no problem at {path}: {problems}"
    assert any(fragment in p.message for p in matching), matching


def test_config_values_are_never_echoed() -> None:
    problems = problems_of(spec_with(kafka__config={"sasl.password": ["hunter2"]}))
    assert problems[0].path == "spec.kafka.config.sasl.password"
    assert "hunter2" not in str(SpecError(problems))


def test_all_problems_are_reported_at_once() -> None:
    doc = spec_with(
        batchInterval="soon",
        maxAttempts=0,
        rate__maxPerPartition=-1,
        executors__max="many",
        processor={"sink": "nope"},
        onDatLoss="fail",
    )
    doc["kind"] = "Other"
    paths = {p.path for p in problems_of(doc)}
    assert paths >= {
        "kind",
        "spec.batchInterval",
        "spec.maxAttempts",
        "spec.rate.maxPerPartition",
        "spec.executors.max",
        "spec.processor.sink",
        "spec.onDatLoss",
    }
    message = str(SpecError(problems_of(doc)))
    assert "spec.maxAttempts: must be >= 1" in message


def test_document_not_a_mapping() -> None:
    assert problems_of(["not", "a", "manifest"])[0].message.startswith("expected a DirectStream manifest")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5.0), ("1m", 60.0), ("1m30s", 90.0), ("1h", 3600.0), ("1.5s", 1.5), ("2", 2.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "-5s", "5x", "s", "1m 30s", "5 s", "1e3s", "5sec"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(x) for x in (0, 0.5, 5, 90, 3600, 3661.001)] == [
        "0s",
        "500ms",
        "5s",
        "1m30s",
        "1h",
        "1h1m1s1ms",
    ]


@given(st.integers(min_value=0, max_value=10**12))
def test_duration_round_trip_on_the_millisecond_grid(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == seconds


def field_names(value: object) -> set[str]:
    if isinstance(value, dict):
        return {str(k) for k in value} | {n for v in value.values() for n in field_names(v)}
    return set()


# Field names of every level, so that junk reaches the nested readers and not only the unknown-field check.
FIELD_NAMES = sorted(field_names(load(FULL)) | {"timestamp", "topicPattern", "directory", "topic"})
json_keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=8) | st.integers(-2, 3)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    json_scalars | st.sampled_from(["earliest", "latest", "5s", "jsonl", "python", "a:1", "x.y:z"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_keys, inner, max_size=5),
    max_leaves=25,
)
known_keys = st.sampled_from([*sorted(load(FULL)["spec"]), "topicPattern"])


@settings(max_examples=300, deadline=None)
@given(
    spec=st.dictionaries(known_keys, json_values, max_size=8),
    top=st.dictionaries(st.sampled_from(["apiVersion", "kind", "metadata", "x"]), json_values, max_size=3),
)
def test_junk_never_crashes(spec: dict[str, Any], top: dict[str, Any]) -> None:
    doc: dict[str, Any] = {**copy.deepcopy(load(MINIMAL)), **top, "spec": spec}
    try:
        parse_stream(doc)
    except SpecError as exc:
        assert exc.problems and all(p.path and p.message for p in exc.problems)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_junk_documents_never_crash(doc: Any) -> None:
    with pytest.raises(SpecError):
        parse_stream(doc)
