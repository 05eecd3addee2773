"""Run one work unit: read its ranges and drive the processor; summarise in an ExecutorResult."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from directstream.executor.contract import ExecutorResult, FailedAt, OffsetRange, WorkUnit
from directstream.executor.contract.redact import scrub
from directstream.executor.errors import RangeFailedError, StopRequestedError
from directstream.executor.processors.base import Processor
from directstream.executor.reader import RangeReader, ReaderOptions
from directstream.executor.records import payload_bytes

log = logging.getLogger(__name__)


def run_unit(
    unit: WorkUnit,
    processor: Processor,
    options: ReaderOptions | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress_interval: float = 10.0,
    *,
    consumer_factory: Callable[[dict[str, Any]], Any] | None = None,
) -> ExecutorResult:
    """Process every range of ``unit``. A range failure or a stop gives ``ok=False``; the ranges
    left open are aborted. Other exceptions (bad configuration) propagate after the abort."""
    started = time.monotonic()
    records = payload = 0
    open_ranges: set[OffsetRange] = set()
    completed = 0
    next_progress = started + progress_interval

    def result(error: str | None = None, failed_at: FailedAt | None = None) -> ExecutorResult:
        return ExecutorResult(
            batch_id=unit.batch_id,
            attempt=unit.attempt,
            index=unit.index,
            ok=error is None,
            records=records,
            bytes=payload,
            seconds=time.monotonic() - started,
            error=scrub(error) if error is not None else None,  # libpq and friends echo DSNs
            failed_at=failed_at,
            digest=unit.digest,
            skipped=getattr(processor, "skipped", 0),
            dead_lettered=getattr(processor, "dead_lettered", 0),
        )

    try:
        for range_ in unit.ranges:
            _call(processor.open_range, range_, range_.from_offset, "open_range")
            open_ranges.add(range_)
        reader = (
            RangeReader(unit, options, should_stop)
            if consumer_factory is None
            else RangeReader(unit, options, should_stop, consumer_factory)
        )
        for chunk in reader.chunks():
            range_ = chunk.range
            if chunk.records:
                first = chunk.records[0].offset()
                _call(
                    processor.process,
                    range_,
                    range_.from_offset if first is None else first,
                    "process",
                    chunk.records,
                )
                records += len(chunk.records)
                payload += payload_bytes(chunk.records)
            if chunk.done:
                _call(processor.close_range, range_, range_.from_offset, "close_range")
                open_ranges.discard(range_)
                completed += 1
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + progress_interval
                log.info(
                    "progress: %d records, %d of %d ranges complete", records, completed, len(unit.ranges)
                )
        return result()
    except RangeFailedError as failure:
        _abort(processor, open_ranges)
        where = FailedAt(failure.range.topic, failure.range.partition, failure.offset)
        return result(str(failure), where)
    except StopRequestedError:
        _abort(processor, open_ranges)
        pending = ", ".join(str(r) for r in sorted(open_ranges)) or "none"
        return result(f"stopped before completing; ranges not completed: {pending}")
    except BaseException:
        _abort(processor, open_ranges)
        raise
    finally:
        try:
            processor.close()
        except Exception:
            log.exception("processor close() failed")


def _call(method: Callable[..., object], range_: OffsetRange, offset: int, name: str, *args: object) -> None:
    """Call a processor method; its exceptions become a RangeFailedError naming range and offset."""
    try:
        if args:
            method(*args, range_)
        else:
            method(range_)
    except (RangeFailedError, StopRequestedError):
        raise
    except Exception as exc:
        raise RangeFailedError(range_, offset, f"processor {name} failed: {exc!r}") from exc


def _abort(processor: Processor, open_ranges: set[OffsetRange]) -> None:
    for range_ in sorted(open_ranges):
        try:
            processor.abort_range(range_)
        except Exception:
            log.exception("processor abort_range(%s) failed", range_)
