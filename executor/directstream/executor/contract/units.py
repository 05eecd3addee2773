"""Offset ranges, work units and results: the data that travels between driver and executor.

Everything here is plain data that round-trips through JSON, because a work unit travels
to a pod in an environment variable (cluster) or a file (local mode) and a result comes
back through the pod's termination message (at most 4096 bytes) or a result file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import ContractError
from .kafka import KafkaClientSettings
from .poison import PoisonOptionsError, PoisonPolicy, parse_poison
from .wire import CONTRACT_VERSION, TERMINATION_MESSAGE_LIMIT


class OffsetRange(NamedTuple):
    """Offsets ``[from_offset, until_offset)`` of one topic-partition.

    A named tuple rather than a dataclass: planning builds one per partition per batch, and
    tuples are several times cheaper to create and to sort (10,000 partitions in milliseconds).
    Ranges from outside (JSON) are checked by ``from_json``; ``check`` validates any range.
    """

    topic: str
    partition: int
    from_offset: int
    until_offset: int

    def check(self) -> OffsetRange:
        if self.partition < 0 or self.from_offset < 0 or self.until_offset < self.from_offset:
            raise ContractError(f"invalid offset range {self}")
        return self

    @property
    def count(self) -> int:  # type: ignore[override]  # shadows tuple.count on purpose: ranges are not searched
        """Offsets spanned; an upper bound on records (compaction and markers leave gaps)."""
        return self.until_offset - self.from_offset

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}] {self.from_offset}..{self.until_offset}"

    def to_json(self) -> list[Any]:
        return [self.topic, self.partition, self.from_offset, self.until_offset]

    @classmethod
    def from_json(cls, doc: Any) -> OffsetRange:
        if not (isinstance(doc, list) and len(doc) == 4):
            raise ContractError(f"offset range must be [topic, partition, from, until], got {doc!r}")
        topic, partition, start, until = doc
        if not isinstance(topic, str) or not all(isinstance(v, int) for v in (partition, start, until)):
            raise ContractError(f"offset range has wrong types: {doc!r}")
        return cls(topic, partition, start, until).check()


@dataclass(frozen=True, slots=True)
class ProcessorSettings:
    """Which sink processes the records, with its options, and the poison-record policy (see
    DESIGN.md and :mod:`.poison`); the policy's fields appear in the JSON only when set."""

    sink: str
    options: Mapping[str, Any] = field(default_factory=dict)
    poison: PoisonPolicy = field(default_factory=PoisonPolicy)

    def to_json(self) -> dict[str, Any]:
        return {"sink": self.sink, "options": dict(self.options), **self.poison.to_json()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProcessorSettings:
        try:
            poison = parse_poison(doc)
        except PoisonOptionsError as exc:
            raise ContractError(f"work unit processor: {exc}") from exc
        return cls(sink=str(doc["sink"]), options=dict(doc.get("options", {})), poison=poison)


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """What one executor does: read exactly ``ranges`` and hand them to the processor."""

    stream: str
    batch_id: int
    attempt: int
    index: int
    ranges: tuple[OffsetRange, ...]
    kafka: KafkaClientSettings
    processor: ProcessorSettings
    # (topic, partition, offset): the driver found the records of that partition's range below
    # ``offset`` deleted (onDataLoss: earliest), so reading starts there; outputs are still named
    # and chained by the range as recorded.
    read_from: tuple[tuple[str, int, int], ...] = ()
    digest: str = ""  # the attempt's fingerprint; the executor's result carries it back

    @property
    def record_count(self) -> int:
        return sum(r.count for r in self.ranges)

    def start_of(self, range_: OffsetRange) -> int:
        """The first offset to read of ``range_``: its from, or past records already lost."""
        for topic, partition, offset in self.read_from:
            if (topic, partition) == (range_.topic, range_.partition):
                return min(max(offset, range_.from_offset), range_.until_offset)
        return range_.from_offset

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CONTRACT_VERSION,
            "stream": self.stream,
            "batchId": self.batch_id,
            "attempt": self.attempt,
            "index": self.index,
            "ranges": [r.to_json() for r in self.ranges],
            "kafka": self.kafka.to_json(),
            "processor": self.processor.to_json(),
            **({"readFrom": [list(x) for x in self.read_from]} if self.read_from else {}),
            **({"digest": self.digest} if self.digest else {}),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> WorkUnit:
        if doc.get("version") != CONTRACT_VERSION:
            raise ContractError(f"unsupported work unit version {doc.get('version')!r}")
        try:
            return cls(
                stream=str(doc["stream"]),
                batch_id=int(doc["batchId"]),
                attempt=int(doc["attempt"]),
                index=int(doc["index"]),
                ranges=tuple(OffsetRange.from_json(r) for r in doc["ranges"]),
                kafka=KafkaClientSettings.from_json(doc["kafka"]),
                processor=ProcessorSettings.from_json(doc["processor"]),
                read_from=tuple(_read_from(x) for x in doc.get("readFrom", ())),
                digest=str(doc.get("digest", "")),
            )
        except ContractError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ContractError(f"malformed work unit: {exc!r}") from exc

    @classmethod
    def loads(cls, text: str) -> WorkUnit:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"work unit is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ContractError("work unit must be a JSON object")
        return cls.from_json(doc)


def _read_from(doc: Any) -> tuple[str, int, int]:
    if not (isinstance(doc, list) and len(doc) == 3 and isinstance(doc[0], str)):
        raise ContractError(f"readFrom entries must be [topic, partition, offset], got {doc!r}")
    if not all(isinstance(v, int) and v >= 0 for v in doc[1:]):
        raise ContractError(f"readFrom entry has a wrong partition or offset: {doc!r}")
    return (doc[0], doc[1], doc[2])


@dataclass(frozen=True, slots=True)
class FailedAt:
    """Where an executor gave up: the range and the first offset that failed."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class ExecutorResult:
    """The compact report an executor leaves behind (termination message or result file)."""

    batch_id: int
    attempt: int
    index: int
    ok: bool
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    failed_at: FailedAt | None = None
    digest: str = ""  # the unit's digest: which pinned attempt this result belongs to
    skipped: int = 0  # poison records dropped (onError: skip)
    dead_lettered: int = 0  # poison records written to the dead-letter topic

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": CONTRACT_VERSION,
            "batch": self.batch_id,
            "attempt": self.attempt,
            "index": self.index,
            "ok": self.ok,
            "records": self.records,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 6),
        }
        if self.error is not None:
            doc["error"] = self.error
        if self.failed_at is not None:
            doc["failedAt"] = [self.failed_at.topic, self.failed_at.partition, self.failed_at.offset]
        if self.digest:
            doc["digest"] = self.digest
        if self.skipped:
            doc["skipped"] = self.skipped
        if self.dead_lettered:
            doc["deadLettered"] = self.dead_lettered
        return doc

    def dumps(self) -> str:
        """Serialise within the termination-message limit, shortening the error if needed."""
        text = json.dumps(self.to_json(), separators=(",", ":"))
        if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT or self.error is None:
            return text
        # JSON escapes make a character cost 1 to 12 bytes, so cut by the overflow until it fits:
        # each cut removes at least as many bytes as characters.
        doc = self.to_json()
        error = self.error
        while len(text.encode()) > TERMINATION_MESSAGE_LIMIT and error:
            overflow = len(text.encode()) - TERMINATION_MESSAGE_LIMIT
            error = error[: max(0, len(error) - max(overflow, 16))]
            doc["error"] = error + " …"
            text = json.dumps(doc, separators=(",", ":"))
        return text

    @classmethod
    def loads(cls, text: str) -> ExecutorResult:
        try:
            doc = json.loads(text)
            failed = doc.get("failedAt")
            return cls(
                batch_id=int(doc["batch"]),
                attempt=int(doc["attempt"]),
                index=int(doc["index"]),
                ok=bool(doc["ok"]),
                records=int(doc.get("records", 0)),
                bytes=int(doc.get("bytes", 0)),
                seconds=float(doc.get("seconds", 0.0)),
                error=doc.get("error"),
                failed_at=FailedAt(str(failed[0]), int(failed[1]), int(failed[2])) if failed else None,
                digest=str(doc.get("digest", "")),
                skipped=int(doc.get("skipped", 0)),
                dead_lettered=int(doc.get("deadLettered", 0)),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ContractError(f"malformed executor result {text[:200]!r}: {exc}") from exc
