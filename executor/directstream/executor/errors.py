"""Why an executor stops early: a range that cannot be processed, or a stop request."""

from __future__ import annotations

from directstream.executor.contract import ConfigurationError, DirectStreamError, OffsetRange

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
    """Raise from a python processor's ``process_record(record, range)``: this one record is bad.

    Under ``spec.processor.onError: skip`` the record is dropped and counted, under ``deadLetter``
    its original bytes go to the dead-letter topic with the message as ``directstream.error``, and
    under ``fail`` (the default) the unit fails at its offset. Any other exception fails the unit.
    """
