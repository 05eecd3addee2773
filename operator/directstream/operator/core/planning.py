"""Batch planning: a pure function from (spec, committed offsets, watermarks) to offset ranges.

This is the driver's half of the direct model. Everything that decides *which* offsets a
batch reads lives here, so a retried or resumed batch can be checked against it and the
invariants (contiguous, never past latest, rate caps respected) can be property-tested.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from directstream.executor.contract import OffsetRange, PermanentError

from .spec import ResetSpec, StreamSpec
from .spec_fields import INT64_MAX

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Watermarks:
    """Log start offset and the latest readable offset (the LSO under read_committed)."""

    earliest: int
    latest: int


@dataclass(frozen=True, slots=True)
class DataLoss:
    """Offsets a batch could not read: ``[expected, resumed_at)`` no longer exist.

    Found when planning (``recorded`` is None: ``expected`` is the committed offset), or in a
    plan recorded earlier whose range can no longer be read as recorded (``recorded`` is that
    range: retention deleted its start, or its topic was deleted or recreated since)."""

    topic: str
    partition: int
    expected: int  # where reading should have started (the committed offset, or the range's from)
    resumed_at: int  # where reading can resume (the log start, or earliest after a reset)
    # "deleted" (below log start), "ahead-of-log" (committed > latest); in a recorded range also
    # "topic-deleted" and "topic-recreated" (the range's records are gone: resumed_at is its end)
    reason: str
    recorded: OffsetRange | None = None

    @property
    def lost(self) -> int:
        return max(0, self.resumed_at - self.expected)

    def __str__(self) -> str:
        if self.recorded is not None:
            where = f"recorded range {self.recorded}"
            if self.reason == "topic-deleted":
                return f"{where}: topic {self.topic} was deleted before it was read ({self.lost} offsets)"
            if self.reason == "topic-recreated":
                return (
                    f"{where}: topic {self.topic} was deleted and recreated before it was read "
                    f"({self.lost} offsets of the old topic)"
                )
            return (
                f"{where}: offsets {self.expected}..{self.resumed_at} ({self.lost} records) were deleted "
                "before they were read"
            )
        if self.reason == "ahead-of-log":
            return (
                f"{self.topic}[{self.partition}]: committed offset {self.expected} is past the end of "
                f"the log ({self.resumed_at} after reset); the topic was truncated or recreated"
            )
        return (
            f"{self.topic}[{self.partition}] offsets {self.expected}..{self.resumed_at} "
            f"({self.lost} records) were deleted before they were read (log now starts at {self.resumed_at})"
        )


@dataclass(frozen=True, slots=True)
class TopicRecreated:
    """A topic the stream read was deleted and created again under the same name (a new topic
    id): its committed offsets belong to the old topic, whose unread records are gone."""

    topic: str
    previous_id: str
    id: str
    previous: Mapping[int, int]  # the old topic's committed offsets, by partition
    unread: int  # records the old topic held past them when the stream last planned

    @property
    def lost(self) -> int:
        return self.unread

    def __str__(self) -> str:
        return (
            f"topic {self.topic} was deleted and recreated (topic id {self.previous_id}, now {self.id}): "
            f"its committed offsets ({len(self.previous)} partition(s)) belong to the old topic; "
            f"{self.unread} records of the old topic were never read"
        )


class DataLossError(PermanentError):
    """``onDataLoss: fail`` and some committed (or recorded) offsets no longer exist in the log,
    or a topic was recreated under the stream."""

    def __init__(self, losses: tuple[DataLoss, ...], recreated: tuple[TopicRecreated, ...] = ()) -> None:
        self.losses = losses
        self.recreated = recreated
        found = [str(x) for x in recreated] + [str(loss) for loss in losses]
        super().__init__("data loss: " + "; ".join(found))


@dataclass(frozen=True, slots=True)
class PlanInputs:
    committed: Mapping[TopicPartition, int]
    watermarks: Mapping[TopicPartition, Watermarks]  # every partition the stream reads now
    # Offsets resolved for ``startingOffsets: {timestamp}`` (adapter: offsets_for_times).
    timestamp_offsets: Mapping[TopicPartition, int] = field(default_factory=dict)
    # Records/s for the whole stream from the backpressure controller; None = no estimate.
    backpressure_rate: float | None = None
    first_batch: bool = False
    # Hard end per partition (``stopAt: latest`` / ``--until-caught-up``); None = no end.
    stop_offsets: Mapping[TopicPartition, int] | None = None
    # Topics recreated since their offsets were committed: read from their start (or refused).
    recreated: tuple[TopicRecreated, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """The ranges of one batch: one per partition, including empty ones (a position to record)."""

    batch_id: int
    ranges: tuple[OffsetRange, ...]
    data_loss: tuple[DataLoss, ...] = ()
    new_partitions: tuple[TopicPartition, ...] = ()
    rate_capped: bool = False  # some range stopped short of latest: there is a backlog
    recreated: tuple[TopicRecreated, ...] = ()  # topics read from the start of their new incarnation

    @property
    def record_ranges(self) -> tuple[OffsetRange, ...]:
        return tuple(r for r in self.ranges if r.count > 0)

    @property
    def offsets(self) -> int:
        return sum(r.count for r in self.ranges)

    def next_offsets(self) -> dict[TopicPartition, int]:
        """What is committed once the batch succeeds."""
        return {(r.topic, r.partition): r.until_offset for r in self.ranges}

    def changes_positions(self, committed: Mapping[TopicPartition, int]) -> bool:
        return any(committed.get(tp) != until for tp, until in self.next_offsets().items())


def starting_offset(spec: StreamSpec, tp: TopicPartition, marks: Watermarks, inputs: PlanInputs) -> int:
    """Where a partition with nothing committed starts.

    ``startingOffsets`` applies to the partitions present at the first batch. A partition
    that appears later (new partition or new matching topic) starts at its earliest offset,
    as in Spark, because every record in it was written after the stream started; an explicit
    offset for it still wins.
    """
    start = spec.starting_offsets
    topic, partition = tp
    if start.kind == "offsets":
        explicit = start.offsets.get(topic, {}).get(partition)
        if explicit is not None:
            return min(max(explicit, marks.earliest), marks.latest)
        return marks.earliest
    if not inputs.first_batch:
        return marks.earliest
    if start.kind == "latest":
        return marks.latest
    if start.kind == "timestamp":
        resolved = inputs.timestamp_offsets.get(tp, marks.latest)
        return min(max(resolved, marks.earliest), marks.latest)
    return marks.earliest


def per_partition_caps(
    spec: StreamSpec, inputs: PlanInputs, lags: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """The most records each partition may contribute to this batch (absent = unlimited)."""
    interval = spec.batch_interval_seconds
    caps: dict[TopicPartition, int] = {}
    limit = spec.rate.max_per_partition
    if limit > 0:
        # Never zero, or a very low rate would stall the stream.
        caps = dict.fromkeys(lags, max(1, _whole_records(limit * interval)))
    bp = spec.rate.backpressure
    if bp.enabled and inputs.backpressure_rate is not None:
        # Spark's split of an estimated total rate: shares proportional to lag, with a floor.
        total_lag = sum(lags.values())
        floor = max(1, _whole_records(bp.min_per_partition * interval))
        for tp, lag in lags.items():
            share = lag / total_lag * inputs.backpressure_rate * interval if total_lag else 0.0
            cap = max(floor, _whole_records(share))
            caps[tp] = min(caps.get(tp, cap), cap)
    if inputs.first_batch and spec.rate.first_batch_max_records > 0:
        shares = proportional_shares(spec.rate.first_batch_max_records, lags)
        for tp, share in shares.items():
            caps[tp] = min(caps.get(tp, share), share)
    return caps


def _whole_records(records: float) -> int:
    """A rate times an interval as a record count; a huge interval (a year) caps at int64, never
    ``floor(inf)``."""
    return INT64_MAX if not records < INT64_MAX else math.floor(records)


def proportional_shares(total: int, weights: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
    """Split ``total`` into integer shares proportional to ``weights``, summing to at most
    ``total``, each at most its weight (largest-remainder method, deterministic order)."""
    weight_sum = sum(weights.values())
    if weight_sum <= total:
        return dict(weights)
    exact = {tp: total * w / weight_sum for tp, w in weights.items()}
    shares = {tp: math.floor(x) for tp, x in exact.items()}
    leftover = total - sum(shares.values())
    by_remainder = sorted(exact, key=lambda tp: (-(exact[tp] - shares[tp]), tp))
    for tp in by_remainder[:leftover]:
        shares[tp] += 1
    return shares


def plan_batch(spec: StreamSpec, inputs: PlanInputs, batch_id: int) -> BatchPlan:
    """Fix the ``[from, until)`` of every partition for batch ``batch_id``.

    Raises ``DataLossError`` when committed offsets were deleted (or are past the log), or a
    topic was recreated, and ``onDataLoss`` is ``fail``; the committed offsets are then left
    exactly as they were. Under ``earliest`` a recreated topic is read from its start.
    """
    # Two passes over the partitions (this runs per batch for up to thousands of them).
    bounds: dict[TopicPartition, tuple[int, int]] = {}  # [start, end) before rate caps
    losses: list[DataLoss] = []
    new: list[TopicPartition] = []
    stop = inputs.stop_offsets
    recreated = {r.topic for r in inputs.recreated}
    for tp in sorted(inputs.watermarks):
        marks = inputs.watermarks[tp]
        committed = inputs.committed.get(tp)
        if tp[0] in recreated:
            start = marks.earliest  # the old topic's offsets say nothing about the new one
        elif committed is None:
            start = starting_offset(spec, tp, marks, inputs)
            new.append(tp)
        elif marks.earliest <= committed <= marks.latest:
            start = committed
        else:
            reason = "deleted" if committed < marks.earliest else "ahead-of-log"
            losses.append(DataLoss(tp[0], tp[1], committed, marks.earliest, reason))
            start = marks.earliest
        end = marks.latest if stop is None else min(marks.latest, max(start, stop.get(tp, start)))
        bounds[tp] = (start, end)
    if (losses or inputs.recreated) and spec.on_data_loss == "fail":
        raise DataLossError(tuple(losses), inputs.recreated)

    caps = per_partition_caps(spec, inputs, {tp: end - start for tp, (start, end) in bounds.items()})
    capped = False
    ranges = []
    for tp, (start, end) in bounds.items():
        cap = caps.get(tp)
        until = end
        if cap is not None and end - start > cap:
            until = start + cap
            capped = True
        ranges.append(OffsetRange(tp[0], tp[1], start, until))
    return BatchPlan(batch_id, tuple(ranges), tuple(losses), tuple(new), capped, inputs.recreated)


def reset_offsets(
    reset: ResetSpec,
    watermarks: Mapping[TopicPartition, Watermarks],
    timestamp_offsets: Mapping[TopicPartition, int],
    committed: Mapping[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """Where a rewind / replay puts each partition. ``offsets`` moves only the partitions it
    names; the other kinds move every partition the stream reads. Targets are clamped into
    the log so the next batch starts on a readable offset."""
    target: dict[TopicPartition, int] = {}
    for tp, marks in sorted(watermarks.items()):
        if reset.to == "earliest":
            offset = marks.earliest
        elif reset.to == "latest":
            offset = marks.latest
        elif reset.to == "timestamp":
            offset = timestamp_offsets.get(tp, marks.latest)
        else:
            explicit = reset.offsets.get(tp[0], {}).get(tp[1])
            if explicit is None:
                continue
            offset = explicit
        target[tp] = min(max(offset, marks.earliest), marks.latest)
    return target


def split_work(
    ranges: tuple[OffsetRange, ...], max_units: int, max_records: int = 0
) -> tuple[tuple[OffsetRange, ...], ...]:
    """Split a plan's non-empty ranges into at most ``max_units`` work units balanced by
    record count. A range above ``max_records`` (0 = never) is cut into near-equal pieces
    first, so a hot partition can be read by several executors; never into more pieces than
    there are units, because an executor reads each partition once and so takes at most one
    piece of it. Deterministic: a retried batch gets the same units."""
    pieces: list[OffsetRange] = []
    cut: set[tuple[str, int]] = set()  # partitions read by more than one executor
    for rng in ranges:
        count = rng.until_offset - rng.from_offset
        if count <= 0:
            continue
        n = min(math.ceil(count / max_records), max_units) if max_records > 0 else 1
        if n == 1:
            pieces.append(rng)
            continue
        cut.add((rng.topic, rng.partition))
        bounds = [rng.from_offset + (count * i) // n for i in range(n + 1)]
        pieces.extend(OffsetRange(rng.topic, rng.partition, lo, hi) for lo, hi in itertools.pairwise(bounds))
    if not pieces:
        return ()
    n_units = min(max_units, len(pieces))
    units: list[list[OffsetRange]] = [[] for _ in range(n_units)]
    holds: list[set[tuple[str, int]]] = [set() for _ in range(n_units)]
    least_loaded = [(0, i) for i in range(n_units)]  # a heap of (records, unit index)
    # Longest-processing-time-first: the largest piece to the least loaded unit that does not
    # already read its partition (one always exists: a partition has at most n_units pieces).
    pieces.sort(key=lambda r: (r.from_offset - r.until_offset, r))
    for piece in pieces:
        tp = (piece.topic, piece.partition)
        load, target = least_loaded[0]
        if tp not in cut:
            units[target].append(piece)
            heapq.heapreplace(least_loaded, (load + piece.until_offset - piece.from_offset, target))
            continue
        skipped = []
        load, target = heapq.heappop(least_loaded)
        while tp in holds[target]:
            skipped.append((load, target))
            load, target = heapq.heappop(least_loaded)
        units[target].append(piece)
        holds[target].add(tp)
        heapq.heappush(least_loaded, (load + piece.count, target))
        for entry in skipped:
            heapq.heappush(least_loaded, entry)
    return tuple(tuple(sorted(unit)) for unit in units)
