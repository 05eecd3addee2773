"""The DirectStream spec as typed, validated objects.

``parse_stream`` turns a manifest (the same YAML that is ``kubectl apply``-ed) into a
``StreamSpec`` or raises ``SpecError`` listing every problem with the path of its field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from directstream.executor.contract import REFUSED_CONFIG, SINK_NAMES, PermanentError, SinkName
from directstream.executor.contract.parquet import ParquetOptionsError, parse_parquet_options
from directstream.executor.contract.poison import PoisonPolicy
from directstream.operator.core import spec_pod, topic_pattern
from directstream.operator.core.durations import format_duration, parse_duration
from directstream.operator.core.spec_fields import (
    Problems,
    Section,
    check_name,
    check_pattern,
    check_topic_name,
    describe,
    join,
    read_duration,
    read_explicit_offsets,
    timestamp_millis,
)
from directstream.operator.core.spec_kafka import KafkaSpec, read_kafka
from directstream.operator.core.spec_poison import check_dead_letter_loop, read_poison

__all__ = [
    "API_VERSION",
    "KIND",
    "BackpressureSpec",
    "ExecutorsSpec",
    "FieldProblem",
    "KafkaSpec",
    "ProcessorSpec",
    "RateSpec",
    "ResetSpec",
    "SpecError",
    "StartingOffsets",
    "StreamSpec",
    "format_duration",
    "known_spec_fields",
    "parse_duration",
    "parse_spec",
    "parse_stream",
]

API_VERSION = "directstream.io/v1alpha1"
KIND = "DirectStream"

Sink = SinkName
OffsetStore = Literal["kafka", "postgres"]
OnDataLoss = Literal["fail", "earliest"]
StopAt = Literal["never", "latest"]
StartKind = Literal["earliest", "latest", "timestamp", "offsets"]
ResetTo = Literal["earliest", "latest", "timestamp", "offsets"]

SINKS: tuple[Sink, ...] = SINK_NAMES
OFFSET_STORES: tuple[OffsetStore, ...] = ("kafka", "postgres")
ON_DATA_LOSS: tuple[OnDataLoss, ...] = ("fail", "earliest")
STOP_AT: tuple[StopAt, ...] = ("never", "latest")
RESET_TO: tuple[ResetTo, ...] = ("earliest", "latest", "timestamp", "offsets")
STARTING_OFFSETS: tuple[str, ...] = ("earliest", "latest")  # or {timestamp: ...} / {offsets: ...}
MAX_EXECUTORS = 1000
ExecutorMode = Literal["job", "pool"]
EXECUTOR_MODES: tuple[ExecutorMode, ...] = ("job", "pool")
# Records per second per partition at most (the CRD's maximum too): far above any broker, and small
# enough that a rate times an interval stays a number the planner can count in.
MAX_RATE_PER_PARTITION = 1_000_000_000
MAX_RESET_ID_LENGTH = 63

# Kafka's own internal topics; like the Java consumer (exclude.internal.topics), a pattern never selects them.
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state", "__share_group_state"})


@dataclass(frozen=True)
class FieldProblem:
    path: str  # e.g. "spec.rate.maxPerPartition"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(PermanentError, ValueError):
    """A manifest that is not a valid DirectStream; ``problems`` names each bad field."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class StartingOffsets:
    kind: StartKind = "earliest"
    timestamp_ms: int | None = None  # kind == "timestamp"
    offsets: Mapping[str, Mapping[int, int]] = field(default_factory=dict)  # kind == "offsets"


@dataclass(frozen=True)
class ResetSpec:
    """``spec.reset``: a rewind/replay of every partition, applied once per distinct ``id``."""

    id: str
    to: ResetTo
    timestamp_ms: int | None = None  # to == "timestamp"
    offsets: Mapping[str, Mapping[int, int]] = field(default_factory=dict)  # to == "offsets"


@dataclass(frozen=True)
class BackpressureSpec:
    enabled: bool = False
    min_per_partition: float = 100.0


@dataclass(frozen=True)
class RateSpec:
    max_per_partition: float = 0.0  # records/s per partition; 0 = unlimited
    first_batch_max_records: int = 0  # 0 = no extra cap on the first batch
    backpressure: BackpressureSpec = field(default_factory=BackpressureSpec)


@dataclass(frozen=True)
class ExecutorsSpec:
    mode: ExecutorMode = "job"  # job: a process/Job per attempt; pool: warm executors (local mode only)
    max: int = 4
    min: int = 1  # pool: fewest executors kept when lag is low (core/scaling.py)
    max_records: int = 0  # split a range above this many records; 0 = never split
    image: str = ""
    timeout_seconds: float = 600.0  # a batch's Job activeDeadlineSeconds
    pending_timeout_seconds: float = 120.0  # an executor pod Pending this long fails the attempt
    # Pod settings passed through to the executor pods (cluster only), as Kubernetes JSON.
    resources: Mapping[str, Any] = field(default_factory=dict)
    env: tuple[Mapping[str, Any], ...] = ()
    service_account_name: str = ""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    # Merged over directstream's restricted defaults (core/executor_pod.py), field by field.
    security_context: Mapping[str, Any] = field(default_factory=dict)  # the pod's
    container_security_context: Mapping[str, Any] = field(default_factory=dict)  # the executor container's
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    priority_class_name: str = ""
    image_pull_policy: spec_pod.ImagePullPolicy | None = None  # None: Kubernetes' default for the tag
    image_pull_secrets: tuple[str, ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessorSpec:
    sink: Sink = "jsonl"
    options: Mapping[str, Any] = field(default_factory=dict)
    poison: PoisonPolicy = field(default_factory=PoisonPolicy)  # decode, onError, deadLetter


@dataclass(frozen=True)
class StreamSpec:
    name: str
    kafka: KafkaSpec
    namespace: str = "default"
    topics: tuple[str, ...] = ()
    topic_pattern: str | None = None
    group_id: str = ""  # defaults to name
    starting_offsets: StartingOffsets = field(default_factory=StartingOffsets)
    batch_interval_seconds: float = 5.0
    rate: RateSpec = field(default_factory=RateSpec)
    executors: ExecutorsSpec = field(default_factory=ExecutorsSpec)
    processor: ProcessorSpec = field(default_factory=ProcessorSpec)
    on_data_loss: OnDataLoss = "fail"
    max_attempts: int = 3
    suspend: bool = False
    stop_at: StopAt = "never"
    reset: ResetSpec | None = None
    delete_consumer_group: bool = False  # delete the Kafka consumer group with the DirectStream
    # Where committed offsets live: "kafka" (status / state file, mirrored to the group) or
    # "postgres" (the postgres sink's offsets table, stored with the results; mirrored to both).
    offset_store: OffsetStore = "kafka"

    def matches_topic(self, topic: str) -> bool:
        """Whether ``topic`` belongs to this stream: listed in ``topics``, or matched by ``topicPattern``.

        The pattern (RE2, matched in linear time) must match the whole topic name, as Spark's
        ``SubscribePattern`` and the Java consumer do (``Matcher.matches``): ``clicks-.*`` and
        ``^clicks-.*$`` select the same topics, and ``clicks`` does not select ``clicks-eu``.
        Kafka's internal topics are never matched by a pattern.
        """
        if self.topic_pattern is None:
            return topic in self.topics
        return topic not in INTERNAL_TOPICS and topic_pattern.fullmatch(self.topic_pattern, topic)


FORBIDDEN_KAFKA_CONFIG = REFUSED_CONFIG  # the contract owns the list; the parser refuses them
_ENTRY_POINT = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_SPEC_DEFAULTS = StreamSpec(name="", kafka=KafkaSpec(bootstrap_servers=""))


def parse_stream(doc: Mapping[str, Any], *, default_namespace: str = "default") -> StreamSpec:
    """A whole ``DirectStream`` manifest (as loaded from YAML) as a ``StreamSpec``; raises ``SpecError``."""
    problems = Problems()
    if not isinstance(doc, Mapping):
        problems.add("", f"expected a DirectStream manifest (a mapping), got {describe(doc)}")
        raise _spec_error(problems)
    top = Section(doc, "", problems)
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        value = top.required(key)
        if value is not None and value != expected:
            problems.add(key, f"expected {expected!r}, got {describe(value)}")
    metadata = top.section("metadata", required=True)
    name = check_name(metadata.required("name"), "metadata.name", problems)
    namespace = check_name(metadata.raw("namespace"), "metadata.namespace", problems) or default_namespace
    top.raw("status")  # present in manifests saved with `kubectl get -o yaml`; not ours to read
    spec = top.required("spec")
    top.close()  # metadata is not closed: labels, annotations, uid and the like are Kubernetes' business
    if spec is not None and not isinstance(spec, Mapping):
        problems.add("spec", f"expected a mapping, got {describe(spec)}")
    stream = _read_spec(Section(spec if isinstance(spec, Mapping) else {}, "spec", problems), name, namespace)
    if problems.items:
        raise _spec_error(problems)
    return stream


def parse_spec(name: str, spec: Mapping[str, Any], namespace: str = "default") -> StreamSpec:
    """A bare ``spec`` mapping (as kopf hands it over) of the stream ``name``; raises ``SpecError``."""
    problems = Problems()
    checked_name = check_name(name, "metadata.name", problems)
    if not isinstance(spec, Mapping):
        problems.add("spec", f"expected a mapping, got {describe(spec)}")
        raise _spec_error(problems)
    stream = _read_spec(Section(spec, "spec", problems), checked_name, namespace)
    if problems.items:
        raise _spec_error(problems)
    return stream


def known_spec_fields() -> tuple[str, ...]:
    """Every field path the parser reads (``spec.rate.backpressure.enabled``, ...), sections included.

    Found by running the readers over a probe that opens every section, so it cannot drift from them.
    Free-form fields (``spec.kafka.config``, ``spec.processor.options``, pod settings) are leaves here.
    """
    problems = Problems()
    probe: dict[str, Any] = {
        "kafka": {"configFrom": {"secretRef": {}}},
        "startingOffsets": {},
        "reset": {},
        "rate": {"backpressure": {}},
        "executors": {},
        "processor": {},
    }
    _read_spec(Section(probe, "spec", problems), "probe", "default")
    return tuple(problems.asked)


def _spec_error(problems: Problems) -> SpecError:
    return SpecError([FieldProblem(path, message) for path, message in problems.items])


def _read_spec(s: Section, name: str, namespace: str) -> StreamSpec:
    d = _SPEC_DEFAULTS
    kafka = read_kafka(s.section("kafka", required=True))
    topics, pattern = _read_subscription(s)
    starting = _read_starting_offsets(s, topics, pattern)
    stream = StreamSpec(
        name=name,
        namespace=namespace,
        kafka=kafka,
        topics=topics,
        topic_pattern=pattern,
        group_id=s.string("groupId", name, non_empty=True),
        starting_offsets=starting,
        batch_interval_seconds=read_duration(s, "batchInterval", d.batch_interval_seconds),
        rate=_read_rate(s.section("rate"), d.rate),
        executors=_read_executors(s.section("executors"), d.executors),
        processor=_read_processor(s.section("processor"), d.processor),
        on_data_loss=s.choice("onDataLoss", d.on_data_loss, ON_DATA_LOSS),
        max_attempts=s.integer("maxAttempts", d.max_attempts, minimum=1),
        suspend=s.boolean("suspend", d.suspend),
        stop_at=s.choice("stopAt", d.stop_at, STOP_AT),
        reset=_read_reset(s, topics, pattern),
        delete_consumer_group=s.boolean("deleteConsumerGroup", d.delete_consumer_group),
        offset_store=_read_offsets(s.section("offsets"), d.offset_store),
    )
    if stream.offset_store == "postgres" and stream.processor.sink != "postgres":
        s.problems.add(
            s.at("offsets.store"),
            "postgres keeps offsets in the postgres sink's table: needs processor.sink: postgres",
        )
    check_dead_letter_loop(stream, s.problems)
    s.close()
    return stream


def _read_subscription(s: Section) -> tuple[tuple[str, ...], str | None]:
    raw_topics, raw_pattern = s.raw("topics"), s.raw("topicPattern")
    if raw_topics is not None and raw_pattern is not None:
        s.problems.add(s.at("topicPattern"), "set either spec.topics or spec.topicPattern, not both")
        return (), None
    if raw_topics is None and raw_pattern is None:
        s.problems.add(s.at("topics"), "required: set spec.topics (a list) or spec.topicPattern (a regex)")
        return (), None
    if raw_pattern is not None:
        return (), check_pattern(raw_pattern, s.at("topicPattern"), s.problems)
    path = s.at("topics")
    if not isinstance(raw_topics, list | tuple):
        s.problems.add(path, f"expected a list of topic names, got {describe(raw_topics)}")
        return (), None
    if not raw_topics:
        s.problems.add(path, "must list at least one topic")
    topics: list[str] = []
    for index, item in enumerate(raw_topics):
        topic = check_topic_name(item, join(path, index), s.problems)
        if topic is not None and topic in topics:
            s.problems.add(join(path, index), f"topic {topic!r} is listed twice")
        elif topic is not None:
            topics.append(topic)
    return tuple(topics), None


def _read_starting_offsets(s: Section, topics: tuple[str, ...], pattern: str | None) -> StartingOffsets:
    value = s.raw("startingOffsets")
    path = s.at("startingOffsets")
    expected = "expected earliest, latest, {timestamp: ...} or {offsets: {topic: {partition: offset}}}"
    if value is None:
        return StartingOffsets()
    if value in ("earliest", "latest"):
        return StartingOffsets(kind="earliest" if value == "earliest" else "latest")
    if not isinstance(value, Mapping):
        s.problems.add(path, f"{expected}, got {describe(value)}")
        return StartingOffsets()
    section = Section(value, path, s.problems)
    timestamp, offsets = section.raw("timestamp"), section.raw("offsets")
    section.close()
    if (timestamp is None) == (offsets is None):
        s.problems.add(path, f"{expected}: give exactly one of timestamp or offsets")
        return StartingOffsets()
    if timestamp is not None:
        millis = timestamp_millis(timestamp, section.at("timestamp"), s.problems)
        return StartingOffsets(kind="timestamp", timestamp_ms=millis)
    return StartingOffsets(
        kind="offsets",
        offsets=read_explicit_offsets(
            offsets, section.at("offsets"), s.problems, _subscription(topics, pattern)
        ),
    )


def _subscription(topics: tuple[str, ...], pattern: str | None) -> Callable[[str], bool] | None:
    """Whether a topic is subscribed; ``None`` when the subscription itself is invalid (nothing to check)."""
    if not topics and pattern is None:
        return None
    return StreamSpec(name="", kafka=KafkaSpec(""), topics=topics, topic_pattern=pattern).matches_topic


def _read_reset(s: Section, topics: tuple[str, ...], pattern: str | None) -> ResetSpec | None:
    present = s.has("reset")
    r = s.section("reset")
    raw_to, timestamp, offsets = r.raw("to"), r.raw("timestamp"), r.raw("offsets")
    reset_id = r.string("id", "", required=present, non_empty=True)
    r.close()
    if not present:
        return None
    if len(reset_id) > MAX_RESET_ID_LENGTH:
        s.problems.add(r.at("id"), f"must be at most {MAX_RESET_ID_LENGTH} characters, got {len(reset_id)}")
    if raw_to is None:
        r.required("to")
        return None
    to = r.choice("to", "earliest", RESET_TO)
    if raw_to != to:
        return None  # not one of RESET_TO: reported by choice
    for key, value in (("timestamp", timestamp), ("offsets", offsets)):
        if value is None and to == key:
            s.problems.add(r.at(key), f"required when spec.reset.to is {key}")
        elif value is not None and to != key:
            s.problems.add(r.at(key), f"only allowed when spec.reset.to is {key} (it is {to})")
    millis = None
    if to == "timestamp" and timestamp is not None:
        millis = timestamp_millis(timestamp, r.at("timestamp"), s.problems)
    chosen: dict[str, dict[int, int]] = {}
    if to == "offsets" and offsets is not None:
        chosen = read_explicit_offsets(offsets, r.at("offsets"), s.problems, _subscription(topics, pattern))
    return ResetSpec(reset_id, to, timestamp_ms=millis, offsets=chosen)


def _read_rate(s: Section, d: RateSpec) -> RateSpec:
    pressure = s.section("backpressure")
    backpressure = BackpressureSpec(
        enabled=pressure.boolean("enabled", d.backpressure.enabled),
        min_per_partition=pressure.number(
            "minPerPartition", d.backpressure.min_per_partition, positive=True, maximum=MAX_RATE_PER_PARTITION
        ),
    )
    pressure.close()
    rate = RateSpec(
        max_per_partition=s.number(
            "maxPerPartition", d.max_per_partition, minimum=0, maximum=MAX_RATE_PER_PARTITION
        ),
        first_batch_max_records=s.integer("firstBatchMaxRecords", d.first_batch_max_records, minimum=0),
        backpressure=backpressure,
    )
    s.close()
    return rate


def _read_executors(s: Section, d: ExecutorsSpec) -> ExecutorsSpec:
    volumes = spec_pod.read_volumes(s)
    executors = ExecutorsSpec(
        mode=s.choice("mode", d.mode, EXECUTOR_MODES),
        max=s.integer("max", d.max, minimum=1, maximum=MAX_EXECUTORS),
        min=s.integer("min", d.min, minimum=1, maximum=MAX_EXECUTORS),
        max_records=s.integer("maxRecords", d.max_records, minimum=0),
        image=s.string("image", d.image),
        timeout_seconds=read_duration(s, "timeout", d.timeout_seconds),
        pending_timeout_seconds=read_duration(s, "pendingTimeout", d.pending_timeout_seconds),
        resources=s.mapping("resources"),
        env=s.mapping_list("env"),
        service_account_name=s.string("serviceAccountName", d.service_account_name),
        node_selector=s.mapping("nodeSelector", string_values=True),
        tolerations=s.mapping_list("tolerations"),
        security_context=spec_pod.read_security_context(s, "securityContext", pod=True),
        container_security_context=spec_pod.read_security_context(s, "containerSecurityContext", pod=False),
        volumes=volumes,
        volume_mounts=spec_pod.read_volume_mounts(s, volumes),
        pod_labels=spec_pod.read_pod_metadata(s, "podLabels", labels=True),
        pod_annotations=spec_pod.read_pod_metadata(s, "podAnnotations", labels=False),
        priority_class_name=spec_pod.read_priority_class(s),
        image_pull_policy=spec_pod.read_pull_policy(s),
        image_pull_secrets=spec_pod.read_image_pull_secrets(s),
        affinity=spec_pod.read_affinity(s),
    )
    if executors.min > executors.max:
        s.problems.add(s.at("min"), f"must not exceed executors.max ({executors.max}), got {executors.min}")
    s.close()
    return executors


def _read_offsets(s: Section, default: OffsetStore) -> OffsetStore:
    store = s.choice("store", default, OFFSET_STORES)
    s.close()
    return store


def _read_processor(s: Section, d: ProcessorSpec) -> ProcessorSpec:
    sink = s.choice("sink", d.sink, SINKS)
    sink_named = " sink" if s.has("sink") else " sink (the default)"
    options = s.mapping("options")
    poison = read_poison(s)
    s.close()
    options_path = s.at("options")
    if sink == "parquet":
        try:
            parse_parquet_options(options)
        except ParquetOptionsError as exc:
            s.problems.add(join(options_path, exc.option) if exc.option else options_path, exc.reason)
        return ProcessorSpec(sink, options, poison)
    required = {"jsonl": "directory", "kafka": "topic", "python": "entryPoint"}.get(sink)
    if required is None:
        return ProcessorSpec(sink, options, poison)
    value, path = options.get(required), join(options_path, required)
    if value is None:
        s.problems.add(path, f"required by the {sink}{sink_named}")
    elif not isinstance(value, str) or not value.strip():
        s.problems.add(path, f"expected a non-empty string, got {describe(value)}")
    elif sink == "kafka":
        check_topic_name(value, path, s.problems)
    elif sink == "python" and not _ENTRY_POINT.fullmatch(value):
        s.problems.add(path, f"{value!r} is not of the form 'package.module:callable'")
    return ProcessorSpec(sink, options, poison)
