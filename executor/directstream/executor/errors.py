"""Why an executor stops early: a range that cannot be processed, or a stop request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from directstream.executor.contract import ConfigurationError, DirectStreamError, OffsetRange

if TYPE_CHECKING:
    from directstream.executor.records import KafkaRecord

__all__ = ["ConfigurationError", "PoisonRecord", "RangeFailedError", "StopRequestedError"]


class RangeFailedError(DirectStreamError):
    """Processing ``range`` failed at ``offset`` (the first offset not processed)."""

    def __init__(self, range_: OffsetRange, offset: int, reason: str) -> None:
        self.range = range_
        self.offset = offset
        self.reason = reason
        super().__init__(f"range {range_} failed at offset {offset}: {reason}")


class StopRequestedError(DirectStreamError):
    """A stop was requested (SIGTERM) before the work unit finished."""


class PoisonRecord(Exception):
    """One bad record, from a python processor.

    Per record, raise it from ``process_record(record, range)``. Per chunk, ``process(records,
    range)`` returns the chunk's poison records as ``PoisonRecord(reason, record=r)`` s (an
    iterable; the chunk's other records count as processed): raising from ``process`` would leave
    unknown which records of the chunk were written, so it fails the range as any exception does.

    Under ``spec.processor.onError: skip`` the record is dropped and counted, under ``deadLetter``
    its original bytes go to the dead-letter topic with the message as ``directstream.error``, and
    under ``fail`` (the default) the unit fails at its offset. Any other exception fails the unit.
    """

    def __init__(self, *args: object, record: KafkaRecord | None = None) -> None:
        super().__init__(*args)
        self.record = record

    @property
    def reason(self) -> str:
        return f"{type(self).__name__}: {self}" if str(self) else type(self).__name__
