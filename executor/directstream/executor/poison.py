"""Poison records: decoding before the processor, and ``onError: fail | skip | deadLetter``.

:class:`PoisonGuard` wraps the sink's processor. Per chunk it decodes every record
(``processor.decode``); a record that does not decode, or that a python processor rejects with
:class:`~directstream.executor.PoisonRecord`, is poison:

- ``fail``: the range fails at the record's offset (message: topic, partition, offset, reason);
- ``skip``: dropped and counted;
- ``deadLetter``: the original key and value bytes go to the dead-letter topic with the
  ``directstream.*`` headers, counted; the rest of the chunk goes on to the sink.

Dead letters are written in a Kafka transaction per work unit with a marker, exactly as the
transactional kafka sink writes its output (:mod:`.processors.kafka_transactional`): with that sink
they go through its producer, in the same transaction as the outputs; with any other sink through a
transactional producer of their own (``transactional.id`` ``<prefix>-<unit index>``, default prefix
``directstream-<stream>-dlq``). Either way a replayed range never writes its dead letters twice for
``read_committed`` readers. Everything else (a sink's connection dropping) is not poison: the unit
fails and retries as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from directstream.executor.contract import OffsetRange, PoisonPolicy, WorkUnit
from directstream.executor.contract.poison import DEAD_LETTER_HEADERS, DeadLetterSettings
from directstream.executor.decoding import DecodeError, RecordDecoder, original
from directstream.executor.errors import RangeFailedError
from directstream.executor.processors.base import Processor
from directstream.executor.processors.kafka_transactional import TransactionalKafkaProcessor
from directstream.executor.records import Headers, KafkaRecord

ERROR_HEADER_LIMIT = 2000  # characters of the error kept in directstream.error
DECODED_SINKS = frozenset({"jsonl", "stdout", "python"})  # the others receive the original messages


class DeadLetter:
    """A poison record as it is produced to the dead-letter topic (a ``KafkaRecord``)."""

    __slots__ = ("_headers", "_record")

    def __init__(self, record: KafkaRecord, headers: list[tuple[str, str | bytes | None]]) -> None:
        self._record, self._headers = record, headers

    def topic(self) -> str | None:
        return self._record.topic()

    def partition(self) -> int | None:
        return self._record.partition()

    def offset(self) -> int | None:
        return self._record.offset()

    def key(self) -> bytes | None:
        return self._record.key()

    def value(self) -> bytes | None:
        return self._record.value()

    def headers(self) -> Headers | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return self._record.timestamp()


def dead_letter(record: KafkaRecord, range_: OffsetRange, unit: WorkUnit, error: str) -> DeadLetter:
    """``record``'s original bytes and headers, plus the ``directstream.*`` headers."""
    message = original(record)
    own = message.headers() or []
    headers: list[tuple[str, str | bytes | None]] = list(own.items() if isinstance(own, dict) else own)
    offset = message.offset()
    values = (  # in the order of DEAD_LETTER_HEADERS
        error[:ERROR_HEADER_LIMIT],
        unit.stream,
        range_.topic,
        str(range_.partition),
        str(range_.from_offset if offset is None else offset),
        str(unit.batch_id),
        str(unit.attempt),
    )
    headers.extend((name, value.encode()) for name, value in zip(DEAD_LETTER_HEADERS, values, strict=True))
    return DeadLetter(message, headers)


def own_dead_letter_writer(settings: DeadLetterSettings, unit: WorkUnit) -> TransactionalKafkaProcessor:
    """A transactional producer of the dead letters alone, with its own ids and marker group."""
    options: dict[str, Any] = {
        "topic": settings.topic,
        "transactional": True,
        "transactionalIdPrefix": settings.transactional_id_prefix or f"directstream-{unit.stream}-dlq",
        "config": {"linger.ms": 5, **settings.config},
    }
    if settings.bootstrap_servers is not None:
        options["bootstrapServers"] = settings.bootstrap_servers
    return TransactionalKafkaProcessor(options, unit)


class PoisonGuard:
    """The processor the runner drives when a poison policy is set; counts what it dropped."""

    def __init__(self, inner: Processor, policy: PoisonPolicy, unit: WorkUnit, sink: str) -> None:
        self.inner, self.policy, self.unit = inner, policy, unit
        self.skipped = self.dead_lettered = 0
        self._decoder = RecordDecoder(policy) if policy.decodes else None
        self._pass_decoded = sink in DECODED_SINKS
        self._writer: TransactionalKafkaProcessor | None = None
        self._shared = False
        if policy.on_error == "deadLetter":
            assert policy.dead_letter is not None
            self._topic = policy.dead_letter.topic
            if isinstance(inner, TransactionalKafkaProcessor):
                self._writer, self._shared = inner, True  # the outputs' own transaction
            else:
                self._writer = own_dead_letter_writer(policy.dead_letter, unit)
        if hasattr(inner, "on_poison"):
            inner.on_poison = self.poison  # python processors: PoisonRecord from process_record

    def poison(self, record: KafkaRecord, range_: OffsetRange, reason: str) -> None:
        """Apply the policy to one poison record."""
        message = original(record)
        offset = message.offset()
        at = range_.from_offset if offset is None else offset
        if self.policy.on_error == "fail":
            raise RangeFailedError(
                range_, at, f"poison record at {range_.topic}[{range_.partition}] offset {at}: {reason}"
            )
        if self.policy.on_error == "skip":
            self.skipped += 1
            return
        assert self._writer is not None
        self._writer.produce_records([dead_letter(message, range_, self.unit, reason)], range_, self._topic)
        self.dead_lettered += 1

    # -- the processor protocol ------------------------------------------------------------------

    def open_range(self, range_: OffsetRange) -> None:
        self.inner.open_range(range_)
        if self._writer is not None and not self._shared:
            self._writer.open_range(range_)

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        decoder = self._decoder
        if decoder is None:
            self.inner.process(records, range_)
            return
        good: list[Any] = []
        for record in records:
            try:
                decoded = decoder.decode(record)
            except DecodeError as exc:
                self.poison(record, range_, str(exc))
                continue
            good.append(decoded if self._pass_decoded else record)
        if good:
            self.inner.process(good, range_)

    def close_range(self, range_: OffsetRange) -> None:
        self.inner.close_range(range_)
        if self._writer is not None and not self._shared:
            self._writer.close_range(range_)  # the last range commits the dead letters' transaction

    def abort_range(self, range_: OffsetRange) -> None:
        try:
            self.inner.abort_range(range_)
        finally:
            if self._writer is not None and not self._shared:
                self._writer.abort_range(range_)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if self._writer is not None and not self._shared:
                self._writer.close()


def guarded(processor: Processor, policy: PoisonPolicy, unit: WorkUnit, sink: str) -> Processor:
    """``processor`` itself under the default policy (nothing to decode, ``fail``), else guarded."""
    if not policy.decodes and policy.on_error == "fail":
        return processor
    return PoisonGuard(processor, policy, unit, sink)
