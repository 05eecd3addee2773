"""What a batch attempt's outputs depend on, pinned in the write-ahead record (pure).

A retried, resumed or adopted attempt replays exactly what was planned: the split of the ranges
into work units, the processor and its options, the isolation level, and the executor pod
settings (image, env, resources, volumes, ...). A spec edit while a batch is pending applies
from the next batch. Connection details (bootstrap servers, client settings, Secret
references) stay live: they say how to reach the same records, not what to do with them.

The layout — per unit, the index of each whole range of the plan, or ``index:from-until`` for a
piece of a split range — is what ``digest`` fingerprints (Jobs and executor results carry it),
but the state stores only the digest and the unit count: the layout grows with the partitions
and is derived again from the plan and the pinned split settings, checked against the digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from directstream.executor.contract import (
    ContractError,
    KafkaClientSettings,
    OffsetRange,
    ProcessorSettings,
    WorkUnit,
)

from .planning import BatchPlan, split_work
from .spec import ExecutorsSpec, StreamSpec

LayoutEntry = int | tuple[int, int, int]  # a whole range of the plan, or (index, from, until)
PIN_VERSION = 1


@dataclass(frozen=True, slots=True)
class PinnedAttempt:
    isolation_level: str
    processor: ProcessorSettings
    executors: ExecutorsSpec
    layout: tuple[tuple[LayoutEntry, ...], ...]
    digest: str

    def to_json(self) -> dict[str, Any]:
        """For the status: user-shaped parts (options, pod settings) as canonical JSON text, so the
        status schema stays closed; each unit's layout as ``"0,3,7:1000-2000"``."""
        return {
            "version": PIN_VERSION,
            "isolationLevel": self.isolation_level,
            "processor": _canonical(self.processor.to_json()),
            "executors": _canonical(_executors_to_json(self.executors)),
            "layout": [",".join(_entry_text(e) for e in unit) for unit in self.layout],
            "digest": self.digest,
        }

    def stored_json(self) -> dict[str, Any]:
        """As the state stores it: without the layout, which grows with the partitions and is
        derived again from the plan and the pinned executor settings (see :meth:`from_json`)."""
        doc = {k: v for k, v in self.to_json().items() if k != "layout"}
        doc["units"] = len(self.layout)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], plan: BatchPlan | None = None) -> PinnedAttempt:
        """A pinned attempt; one stored without its layout needs its ``plan``, and the layout
        derived again must give the recorded digest (else the split is not the one planned)."""
        if doc.get("version") != PIN_VERSION:
            raise ContractError(f"unsupported pinned attempt version {doc.get('version')!r}")
        try:
            executors = _executors_from_json(json.loads(doc["executors"]))
            if "layout" in doc:
                layout = tuple(
                    tuple(_entry_from_text(e) for e in unit.split(",") if e) for unit in doc["layout"]
                )
            elif plan is not None:
                # Split into as many units as recorded: that gives the recorded split whatever
                # cap planned it (executors.max, or a pool's scaled count); the digest checks it.
                units = int(doc["units"])
                layout = layout_of(plan, units, executors.max_records) if units > 0 else ()
            else:
                raise ContractError("a pinned attempt stored without its layout needs its plan")
            pinned = cls(
                isolation_level=str(doc["isolationLevel"]),
                processor=ProcessorSettings.from_json(json.loads(doc["processor"])),
                executors=executors,
                layout=layout,
                digest=str(doc["digest"]),
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ContractError(f"malformed pinned attempt: {exc!r}") from exc
        if "layout" not in doc:
            derived = _sealed(pinned.isolation_level, pinned.processor, executors, layout).digest
            if derived != pinned.digest:
                raise ContractError(
                    f"the recorded plan's work layout cannot be derived again (digest {derived}, "
                    f"recorded {pinned.digest}): it was split by a different version"
                )
        return pinned


@dataclass(frozen=True, slots=True)
class AttemptRun:
    """One attempt as a launcher receives it: its units and the pinned pod settings."""

    units: tuple[WorkUnit, ...]
    executors: ExecutorsSpec
    digest: str

    @property
    def batch_id(self) -> int:
        return self.units[0].batch_id if self.units else 0

    @property
    def attempt(self) -> int:
        return self.units[0].attempt if self.units else 0


def spec_fingerprint(spec: StreamSpec) -> str:
    """A fingerprint of the whole spec: a batch that gave up runs again only once it differs."""
    return hashlib.sha256(repr(spec).encode()).hexdigest()[:16]


def pin(spec: StreamSpec, plan: BatchPlan, units: int | None = None) -> PinnedAttempt:
    """The attempt settings of ``plan`` under ``spec``: what every attempt of it will run, split into
    at most ``units`` work units (a pool's scaled executor count; default ``executors.max``)."""
    most = spec.executors.max if units is None else max(1, units)
    layout = layout_of(plan, most, spec.executors.max_records)
    processor = ProcessorSettings(spec.processor.sink, dict(spec.processor.options), spec.processor.poison)
    return _sealed(spec.kafka.isolation_level, processor, spec.executors, layout)


def layout_of(plan: BatchPlan, max_units: int, max_records: int) -> tuple[tuple[LayoutEntry, ...], ...]:
    """The split of ``plan`` into work units (deterministic, so it can be derived again)."""
    groups = split_work(plan.ranges, max_units, max_records)
    index = {(r.topic, r.partition): i for i, r in enumerate(plan.ranges)}
    return tuple(tuple(_entry(piece, index, plan.ranges) for piece in group) for group in groups)


def _entry(
    piece: OffsetRange, index: Mapping[tuple[str, int], int], ranges: Sequence[OffsetRange]
) -> LayoutEntry:
    i = index[(piece.topic, piece.partition)]
    whole = ranges[i]
    if (piece.from_offset, piece.until_offset) == (whole.from_offset, whole.until_offset):
        return i
    return (i, piece.from_offset, piece.until_offset)


def _sealed(
    isolation: str,
    processor: ProcessorSettings,
    executors: ExecutorsSpec,
    layout: tuple[tuple[LayoutEntry, ...], ...],
) -> PinnedAttempt:
    unsealed = PinnedAttempt(isolation, processor, executors, layout, digest="")
    body = {k: v for k, v in unsealed.to_json().items() if k != "digest"}
    digest = hashlib.sha256(_canonical(body).encode()).hexdigest()
    return dataclasses.replace(unsealed, digest=digest[:16])


def work_units(
    stream: str, plan: BatchPlan, pinned: PinnedAttempt, attempt: int, kafka: KafkaClientSettings
) -> tuple[WorkUnit, ...]:
    """The units of one attempt, from the pinned layout (never from the live spec)."""
    connection = dataclasses.replace(kafka, isolation_level=pinned.isolation_level)
    units = []
    for number, entries in enumerate(pinned.layout):
        ranges = []
        for entry in entries:
            if isinstance(entry, int):
                ranges.append(plan.ranges[entry])
            else:
                whole = plan.ranges[entry[0]]
                ranges.append(OffsetRange(whole.topic, whole.partition, entry[1], entry[2]))
        units.append(
            WorkUnit(
                stream=stream,
                batch_id=plan.batch_id,
                attempt=attempt,
                index=number,
                ranges=tuple(ranges),
                kafka=connection,
                processor=pinned.processor,
                digest=pinned.digest,
            )
        )
    return tuple(units)


def _canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _entry_text(entry: LayoutEntry) -> str:
    return str(entry) if isinstance(entry, int) else f"{entry[0]}:{entry[1]}-{entry[2]}"


def _entry_from_text(text: str) -> LayoutEntry:
    if ":" not in text:
        return int(text)
    index, _, bounds = text.partition(":")
    start, _, until = bounds.partition("-")
    return (int(index), int(start), int(until))


def _executors_to_json(executors: ExecutorsSpec) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(executors)))  # tuples -> lists
    return doc


def _executors_from_json(doc: Mapping[str, Any]) -> ExecutorsSpec:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(ExecutorsSpec):
        if f.name not in doc:
            continue  # recorded by an older version: the default
        value = doc[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        values[f.name] = tuple(value) if isinstance(default, tuple) else value
    return ExecutorsSpec(**values)
