"""The processor protocol: what the executor calls while it reads a work unit.

Call order, for one work unit:

1. ``open_range(range)`` for every range, in the unit's order, before any record is read;
2. ``process(records, range)`` any number of times: ``records`` is a non-empty sequence of records
   of that one range, in offset order (chunks of different ranges interleave);
3. ``close_range(range)`` once the range is complete: flush its output durably, because the driver
   commits the range's offsets once every executor of the batch has succeeded;
4. ``close()`` at the end, also after a failure.

On a failure or a stop, ``abort_range(range)`` is called for every range opened and not closed: undo
or discard partial output. A range may be processed again by a later attempt, so outputs should be
idempotent per range (replace, not append).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from directstream.executor.contract import OffsetRange
from directstream.executor.records import KafkaRecord


class Processor(Protocol):
    def open_range(self, range_: OffsetRange) -> None: ...
    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None: ...
    def close_range(self, range_: OffsetRange) -> None: ...
    def abort_range(self, range_: OffsetRange) -> None: ...
    def close(self) -> None: ...


class BaseProcessor:
    """No-op defaults for every protocol method."""

    def open_range(self, range_: OffsetRange) -> None:
        return None

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        return None

    def close_range(self, range_: OffsetRange) -> None:
        return None

    def abort_range(self, range_: OffsetRange) -> None:
        return None

    def close(self) -> None:
        return None


class CountProcessor(BaseProcessor):
    """Counts records and nothing else (benchmarks, smoke tests)."""

    def __init__(self) -> None:
        self.records = 0

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        self.records += len(records)
