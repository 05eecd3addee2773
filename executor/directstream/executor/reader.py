"""Read exact offset ranges ``[from, until)`` with one assigned (never subscribed) consumer.

Gap safety: compaction, transaction markers and aborted records (under read_committed) leave
offsets that are never delivered, so the reader never waits for the record at ``until - 1``.
A partition is finished as soon as any of these holds:

- a delivered record has ``offset + 1 >= until`` (records at ``>= until`` are dropped);
- a partition-EOF event reports an end offset ``>= until`` (everything below it was delivered);
- ``consumer.position()`` (the next offset the app would see) is ``>= until``.

Finished partitions are paused. ``auto.offset.reset=error`` turns a ``from`` that retention
already deleted into an error naming the range, instead of a silent jump.

While it reads, the reader raises the garbage collector's young-generation threshold: every
``Message`` is a GC-tracked object, so at the default (700 allocations) each 10,000-record chunk
set off about 14 young collections and, through them, full collections of everything alive, which
cost about a quarter of the ``count`` path's CPU time. The chunk's records are freed by reference
counting before the raised threshold is reached; cyclic garbage (user code) is still collected.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from directstream.executor.contract import OffsetRange, WorkUnit
from directstream.executor.errors import ConfigurationError, RangeFailedError, StopRequestedError
from directstream.executor.records import KafkaRecord, message_offset

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 10_000
# Young-generation GC threshold while reading: well above a chunk's allocations (see the docstring).
READ_GC_THRESHOLD = 10 * DEFAULT_CHUNK_SIZE
_message_error = Message.error
_message_partition = Message.partition
_TRANSIENT_ERRORS = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._RESOLVE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
}
_OUT_OF_RANGE_ERRORS = {KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET}


def _topic_partition(message: Message) -> tuple[str | None, int | None]:
    return (message.topic(), message.partition())


def consumer_config(unit: WorkUnit, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The librdkafka settings for ``unit``; secrets come from the env vars named in ``secret_env``."""
    return unit.kafka.consumer_config(
        group_id=f"{unit.stream}-executor",
        client_id=f"{unit.stream}-executor-{unit.batch_id}-{unit.index}",
        environ=environ,
    )


@dataclass(frozen=True, slots=True)
class ReaderOptions:
    chunk_size: int = DEFAULT_CHUNK_SIZE
    poll_timeout: float = 0.5
    stall_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class ReadChunk:
    """Records of one range in offset order; ``done`` means the range is complete after them."""

    range: OffsetRange
    records: Sequence[KafkaRecord]
    done: bool


class _PartitionState:
    __slots__ = ("position", "progress_at", "range", "until")

    def __init__(self, range_: OffsetRange, start: int, now: float) -> None:
        self.range = range_
        self.until = range_.until_offset
        self.position = start  # next offset the reader expects
        self.progress_at = now


@contextmanager
def _young_gc_threshold(threshold: int) -> Iterator[None]:
    """Raise (never lower) the young-generation threshold for the block; restore it after.
    A threshold of 0 (automatic collection off) stays 0."""
    previous = gc.get_threshold()
    if previous[0]:
        gc.set_threshold(max(threshold, previous[0]), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def check_ranges(ranges: Sequence[OffsetRange]) -> None:
    """One consumer reads one position per partition, so a unit holds each partition once."""
    seen: set[tuple[str, int]] = set()
    for range_ in ranges:
        key = (range_.topic, range_.partition)
        if key in seen:
            raise ConfigurationError(f"work unit lists {range_.topic}[{range_.partition}] more than once")
        seen.add(key)


class RangeReader:
    """Yields :class:`ReadChunk` s for every range of a unit until all are complete."""

    def __init__(
        self,
        unit: WorkUnit,
        options: ReaderOptions | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        consumer_factory: Callable[[dict[str, Any]], Any] = Consumer,
    ) -> None:
        check_ranges(unit.ranges)
        self._unit = unit
        self._options = options or ReaderOptions()
        self._should_stop = should_stop
        self._consumer_factory = consumer_factory

    def chunks(self) -> Iterator[ReadChunk]:
        # A range the driver found lost up to its end (read_from) has nothing left to read.
        start_of = self._unit.start_of
        pending = [r for r in self._unit.ranges if start_of(r) < r.until_offset]
        for range_ in self._unit.ranges:
            if start_of(range_) >= range_.until_offset:  # complete without touching Kafka
                yield ReadChunk(range_, (), done=True)
        if not pending:
            return
        try:
            consumer = self._consumer_factory(consumer_config(self._unit))
        except KafkaException as exc:
            raise ConfigurationError(f"invalid Kafka client configuration: {exc}") from exc
        try:
            with _young_gc_threshold(max(READ_GC_THRESHOLD, 10 * self._options.chunk_size)):
                yield from self._read(consumer, pending)
        finally:
            consumer.close()

    def _read(self, consumer: Any, ranges: list[OffsetRange]) -> Iterator[ReadChunk]:
        now = time.monotonic()
        single_topic = len({r.topic for r in ranges}) == 1
        start_of = self._unit.start_of
        states: dict[Any, _PartitionState] = {
            (r.partition if single_topic else (r.topic, r.partition)): _PartitionState(r, start_of(r), now)
            for r in ranges
        }
        group_key = _message_partition if single_topic else _topic_partition
        consumer.assign([TopicPartition(r.topic, r.partition, start_of(r)) for r in ranges])
        chunk_size, timeout = self._options.chunk_size, self._options.poll_timeout
        while states:
            if self._should_stop():
                raise StopRequestedError("stop requested")
            # consume() waits until it has num_messages or the timeout passes: never ask for
            # more than the offsets still open, or a small range would always wait the timeout.
            remaining = sum(state.until - state.position for state in states.values())
            messages = consumer.consume(num_messages=max(1, min(chunk_size, remaining)), timeout=timeout)
            now = time.monotonic()
            ends: dict[Any, int] = {}
            if messages and any(map(_message_error, messages)):
                messages = self._split_errors(messages, states, group_key, ends)
            finished: list[_PartitionState] = []
            # Within one partition the consume order is offset order, so each run is sorted.
            for key, run in groupby(messages, group_key):
                state = states.get(key)
                if state is None:
                    continue  # a record fetched before its partition finished and was paused
                records: list[Any] = list(run)  # Messages
                last: int = records[-1].offset()
                if last + 1 >= state.until:
                    if last >= state.until:
                        records = records[: bisect_left(records, state.until, key=message_offset)]
                    finished.append(state)
                    del states[key]
                state.position = last + 1
                state.progress_at = now
                if records:
                    yield ReadChunk(state.range, records, done=False)
            for key, end in ends.items():
                state = states.get(key)
                if state is not None and end >= state.until:
                    finished.append(state)
                    del states[key]
            if len(messages) < min(chunk_size, remaining) and states:
                finished.extend(self._finished_by_position(consumer, states, now))
            if finished:
                consumer.pause([TopicPartition(s.range.topic, s.range.partition) for s in finished])
                for state in finished:
                    yield ReadChunk(state.range, (), done=True)
            self._check_stall(states, now)

    def _split_errors(
        self,
        messages: list[Message],
        states: dict[Any, _PartitionState],
        group_key: Any,
        ends: dict[Any, int],
    ) -> list[Message]:
        """Keep the records; note partition ends in ``ends``; raise on errors that end the unit."""
        records: list[Message] = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
                continue
            code = error.code()
            key = group_key(message) if message.partition() is not None else None
            if code == KafkaError._PARTITION_EOF:
                ends[key] = max(ends.get(key, -1), message.offset() or 0)
                continue
            state = states.get(key)
            if code in _OUT_OF_RANGE_ERRORS and state is not None:
                reported = message.offset()
                offset = reported if reported is not None and reported >= 0 else state.position
                raise RangeFailedError(
                    state.range,
                    offset,
                    f"offset {offset} is no longer (or not yet) in the log; retention may have deleted it: "
                    f"{error.str()}",
                )
            if not error.fatal() and (error.retriable() or code in _TRANSIENT_ERRORS):
                log.warning("transient Kafka error (retrying): %s", error.str())
                continue
            if state is None:
                state = min(states.values(), key=lambda s: s.range)
            raise RangeFailedError(state.range, state.position, f"Kafka error {error.name()}: {error.str()}")
        return records

    @staticmethod
    def _finished_by_position(
        consumer: Any, states: dict[Any, _PartitionState], now: float
    ) -> list[_PartitionState]:
        finished = []
        keys = list(states)
        positions = consumer.position(
            [TopicPartition(states[k].range.topic, states[k].range.partition) for k in keys]
        )
        for key, tp in zip(keys, positions, strict=True):
            state = states[key]
            if tp.offset > state.position:
                state.position = tp.offset
                state.progress_at = now
            if tp.offset >= state.until:
                finished.append(state)
                del states[key]
        return finished

    def _check_stall(self, states: dict[Any, _PartitionState], now: float) -> None:
        limit = self._options.stall_timeout
        for state in states.values():
            if now - state.progress_at > limit:
                raise RangeFailedError(
                    state.range,
                    state.position,
                    f"no progress for {limit:g}s; position reached {state.position} of until {state.until}",
                )
