"""A stream's durable state: committed offsets, the write-ahead plan, the ledger.

Local mode stores it in a state file and the operator in the resource's status; both use
these pure transitions, so "record the plan, run it, commit it" means the same everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from directstream.executor.contract import OffsetRange

from .errors import StateTooLarge
from .offset_tables import (
    legacy_offsets_from_json,
    partition_sets_from_json,
    partition_sets_to_json,
    tables_from_json,
    tables_to_json,
)
from .pinning import PinnedAttempt
from .planning import BatchPlan, DataLoss, TopicPartition, TopicRecreated
from .rate import RateState
from .scaling import ScaleState
from .topic_lifecycle import TopicRecord

LEDGER_LIMIT = 20
STATE_VERSION = 2  # per-partition numbers as tables (offset_tables)
LEGACY_STATE_VERSION = 1  # {topic: {"partition": n}} maps; still read


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """A planned batch that has not committed yet: the write-ahead log entry."""

    plan: BatchPlan
    attempt: int
    planned_at: float  # clock seconds; the scheduling delay is measured from here
    first_error: str | None = None  # the latest failure, shown while the batch is retried
    pinned: PinnedAttempt | None = None  # what every attempt runs (None: recorded by an older version)
    budget_from: int = 1  # the first attempt that counts against maxAttempts
    # Set once maxAttempts attempts failed: the fingerprint of the spec they ran under. The batch
    # stays failed, running nothing, until the spec changes (or a reset abandons it).
    exhausted: str | None = None

    @property
    def failed_attempts(self) -> int:
        """Attempts that failed since the budget began (the current attempt has not run yet)."""
        return self.attempt - self.budget_from


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    batch_id: int
    attempts: int
    partitions: int
    records: int
    bytes: int
    seconds: float
    committed_at: float
    note: str = ""  # data loss skipped, rewind, ... (human readable)
    skipped: int = 0  # poison records dropped (onError: skip)
    dead_lettered: int = 0  # poison records sent to the dead-letter topic
    executors: int = 0  # work units that ran it (0: recorded by an older version)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "batch": self.batch_id,
            "attempts": self.attempts,
            "partitions": self.partitions,
            "records": self.records,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "committedAt": round(self.committed_at, 3),
        }
        if self.note:
            doc["note"] = self.note
        if self.skipped:
            doc["skipped"] = self.skipped
        if self.dead_lettered:
            doc["deadLettered"] = self.dead_lettered
        if self.executors:
            doc["executors"] = self.executors
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> LedgerEntry:
        return cls(
            batch_id=int(doc["batch"]),
            attempts=int(doc["attempts"]),
            partitions=int(doc["partitions"]),
            records=int(doc["records"]),
            bytes=int(doc["bytes"]),
            seconds=float(doc["seconds"]),
            committed_at=float(doc["committedAt"]),
            note=str(doc.get("note", "")),
            skipped=int(doc.get("skipped", 0)),
            dead_lettered=int(doc.get("deadLettered", 0)),
            executors=int(doc.get("executors", 0)),
        )


@dataclass(frozen=True, slots=True)
class StreamState:
    committed: Mapping[TopicPartition, int] = field(default_factory=dict)
    pending: PendingBatch | None = None
    next_batch_id: int = 1
    ledger: tuple[LedgerEntry, ...] = ()
    rate: RateState = field(default_factory=RateState)
    records_total: int = 0
    skipped_total: int = 0  # poison records dropped, all time
    dead_lettered_total: int = 0  # poison records dead-lettered, all time
    applied_reset: str | None = None  # id of the last spec.reset applied
    topics: Mapping[str, TopicRecord] = field(default_factory=dict)  # one per topic read, by name
    scale: ScaleState | None = None  # a pool's executor count and why (None: not a pool)

    @property
    def is_new(self) -> bool:
        """Nothing was ever committed or planned (offsets may then come from the Kafka group)."""
        return not self.committed and self.pending is None and self.next_batch_id == 1

    def with_plan(self, plan: BatchPlan, now: float, pinned: PinnedAttempt | None = None) -> StreamState:
        """Record the plan, and what its attempts run, before anything runs (the write-ahead log)."""
        return replace(
            self,
            pending=PendingBatch(plan, attempt=1, planned_at=now, pinned=pinned),
            next_batch_id=max(self.next_batch_id, plan.batch_id + 1),
        )

    def with_pinned(self, pinned: PinnedAttempt) -> StreamState:
        """Pin a plan recorded by an older version, which did not record its attempt settings."""
        assert self.pending is not None
        return replace(self, pending=replace(self.pending, pinned=pinned))

    def with_retry(self, error: str) -> StreamState:
        """The same plan again, one attempt later."""
        assert self.pending is not None
        return replace(
            self, pending=replace(self.pending, attempt=self.pending.attempt + 1, first_error=error)
        )

    def with_exhausted(self, error: str, spec_fingerprint: str) -> StreamState:
        """maxAttempts attempts failed: nothing runs again until the spec differs."""
        assert self.pending is not None
        pending = replace(
            self.pending, attempt=self.pending.attempt + 1, first_error=error, exhausted=spec_fingerprint
        )
        return replace(self, pending=pending)

    def with_budget_renewed(self) -> StreamState:
        """The spec changed after the batch gave up: maxAttempts more attempts, same ranges."""
        assert self.pending is not None
        return replace(self, pending=replace(self.pending, budget_from=self.pending.attempt, exhausted=None))

    def with_commit(self, entry: LedgerEntry) -> StreamState:
        """The pending batch succeeded: its ends become the committed offsets."""
        assert self.pending is not None
        committed = dict(self.committed)
        committed.update(self.pending.plan.next_offsets())
        return replace(
            self,
            committed=committed,
            pending=None,
            ledger=(*self.ledger, entry)[-LEDGER_LIMIT:],
            records_total=self.records_total + entry.records,
            skipped_total=self.skipped_total + entry.skipped,
            dead_lettered_total=self.dead_lettered_total + entry.dead_lettered,
        )

    def with_reset(
        self, offsets: Mapping[TopicPartition, int], reset_id: str, note: str, now: float
    ) -> StreamState:
        """Committed offsets moved by a rewind / replay; any recorded plan is abandoned. The
        reset takes a batch id so the ledger shows where it happened."""
        committed = dict(self.committed)
        committed.update(offsets)
        entry = LedgerEntry(self.next_batch_id, 0, len(offsets), 0, 0, 0.0, now, note)
        return replace(
            self,
            committed=committed,
            pending=None,
            next_batch_id=self.next_batch_id + 1,
            ledger=(*self.ledger, entry)[-LEDGER_LIMIT:],
            applied_reset=reset_id,
        )

    def with_topics(
        self, records: Mapping[str, TopicRecord], forget: Iterable[TopicPartition] = ()
    ) -> StreamState:
        """The topics the stream reads now, and without the stored offsets that no longer apply
        (topics no longer read, the old incarnation of a recreated topic)."""
        gone = set(forget)
        committed = {tp: off for tp, off in self.committed.items() if tp not in gone}
        return replace(self, committed=committed, topics=dict(records))

    def with_recorded_plan(self, plan: BatchPlan) -> StreamState:
        """The recorded batch with what is now known about it (lost ranges); same attempt."""
        assert self.pending is not None
        return replace(self, pending=replace(self.pending, plan=plan))

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "version": STATE_VERSION,
            "committedOffsets": tables_to_json(self.committed),
            "pending": pending_to_json(self.pending, self.committed),
            "nextBatchId": self.next_batch_id,
            "history": [e.to_json() for e in self.ledger],
            "rate": self.rate.to_json(),
            "recordsTotal": self.records_total,
        }
        if self.skipped_total:
            doc["skippedTotal"] = self.skipped_total
        if self.dead_lettered_total:
            doc["deadLetteredTotal"] = self.dead_lettered_total
        if self.applied_reset is not None:
            doc["appliedReset"] = self.applied_reset
        if self.topics:
            doc["topics"] = {name: record.to_json() for name, record in sorted(self.topics.items())}
        if self.scale is not None:
            doc["scale"] = self.scale.to_json()
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StreamState:
        """State of this version, or of version 1 (offsets as ``{topic: {"partition": n}}``)."""
        version = doc.get("version")
        if version not in (LEGACY_STATE_VERSION, STATE_VERSION):
            raise ValueError(f"unsupported state version {version!r}")
        if version == LEGACY_STATE_VERSION:
            committed = legacy_offsets_from_json(doc.get("committed", {}))
            pending = legacy_pending_from_json(doc.get("pending"), committed)
        else:
            committed = tables_from_json(doc.get("committedOffsets", {}))
            pending = pending_from_json(doc.get("pending"), committed)
        return cls(
            committed=committed,
            pending=pending,
            next_batch_id=int(doc.get("nextBatchId", 1)),
            ledger=tuple(LedgerEntry.from_json(e) for e in doc.get("history", [])),
            rate=RateState.from_json(doc.get("rate")),
            records_total=int(doc.get("recordsTotal", 0)),
            skipped_total=int(doc.get("skippedTotal", 0)),
            dead_lettered_total=int(doc.get("deadLetteredTotal", 0)),
            applied_reset=doc.get("appliedReset"),
            topics={str(k): TopicRecord.from_json(v) for k, v in (doc.get("topics") or {}).items()},
            scale=ScaleState.from_json(doc.get("scale")),
        )


def state_size(state: StreamState) -> int:
    """Bytes of the state as stored (compact JSON): what the size check before a plan counts."""
    return len(json.dumps(state.to_json(), separators=(",", ":")))


def check_state_size(state: StreamState, plan: BatchPlan, limit: int) -> None:
    """Refuse to record ``plan`` (in ``state``) when the status could not hold it (etcd's object limit)."""
    size = state_size(state)
    if size > limit:
        raise StateTooLarge(
            f"batch {plan.batch_id} not recorded: with its plan over {len(plan.ranges)} partitions the "
            f"stream's state would be {size:,} bytes, over the {limit:,} bytes that fit safely in the "
            "DirectStream's status (etcd stores objects up to 1.5 MiB); committed offsets unchanged. Read "
            "fewer partitions per stream: split topics / topicPattern over several DirectStreams",
            size,
            limit,
        )


def pending_to_json(
    pending: PendingBatch | None, committed: Mapping[TopicPartition, int]
) -> dict[str, Any] | None:
    """The recorded plan, compactly: per topic a table of each range's record count
    (``until - from``), and ``from`` only where it is not the committed offset (new partitions,
    data loss); the work layout is not stored but derived again, checked by its digest."""
    if pending is None:
        return None
    plan = pending.plan
    starts = {(r.topic, r.partition): r.from_offset for r in plan.ranges}
    doc: dict[str, Any] = {
        "batch": plan.batch_id,
        "attempt": pending.attempt,
        "plannedAt": pending.planned_at,
        "counts": tables_to_json({(r.topic, r.partition): r.count for r in plan.ranges}, "counts"),
        "starts": tables_to_json({tp: f for tp, f in starts.items() if committed.get(tp) != f}),
        "rateCapped": plan.rate_capped,
    }
    _common_to_json(doc, pending)
    if plan.new_partitions:
        doc["firstRead"] = partition_sets_to_json(plan.new_partitions)
    if pending.pinned is not None:
        doc["pinned"] = pending.pinned.stored_json()
    return doc


def _common_to_json(doc: dict[str, Any], pending: PendingBatch) -> None:
    plan = pending.plan
    if plan.data_loss:
        doc["dataLoss"] = [_loss_to_json(x) for x in plan.data_loss]
    if plan.recreated:
        doc["recreated"] = [
            {
                "topic": x.topic,
                "previousId": x.previous_id,
                "id": x.id,
                "unread": x.unread,
                "offsets": {str(p): off for p, off in x.previous.items()},
            }
            for x in plan.recreated
        ]
    if pending.first_error:
        doc["lastError"] = pending.first_error
    if pending.budget_from != 1:
        doc["budgetFrom"] = pending.budget_from
    if pending.exhausted is not None:
        doc["exhausted"] = pending.exhausted


def pending_from_json(
    doc: Mapping[str, Any] | None, committed: Mapping[TopicPartition, int]
) -> PendingBatch | None:
    if not doc:
        return None
    counts = tables_from_json(doc["counts"], "counts")
    explicit_from = tables_from_json(doc.get("starts", {}))
    ranges = []
    for tp, count in sorted(counts.items()):
        start = explicit_from.get(tp, committed.get(tp))
        if start is None:
            raise ValueError(f"recorded plan has no start for {tp[0]}[{tp[1]}]")
        if count < 0:
            raise ValueError(f"recorded plan has a negative count for {tp[0]}[{tp[1]}]")
        ranges.append(OffsetRange(tp[0], tp[1], start, start + count))
    new_partitions = tuple(partition_sets_from_json(doc.get("firstRead", {})))
    return _pending(doc, tuple(ranges), new_partitions)


def legacy_pending_from_json(
    doc: Mapping[str, Any] | None, committed: Mapping[TopicPartition, int]
) -> PendingBatch | None:
    """A plan recorded by state version 1: ``until`` and ``from`` as ``{topic: {"p": n}}``."""
    if not doc:
        return None
    until = legacy_offsets_from_json(doc["until"])
    explicit_from = legacy_offsets_from_json(doc.get("from", {}))
    ranges = []
    for tp, end in sorted(until.items()):
        start = explicit_from.get(tp, committed.get(tp))
        if start is None:
            raise ValueError(f"recorded plan has no start for {tp[0]}[{tp[1]}]")
        ranges.append(OffsetRange(tp[0], tp[1], start, end))
    new_partitions = tuple(sorted(legacy_offsets_from_json(doc.get("newPartitions", {}))))
    return _pending(doc, tuple(ranges), new_partitions)


def _pending(
    doc: Mapping[str, Any], ranges: tuple[OffsetRange, ...], new_partitions: tuple[TopicPartition, ...]
) -> PendingBatch:
    plan = BatchPlan(
        batch_id=int(doc["batch"]),
        ranges=ranges,
        data_loss=tuple(_loss_from_json(x) for x in doc.get("dataLoss", [])),
        new_partitions=new_partitions,
        rate_capped=bool(doc.get("rateCapped", False)),
        recreated=tuple(
            TopicRecreated(
                str(x["topic"]),
                str(x["previousId"]),
                str(x["id"]),
                {int(p): int(off) for p, off in x.get("offsets", {}).items()},
                int(x.get("unread", 0)),
            )
            for x in doc.get("recreated", [])
        ),
    )
    pinned = PinnedAttempt.from_json(doc["pinned"], plan) if doc.get("pinned") else None
    return PendingBatch(
        plan,
        int(doc["attempt"]),
        float(doc["plannedAt"]),
        doc.get("lastError"),
        pinned=pinned,
        budget_from=int(doc.get("budgetFrom", 1)),
        exhausted=doc.get("exhausted"),
    )


def _loss_to_json(loss: DataLoss) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "topic": loss.topic,
        "partition": loss.partition,
        "expected": loss.expected,
        "resumedAt": loss.resumed_at,
        "reason": loss.reason,
    }
    if loss.recorded is not None:
        doc["recorded"] = [loss.recorded.from_offset, loss.recorded.until_offset]
    return doc


def _loss_from_json(doc: Mapping[str, Any]) -> DataLoss:
    topic, partition = str(doc["topic"]), int(doc["partition"])
    recorded = doc.get("recorded")
    return DataLoss(
        topic,
        partition,
        int(doc["expected"]),
        int(doc["resumedAt"]),
        str(doc["reason"]),
        OffsetRange(topic, partition, int(recorded[0]), int(recorded[1])) if recorded else None,
    )
