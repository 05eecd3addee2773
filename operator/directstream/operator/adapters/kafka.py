"""The driver's Kafka I/O: metadata, watermarks, timestamp look-ups and group commits.

Every method blocks (confluent-kafka is synchronous); async callers go through
``asyncio.to_thread`` (see ``KafkaOffsetsPort``). Errors come out as ``KafkaUnavailable``
with a message a user can act on, never as a raw librdkafka exception.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from directstream.executor.contract import ConfigurationError
from directstream.executor.contract.redact import scrub

from ..core.errors import KafkaUnavailable
from ..core.planning import TopicPartition as TopicPartitionKey
from ..core.planning import Watermarks
from ..core.spec import StreamSpec
from ..core.topic_lifecycle import TopicInfo, known_id
from ..core.work import executor_kafka_settings

REQUEST_TIMEOUT_S = 15.0


RETRIES = 5
T = TypeVar("T")
# Errors a broker returns while leadership or a coordinator settles (e.g. a new topic).
TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.REQUEST_TIMED_OUT,
}
# A broker too old to describe topics (no topic ids): recreated topics cannot be told apart.
UNSUPPORTED = {KafkaError._UNSUPPORTED_FEATURE, KafkaError.UNSUPPORTED_VERSION}


class _Retriable(Exception):
    """A retriable broker error (leader moving, coordinator loading...)."""


def _wait(futures: Mapping[Any, Future[Any]], what: str) -> dict[Any, Any]:
    results: dict[Any, Any] = {}
    for key, future in futures.items():
        try:
            results[key] = future.result(timeout=REQUEST_TIMEOUT_S)
        except KafkaException as exc:
            if _transient(exc):
                raise _Retriable(f"{what} failed for {key}: {exc.args[0]}") from exc
            raise KafkaUnavailable(f"{what} failed for {key}: {exc.args[0]}") from exc
        except TimeoutError as exc:
            raise KafkaUnavailable(f"{what} timed out after {REQUEST_TIMEOUT_S:.0f}s") from exc
    return results


def _transient(exc: KafkaException) -> bool:
    error = exc.args[0]
    return bool(error.retriable() or error.code() in TRANSIENT)


def _retrying(call: Callable[[], T], what: str) -> T:
    """``call()``, again with backoff while the broker says "retriable"."""
    for attempt in range(RETRIES):
        try:
            return call()
        except _Retriable as exc:
            if attempt == RETRIES - 1:
                raise KafkaUnavailable(str(exc)) from exc
        except KafkaException as exc:
            if not _transient(exc) or attempt == RETRIES - 1:
                raise KafkaUnavailable(f"{what}: {exc.args[0]}") from exc
        time.sleep(0.25 * 2**attempt)
    raise AssertionError("unreachable")


def _with_retries(request: Callable[[], Mapping[Any, Future[Any]]], what: str) -> dict[Any, Any]:
    """Send ``request`` and wait for every answer, again while the broker says "retriable"."""
    return _retrying(lambda: _wait(request(), what), what)


class KafkaOffsets:
    """Blocking Kafka operations of the driver, one AdminClient per stream."""

    def __init__(self, spec: StreamSpec, secret_config: Mapping[str, str] | None = None) -> None:
        self._spec = spec
        self._bootstrap = spec.kafka.bootstrap_servers
        self._config = executor_kafka_settings(spec).client_config(secret_config)
        try:
            self._admin = AdminClient(self._config)
        except (KafkaException, ValueError, TypeError) as exc:
            # A value librdkafka refuses (``socket.timeout.ms: soon``): bad input, not an outage.
            reason = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else str(exc)
            raise ConfigurationError(
                f"spec.kafka: librdkafka refuses the client settings: {scrub(reason)}"
            ) from exc
        self._isolation = (
            IsolationLevel.READ_COMMITTED
            if spec.kafka.isolation_level == "read_committed"
            else IsolationLevel.READ_UNCOMMITTED
        )

    def partitions(self) -> list[TopicPartitionKey]:
        """Every partition the stream reads now: its listed topics, or the topics matching its
        pattern. A listed topic that does not exist is an error (a typo should not idle)."""
        topics = self._metadata().topics
        if self._spec.topics:
            missing = [t for t in self._spec.topics if t not in topics]
            if missing:
                raise KafkaUnavailable(
                    f"topic(s) {', '.join(missing)} do not exist on {self._bootstrap} (a listed topic "
                    "must exist; remove one deleted on purpose from spec.topics to drop its offsets)"
                )
            names: Iterable[str] = self._spec.topics
        else:
            names = (t for t in topics if not t.startswith("__") and self._spec.matches_topic(t))
        result: list[TopicPartitionKey] = []
        for name in names:
            meta = topics[name]
            if meta.error is not None:
                raise KafkaUnavailable(f"metadata for topic {name}: {meta.error.str()}")
            result.extend((name, p) for p in meta.partitions)
        return sorted(result)

    def topics(self, names: Iterable[str]) -> dict[str, TopicInfo]:
        """Each topic's id and partitions, in one DescribeTopics request. A topic that does not
        exist is left out, once the cluster's metadata agrees (a topic being created or a
        broker starting can answer "unknown" for a moment)."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        what = f"describing topics at {self._bootstrap}"

        def describe() -> dict[str, TopicInfo]:
            futures = self._admin.describe_topics(TopicCollection(wanted), request_timeout=REQUEST_TIMEOUT_S)
            found: dict[str, TopicInfo] = {}
            unknown = []
            for name, future in futures.items():
                try:
                    desc = future.result(timeout=REQUEST_TIMEOUT_S)
                except KafkaException as exc:
                    code = exc.args[0].code()
                    if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        unknown.append(name)
                        continue
                    if code in UNSUPPORTED:
                        return self._topics_without_ids(wanted)
                    if _transient(exc):
                        raise _Retriable(f"{what}: {name}: {exc.args[0]}") from exc
                    raise KafkaUnavailable(f"{what}: {name}: {exc.args[0]}") from exc
                except TimeoutError as exc:
                    raise KafkaUnavailable(f"{what} timed out after {REQUEST_TIMEOUT_S:.0f}s") from exc
                partitions = tuple(sorted(p.id for p in desc.partitions))
                found[name] = TopicInfo(known_id(str(desc.topic_id)), partitions)
            if unknown and set(unknown) & set(self._metadata().topics):
                raise _Retriable(f"{what}: {', '.join(unknown)} listed but not yet described")
            return found

        return _retrying(describe, what)

    def _metadata(self) -> Any:
        try:
            return self._admin.list_topics(timeout=REQUEST_TIMEOUT_S)
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot reach Kafka at {self._bootstrap}: {exc.args[0]}") from exc

    def _topics_without_ids(self, names: list[str]) -> dict[str, TopicInfo]:
        topics = self._metadata().topics
        return {n: TopicInfo("", tuple(sorted(topics[n].partitions))) for n in names if n in topics}

    def _list_offsets(
        self, tps: Iterable[TopicPartitionKey], spec: OffsetSpec, what: str
    ) -> dict[TopicPartitionKey, int]:
        request = {TopicPartition(t, p): spec for t, p in tps}
        if not request:
            return {}
        found = _with_retries(
            lambda: self._admin.list_offsets(
                request, isolation_level=self._isolation, request_timeout=REQUEST_TIMEOUT_S
            ),
            what,
        )
        return {(tp.topic, tp.partition): info.offset for tp, info in found.items()}

    def watermarks(self, tps: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, Watermarks]:
        """Earliest and latest (last stable under read_committed) offsets of all partitions:
        one batched ListOffsets request per broker for each end."""
        tps = list(tps)
        earliest = self._list_offsets(
            tps, OffsetSpec.earliest(), f"listing earliest offsets at {self._bootstrap}"
        )
        latest = self._list_offsets(tps, OffsetSpec.latest(), f"listing latest offsets at {self._bootstrap}")
        return {tp: Watermarks(earliest[tp], latest[tp]) for tp in tps}

    def offsets_for_timestamp(
        self, tps: Iterable[TopicPartitionKey], timestamp_ms: int
    ) -> dict[TopicPartitionKey, int]:
        """The first offset at or after ``timestamp_ms`` per partition (-1 = none yet: omitted)."""
        found = self._list_offsets(
            tps, OffsetSpec.for_timestamp(timestamp_ms), f"looking up offsets by time at {self._bootstrap}"
        )
        return {tp: offset for tp, offset in found.items() if offset >= 0}

    def commit(self, group: str, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Commit the whole batch's offsets to the group in one request."""
        if not offsets:
            return
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        )
        results = _with_retries(
            lambda: self._admin.alter_consumer_group_offsets([request], request_timeout=REQUEST_TIMEOUT_S),
            f"committing offsets of group {group} at {self._bootstrap}",
        )
        for result in results.values():
            failed = [tp for tp in result.topic_partitions if tp.error is not None]
            if failed:
                raise KafkaUnavailable(
                    f"committing offsets of group {group} failed for "
                    + ", ".join(f"{tp.topic}[{tp.partition}]: {tp.error.str()}" for tp in failed)
                )

    def committed(self, group: str) -> dict[TopicPartitionKey, int]:
        """The group's committed offsets for the partitions the stream reads now (partitions
        without a commit are omitted).

        Read through a consumer of the group that never subscribes (so never joins it), not
        the admin API: librdkafka's admin ListConsumerGroupOffsets crashes the process (NULL
        group handle in rd_kafka_handle_OffsetFetch) when the coordinator answers "loading",
        as a freshly started broker does.
        """
        partitions = [TopicPartition(t, p) for t, p in self.partitions()]
        if not partitions:
            return {}
        consumer = Consumer({**self._config, "group.id": group, "enable.auto.commit": False})
        try:
            found = _retrying(
                lambda: consumer.committed(partitions, timeout=REQUEST_TIMEOUT_S),
                f"reading offsets of group {group} at {self._bootstrap}",
            )
        finally:
            consumer.close()
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.error is None and tp.offset >= 0}

    def delete_group(self, group: str) -> None:
        """Delete the consumer group (``spec.deleteConsumerGroup``); a missing group is fine."""
        futures = self._admin.delete_consumer_groups([group], request_timeout=REQUEST_TIMEOUT_S)
        try:
            _wait(futures, f"deleting consumer group {group} at {self._bootstrap}")
        except KafkaUnavailable as exc:
            if "GROUP_ID_NOT_FOUND" not in str(exc):
                raise


class KafkaOffsetsPort:
    """The async face of ``KafkaOffsets``: every call runs in a worker thread."""

    def __init__(self, offsets: KafkaOffsets) -> None:
        self._offsets = offsets

    async def partitions(self) -> list[TopicPartitionKey]:
        return await asyncio.to_thread(self._offsets.partitions)

    async def topics(self, names: list[str]) -> dict[str, TopicInfo]:
        return await asyncio.to_thread(self._offsets.topics, names)

    async def watermarks(self, tps: list[TopicPartitionKey]) -> dict[TopicPartitionKey, Watermarks]:
        return await asyncio.to_thread(self._offsets.watermarks, tps)

    async def offsets_for_timestamp(
        self, tps: list[TopicPartitionKey], timestamp_ms: int
    ) -> dict[TopicPartitionKey, int]:
        return await asyncio.to_thread(self._offsets.offsets_for_timestamp, tps, timestamp_ms)

    async def commit(self, group: str, offsets: Mapping[TopicPartitionKey, int]) -> None:
        await asyncio.to_thread(self._offsets.commit, group, offsets)

    async def committed(self, group: str) -> dict[TopicPartitionKey, int]:
        return await asyncio.to_thread(self._offsets.committed, group)
