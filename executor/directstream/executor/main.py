"""``directstream-executor``: process one work unit and report an ExecutorResult.

Input (first that is given):

- ``--work-unit FILE`` (``-`` = stdin): the JSON of one work unit;
- ``$DIRECTSTREAM_WORK_UNIT``: the JSON of one work unit;
- ``$DIRECTSTREAM_WORK_UNITS`` (a JSON list of units) and ``$JOB_COMPLETION_INDEX`` picking one;
- ``$DIRECTSTREAM_WORK_UNITS_FILE``: a file with that JSON list (the attempt's ConfigMap on a cluster).

Output: the ExecutorResult JSON goes to ``--result-file PATH`` or ``$DIRECTSTREAM_RESULT_FILE``;
else to ``/dev/termination-log`` when it exists and is writable (Kubernetes); else as the last
line on stdout. One human-readable summary line always goes to stderr, with progress lines.

Exit codes: 0 success; 1 processing failure (result ``ok=false`` naming range and offset);
2 bad input (malformed unit, unknown sink, bad options or client config, missing secret env);
128+N when stopped by signal N (SIGTERM, SIGINT): the open ranges are aborted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from directstream.executor.contract import ContractError, ExecutorResult, PermanentError, WorkUnit
from directstream.executor.contract.redact import scrub
from directstream.executor.contract.wire import (
    ENV_COMPLETION_INDEX,
    ENV_RESULT_FILE,
    ENV_STALL_TIMEOUT,
    ENV_WORK_UNIT,
    ENV_WORK_UNITS,
    ENV_WORK_UNITS_FILE,
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SIGNAL_BASE,
    TERMINATION_LOG,
)
from directstream.executor.errors import ConfigurationError
from directstream.executor.processors import build_processor
from directstream.executor.reader import DEFAULT_CHUNK_SIZE, ReaderOptions, check_ranges
from directstream.executor.runner import run_unit

log = logging.getLogger("directstream.executor")


class BadInputError(PermanentError):
    """Input that cannot become a work unit; ``index`` is set when known (for a result)."""

    def __init__(self, message: str, doc: Any = None, index: int | None = None) -> None:
        super().__init__(message)
        self.doc = doc if isinstance(doc, dict) else {}
        self.index = index


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return seconds


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="directstream-executor", description=__doc__.split("\n")[0])
    parser.add_argument("--work-unit", metavar="FILE", help="work unit JSON file, '-' for stdin")
    parser.add_argument("--result-file", metavar="PATH", help="where to write the ExecutorResult JSON")
    parser.add_argument(
        "--stall-timeout",
        type=_positive_seconds,
        default=os.environ.get(ENV_STALL_TIMEOUT, "60"),
        help="seconds without progress before a range fails (default 60, $DIRECTSTREAM_STALL_TIMEOUT)",
    )
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="records per consume call")
    parser.add_argument(
        "--progress-interval", type=float, default=10.0, help="seconds between progress lines"
    )
    return parser.parse_args(argv)


def _unit_text(args: argparse.Namespace) -> tuple[str, int | None]:
    """The unit's JSON text and, when picked from a list, its index."""
    if args.work_unit:
        try:
            text = sys.stdin.read() if args.work_unit == "-" else Path(args.work_unit).read_text()
        except OSError as exc:
            raise BadInputError(f"cannot read work unit {args.work_unit}: {exc}") from exc
        return text, None
    single = os.environ.get(ENV_WORK_UNIT)
    if single:
        return single, None
    many, index_text = os.environ.get(ENV_WORK_UNITS), os.environ.get(ENV_COMPLETION_INDEX)
    source = "$DIRECTSTREAM_WORK_UNITS"
    units_file = os.environ.get(ENV_WORK_UNITS_FILE)
    if not many and units_file:
        source = f"$DIRECTSTREAM_WORK_UNITS_FILE ({units_file})"
        try:
            many = Path(units_file).read_text()
        except OSError as exc:
            raise BadInputError(f"cannot read {source}: {exc}") from exc
    if not many:
        raise BadInputError(
            "no work unit: give --work-unit FILE, $DIRECTSTREAM_WORK_UNIT, $DIRECTSTREAM_WORK_UNITS "
            "or $DIRECTSTREAM_WORK_UNITS_FILE"
        )
    if index_text is None or not index_text.strip().isdigit():
        raise BadInputError(f"{source} needs $JOB_COMPLETION_INDEX (an integer), got {index_text!r}")
    index = int(index_text)
    try:
        units = json.loads(many)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{source} is not JSON: {exc}", index=index) from exc
    if not isinstance(units, list) or not 0 <= index < len(units):
        raise BadInputError(f"{source} has no unit at index {index}", index=index)
    return json.dumps(units[index]), index


def _load_unit(args: argparse.Namespace) -> WorkUnit:
    text, index = _unit_text(args)
    try:
        doc: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"work unit is not JSON: {exc}", index=index) from exc
    try:
        unit = WorkUnit.loads(text)
        check_ranges(unit.ranges)
    except (ContractError, ConfigurationError, ValueError) as exc:
        raise BadInputError(f"invalid work unit: {exc}", doc, index) from exc
    return unit


def _write_result(result: ExecutorResult, args: argparse.Namespace) -> None:
    text = result.dumps()
    target = args.result_file or os.environ.get(ENV_RESULT_FILE)
    try:
        if target:
            Path(target).write_text(text + "\n")
        elif TERMINATION_LOG.exists() and os.access(TERMINATION_LOG, os.W_OK):
            TERMINATION_LOG.write_text(text)
        else:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
    except OSError as exc:
        log.error("cannot write the result to %s: %s", target or TERMINATION_LOG, exc)  # noqa: TRY400


def _bad_input_result(error: BadInputError) -> ExecutorResult | None:
    index = error.index if error.index is not None else error.doc.get("index")
    if not isinstance(index, int):
        return None

    def number(key: str) -> int:
        value = error.doc.get(key)
        return value if isinstance(value, int) else -1

    digest = error.doc.get("digest")
    return ExecutorResult(
        number("batchId"),
        number("attempt"),
        index,
        ok=False,
        error=scrub(str(error)),
        digest=digest if isinstance(digest, str) else "",
    )


def _summary(unit: WorkUnit, result: ExecutorResult) -> str:
    head = f"batch {unit.batch_id} attempt {unit.attempt} unit {unit.index}: "
    figures = f"{result.records} records, {result.bytes} bytes in {result.seconds:.2f}s"
    return head + (f"ok, {figures}" if result.ok else f"FAILED after {figures}: {result.error}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="directstream-executor: %(message)s", stream=sys.stderr)
    args = _parse_args(argv)
    stop = threading.Event()
    received: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        unit = _load_unit(args)
        processor = build_processor(unit.processor, unit)
        options = ReaderOptions(chunk_size=args.chunk_size, stall_timeout=args.stall_timeout)
        result = run_unit(unit, processor, options, stop.is_set, args.progress_interval)
    except BadInputError as exc:
        log.error("bad input: %s", exc)  # noqa: TRY400 (no traceback for bad input)
        bad_result = _bad_input_result(exc)
        if bad_result is not None:
            _write_result(bad_result, args)
        return EXIT_BAD_INPUT
    except ConfigurationError as exc:
        log.error("bad input: %s", scrub(str(exc)))  # noqa: TRY400 (no traceback for bad input)
        failed = ExecutorResult(
            unit.batch_id, unit.attempt, unit.index, ok=False, error=scrub(str(exc)), digest=unit.digest
        )
        _write_result(failed, args)
        return EXIT_BAD_INPUT
    _write_result(result, args)
    log.info("%s", _summary(unit, result))
    if received:
        return EXIT_SIGNAL_BASE + received[0]
    return EXIT_OK if result.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
