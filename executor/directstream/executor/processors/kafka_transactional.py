"""The ``kafka`` sink with ``transactional: true``: a unit's output appears exactly once.

One Kafka transaction per work unit holds the unit's output records **and a marker**: through
``send_offsets_to_transaction`` the transaction commits, for every input range, the range's
``until`` (with metadata ``"<batch>:<from>"``) to the *output group*
``<prefix>-output-<unit index>`` under the input topic-partition. Records and marker commit or
abort together, so the marker says exactly which input ranges are in the output.

- ``transactional.id`` is ``<prefix>-<unit index>`` (``prefix`` = ``options.transactionalIdPrefix``,
  default ``directstream-<stream>``): equal across attempts of a unit, so ``init_transactions`` of a
  retry fences its zombie predecessor and aborts whatever that one left open. The ids are reused
  from batch to batch, so the broker keeps a bounded number of them.
- Before producing, the sink reads the output group's committed offsets (``read_committed``
  semantics: pending transactional offsets are waited for). A range whose marker is exactly this
  batch's ``[from, until)`` is already in the output (the executor committed, then died before
  reporting): it is read but not produced again, and the unit reports success. A marker of a later
  batch means a stale attempt: the range fails. A marker of this batch with another range means the
  units differ between attempts (they must not): the range fails rather than risk duplicates.
- The group is per unit index because a hot partition may be split across units: each unit holds
  at most one piece of a partition per batch, so its marker is never overwritten by another
  piece's.

Other options as for the plain ``kafka`` sink. Downstream consumers must read with
``isolation.level=read_committed``. ``transaction.timeout.ms`` defaults to 10 minutes (the broker
caps it at ``transaction.max.timeout.ms``, 15 minutes by default): a unit must finish within it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from directstream.executor.contract import OffsetRange, WorkUnit
from directstream.executor.contract.kafka import CONNECTION_PREFIXES
from directstream.executor.errors import ConfigurationError, RangeFailedError
from directstream.executor.processors.base import Processor
from directstream.executor.processors.kafka_sink import FLUSH_TIMEOUT_SECONDS, KafkaProcessor, producer_config
from directstream.executor.records import KafkaRecord

log = logging.getLogger(__name__)
TRANSACTION_TIMEOUT_MS = 600_000
KAFKA_TIMEOUT_SECONDS = 60.0
_NO_OFFSET = -1001  # OFFSET_INVALID: nothing committed for the partition


def kafka_processor(options: Mapping[str, Any], unit: WorkUnit) -> Processor:
    """The ``kafka`` sink: transactional when ``options.transactional`` is true."""
    transactional = options.get("transactional", False)
    if not isinstance(transactional, bool):
        raise ConfigurationError("kafka sink options.transactional must be true or false")
    return TransactionalKafkaProcessor(options, unit) if transactional else KafkaProcessor(options, unit)


def _marker(batch_id: int, range_: OffsetRange) -> str:
    return f"{batch_id}:{range_.from_offset}"


class TransactionalKafkaProcessor(KafkaProcessor):
    def __init__(self, options: Mapping[str, Any], unit: WorkUnit) -> None:
        prefix = options.get("transactionalIdPrefix", f"directstream-{unit.stream}")
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError("kafka sink options.transactionalIdPrefix must be a non-empty string")
        self.transactional_id = f"{prefix}-{unit.index}"
        self.output_group = f"{prefix}-output-{unit.index}"
        config = producer_config(options, unit)
        config.setdefault("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
        config["transactional.id"] = self.transactional_id
        super().__init__(options, unit, config)
        # The marker's reader and the group metadata for send_offsets_to_transaction; it never
        # subscribes, so it never joins the group.
        marker_config = {
            k: v for k, v in config.items() if k == "bootstrap.servers" or k.startswith(CONNECTION_PREFIXES)
        }
        marker_config.update(
            {"group.id": self.output_group, "enable.auto.commit": False, "isolation.level": "read_committed"}
        )
        try:
            self._markers = Consumer(marker_config)
        except KafkaException as exc:
            raise ConfigurationError(f"invalid kafka sink consumer configuration: {exc}") from exc
        self._unit = unit
        self._initialised = False
        self._in_transaction = False
        self._skipped: set[OffsetRange] = set()
        self._closed = 0
        self._failed_for_good = False

    def open_range(self, range_: OffsetRange) -> None:
        if not self._initialised:
            self._initialise(range_)
        if range_.count > 0 and range_ not in self._skipped:
            self._check_marker(range_)

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        self.produce_records(records, range_, self.topic)

    def produce_records(self, records: Sequence[KafkaRecord], range_: OffsetRange, topic: str) -> None:
        """Produce into the unit's transaction (dead letters use this too: the same transaction);
        nothing for a range already in the output."""
        if range_ in self._skipped:
            return
        if not self._in_transaction:
            self._transaction_call(range_, "begin", self._producer.begin_transaction)
            self._in_transaction = True
        try:
            super().produce_records(records, range_, topic)
        except KafkaException as exc:
            self._failed_for_good = True
            raise RangeFailedError(
                range_,
                records[0].offset() or range_.from_offset,
                "the transactional producer failed for good "
                f"(fenced by a newer attempt of this unit?): {exc}",
            ) from exc

    def close_range(self, range_: OffsetRange) -> None:
        self._closed += 1
        if self._closed < len(self._unit.ranges):
            return  # the unit's single transaction commits when its last range completes
        produced = [r for r in self._unit.ranges if r.count > 0 and r not in self._skipped]
        if not produced:
            return
        if not self._in_transaction:  # ranges of gaps only still get their marker
            self._transaction_call(range_, "begin", self._producer.begin_transaction)
            self._in_transaction = True
        super().close_range(range_)  # flush; fails on any delivery error
        markers = [
            TopicPartition(r.topic, r.partition, r.until_offset, metadata=_marker(self._unit.batch_id, r))
            for r in produced
        ]
        metadata = self._markers.consumer_group_metadata()
        self._transaction_call(
            range_,
            "send_offsets",
            lambda: self._producer.send_offsets_to_transaction(markers, metadata, KAFKA_TIMEOUT_SECONDS),
        )
        self._commit(range_)

    def abort_range(self, range_: OffsetRange) -> None:
        self._abort()

    def close(self) -> None:
        self._abort()
        self._markers.close()
        if not self._failed_for_good:
            super().close()  # a fenced producer cannot flush (confluent-kafka raises SystemError)

    # -- transaction steps -------------------------------------------------------------------

    def _initialise(self, range_: OffsetRange) -> None:
        # Fences every earlier producer with this transactional.id and aborts its open transaction.
        self._transaction_call(
            range_, "init_transactions", lambda: self._producer.init_transactions(KAFKA_TIMEOUT_SECONDS)
        )
        self._initialised = True
        self._stored: dict[tuple[str, int], TopicPartition] = {}
        wanted = [TopicPartition(r.topic, r.partition) for r in self._unit.ranges if r.count > 0]
        if not wanted:
            return
        try:
            committed = self._markers.committed(wanted, timeout=KAFKA_TIMEOUT_SECONDS)
        except KafkaException as exc:
            raise RangeFailedError(
                range_, range_.from_offset, f"cannot read the output group {self.output_group}: {exc}"
            ) from exc
        self._stored = {(tp.topic, tp.partition): tp for tp in committed}

    def _check_marker(self, range_: OffsetRange) -> None:
        stored = self._stored.get((range_.topic, range_.partition))
        if stored is None or stored.offset == _NO_OFFSET or not stored.metadata:
            return
        batch_text, _, from_text = stored.metadata.partition(":")
        try:
            batch, start = int(batch_text), int(from_text)
        except ValueError:
            return  # not our marker (e.g. committed by hand): nothing to compare
        held = f"{range_.topic}[{range_.partition}] {start}..{stored.offset}"
        where = f"output group {self.output_group} holds {held}"
        if batch == self._unit.batch_id and (start, stored.offset) == (
            range_.from_offset,
            range_.until_offset,
        ):
            log.info(
                "range %s already in the output (%s of batch %d); not produced again", range_, where, batch
            )
            self._skipped.add(range_)
        elif batch > self._unit.batch_id:
            raise RangeFailedError(
                range_,
                range_.from_offset,
                f"stale attempt: {where} of batch {batch}, this range is of batch {self._unit.batch_id}",
            )
        elif batch == self._unit.batch_id:
            raise RangeFailedError(
                range_,
                range_.from_offset,
                f"{where} for this batch, but this attempt has {range_}: units differ between attempts, "
                "refusing to risk duplicates",
            )

    def _commit(self, range_: OffsetRange) -> None:
        deadline = time.monotonic() + FLUSH_TIMEOUT_SECONDS
        while True:
            try:
                self._producer.commit_transaction(KAFKA_TIMEOUT_SECONDS)
            except KafkaException as exc:
                error = exc.args[0]
                if error.retriable() and not error.txn_requires_abort() and time.monotonic() < deadline:
                    continue  # the outcome is unknown: committing again is the documented retry
                self._failed_for_good = self._failed_for_good or error.fatal()
                raise RangeFailedError(
                    range_, range_.from_offset, f"transaction commit failed: {error.str()}"
                ) from exc
            self._in_transaction = False
            return

    def _abort(self) -> None:
        if not self._in_transaction:
            return
        self._in_transaction = False
        try:
            self._producer.abort_transaction(KAFKA_TIMEOUT_SECONDS)
        except KafkaException as exc:
            # Fenced or fatal: the broker aborts it (or the next attempt's init_transactions does).
            self._failed_for_good = True
            log.warning("could not abort the transaction: %s", exc)

    def _transaction_call(self, range_: OffsetRange, step: str, call: Any) -> None:
        try:
            call()
        except KafkaException as exc:
            error = exc.args[0]
            reason = (
                "failed for good (fenced by a newer attempt of this unit?)" if error.fatal() else "failed"
            )
            raise RangeFailedError(
                range_, range_.from_offset, f"transaction {step} {reason}: {error.str()}"
            ) from exc
