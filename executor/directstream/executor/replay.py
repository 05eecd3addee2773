"""Re-feed dead letters after a fix: ``sink: python`` with ``entryPoint:
directstream.executor.replay:Replay`` in a DirectStream over the dead-letter topic.

Each dead letter's original key, value, timestamp and own headers are produced to
``options.topic`` (typically the original topic, once the processor is fixed), without the
``directstream.*`` headers the dead-lettering added and with ``directstream.replayed-from``
(``<topic>[<partition>]@<offset>``, the original coordinates read from those headers). It writes
like the transactional kafka sink (one transaction per work unit with a marker), so a replayed
range is produced once for ``read_committed`` readers. Options as for the kafka sink (``topic``
required; ``bootstrapServers``, ``config``, ``transactionalIdPrefix``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from directstream.executor.contract import OffsetRange, WorkUnit
from directstream.executor.poison import DeadLetter
from directstream.executor.processors.kafka_transactional import TransactionalKafkaProcessor
from directstream.executor.records import KafkaRecord

REPLAYED_FROM = "directstream.replayed-from"


def replayed(record: KafkaRecord) -> DeadLetter:
    """``record`` without the dead-letter headers, with where it first came from."""
    own = record.headers() or []
    pairs = list(own.items() if isinstance(own, dict) else own)
    meta = {k: v for k, v in pairs if k.startswith("directstream.")}

    def text(name: str) -> str:
        value = meta.get(name)
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "?")

    origin = f"{text('directstream.topic')}[{text('directstream.partition')}]@{text('directstream.offset')}"
    kept: list[tuple[str, str | bytes | None]] = [
        (k, v) for k, v in pairs if not k.startswith("directstream.")
    ]
    kept.append((REPLAYED_FROM, origin.encode()))
    return DeadLetter(record, kept)


class Replay(TransactionalKafkaProcessor):
    def __init__(self, options: Mapping[str, Any], unit: WorkUnit) -> None:
        super().__init__({**options, "transactional": True}, unit)

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        self.produce_records([replayed(r) for r in records], range_, self.topic)
