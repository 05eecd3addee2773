"""The ``kafka`` sink: produce every record onward to ``options.topic``.

Key, value, headers and timestamp are kept; the target partition comes from the producer's
partitioner (by key). Options:

- ``topic`` (required): the target topic;
- ``bootstrapServers``: the target cluster; default the source cluster, in which case the source's
  ``security.*`` / ``sasl.*`` / ``ssl.*`` settings and secrets are reused;
- ``config``: extra librdkafka producer settings;
- ``transactional``: ``true`` for exactly-once output (see :mod:`.kafka_transactional`).

The producer is idempotent (no duplicates or reordering from its own retries) and is flushed at
``close_range``; a failed delivery fails the range. Without ``transactional`` a retried range is
produced again, so the output is at-least-once across attempts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException, Message, Producer

from directstream.executor.contract import OffsetRange, WorkUnit
from directstream.executor.errors import ConfigurationError, RangeFailedError
from directstream.executor.processors.base import BaseProcessor
from directstream.executor.records import KafkaRecord

log = logging.getLogger(__name__)
FLUSH_TIMEOUT_SECONDS = 120.0


def producer_config(options: Mapping[str, Any], unit: WorkUnit) -> dict[str, Any]:
    bootstrap = options.get("bootstrapServers")
    if bootstrap is not None:
        config: dict[str, Any] = {"bootstrap.servers": str(bootstrap)}
    else:
        config = unit.kafka.connection_config()
    extra = options.get("config", {})
    if not isinstance(extra, Mapping):
        raise ConfigurationError("kafka sink options.config must be a mapping of librdkafka settings")
    config["linger.ms"] = 20
    config.update({str(k): v for k, v in extra.items()})
    config["enable.idempotence"] = True
    return config


class KafkaProcessor(BaseProcessor):
    def __init__(
        self, options: Mapping[str, Any], unit: WorkUnit, config: dict[str, Any] | None = None
    ) -> None:
        topic = options.get("topic")
        if not isinstance(topic, str) or not topic:
            raise ConfigurationError("kafka sink needs options.topic (the target topic)")
        self.topic = topic
        config = dict(config if config is not None else producer_config(options, unit))
        config["on_delivery"] = self._on_delivery
        try:
            self._producer = Producer(config)
        except KafkaException as exc:
            raise ConfigurationError(f"invalid kafka sink producer configuration: {exc}") from exc
        self._delivery_error: str | None = None

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None and self._delivery_error is None:
            self._delivery_error = f"delivery to {message.topic()} failed: {error.str()}"

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        self.produce_records(records, range_, self.topic)

    def produce_records(self, records: Sequence[KafkaRecord], range_: OffsetRange, topic: str) -> None:
        """Produce ``records`` (key, value, headers, timestamp) to ``topic``."""
        produce = self._producer.produce
        for record in records:
            timestamp_type, timestamp = record.timestamp()
            kwargs: dict[str, Any] = {
                "key": record.key(),
                "value": record.value(),
                "headers": record.headers(),
            }
            if timestamp_type != TIMESTAMP_NOT_AVAILABLE:
                kwargs["timestamp"] = timestamp
            while True:
                try:
                    produce(topic, **kwargs)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    self._producer.poll(0.1)
        self._producer.poll(0)
        self._raise_on_delivery_error(range_, records[0].offset() or range_.from_offset)

    def close_range(self, range_: OffsetRange) -> None:
        remaining = self._producer.flush(FLUSH_TIMEOUT_SECONDS)
        if remaining:
            raise RangeFailedError(
                range_, range_.from_offset, f"{remaining} records not delivered to {self.topic} in time"
            )
        self._raise_on_delivery_error(range_, range_.from_offset)

    def _raise_on_delivery_error(self, range_: OffsetRange, offset: int) -> None:
        if self._delivery_error is not None:
            raise RangeFailedError(range_, offset, self._delivery_error)

    def close(self) -> None:
        # Outstanding records belong to aborted ranges; wait briefly so they are not torn mid-send.
        self._producer.flush(5.0)
