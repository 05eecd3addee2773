"""The CLI's progress output: a live line on a terminal, plain lines elsewhere."""

import io

from directstream.operator.cli_render import ProgressPrinter, ledger_table, scale_summary, table
from directstream.operator.core import events as ev
from directstream.operator.core.scaling import ScaleState
from directstream.operator.core.state import LedgerEntry, StreamState


def committed(batch: int, records: int) -> ev.Committed:
    message = f"batch {batch} committed: {records} records in 0.50s, lag 0"
    return ev.Committed(
        message=message, batch_id=batch, records=records, bytes=0, seconds=0.5, lag=0, attempts=1
    )


def test_a_terminal_gets_one_live_line_and_warnings_above_it():
    out = io.StringIO()
    printer = ProgressPrinter(out, live=True)
    printer(ev.Planned(message="batch 1: 2 ranges, 100 offsets", batch_id=1, offsets=100, ranges=2))
    printer(committed(1, 100))
    printer(ev.Retrying(message="batch 2 attempt 1 failed", batch_id=2, attempt=2, failures=1))
    printer.close()
    text = out.getvalue()
    assert text.count("\r\x1b[K") >= 3, "the status line is rewritten in place"
    assert "batch 1: planned 100 offsets" in text
    assert "1 batches, 100 records" in text and "lag 0" in text
    assert "WARNING batch 2 attempt 1 failed\n" in text
    assert text.endswith("\n")


def test_plain_output_has_one_line_per_event_and_collapses_idle_ticks():
    out = io.StringIO()
    printer = ProgressPrinter(out, live=False)
    printer(committed(1, 1000))
    for _ in range(5):
        printer(ev.Idle(message="no new records", lag=0))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "batch 1 committed: 1000 records" in lines[0] and "(2,000 records/s)" in lines[0]
    assert lines[1].endswith("no new records")
    assert "\x1b" not in out.getvalue()


def test_tables_align_numbers_right():
    text = table(["NAME", "RECORDS"], [["a", 5], ["bb", 1234567]])
    assert text.splitlines() == ["NAME  RECORDS", "a             5", "bb    1,234,567"]


def test_status_shows_a_pools_executor_counts_and_the_ledger_its_executors():
    reason = "lag 120k records, ~14 s at the measured rate: 2 -> 4"
    state = StreamState(
        ledger=(LedgerEntry(7, 1, 3, 3_000, 30_000, 0.5, 1_700_000_000.0, executors=4),),
        scale=ScaleState(4, reason, 1_700_000_000.0, current=2),
    )
    assert scale_summary(state) == f"2 running, target 4 ({reason})"
    assert scale_summary(StreamState()) == ""
    header, row = ledger_table(state).splitlines()[:2]
    assert "EXECUTORS" in header and " 4 " in row
    assert "EXECUTORS" not in ledger_table(StreamState(ledger=(LedgerEntry(1, 1, 1, 1, 1, 0.1, 1.0),)))
