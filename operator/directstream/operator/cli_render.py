"""How the CLI shows progress and tables: a live line on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

from .core import events as ev
from .core.planning import BatchPlan, TopicPartition
from .core.spec import StreamSpec
from .core.spec_poison import describe_policy
from .core.state import StreamState
from .core.status import lag_of
from .core.work import build_work_units, executor_kafka_settings


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)
        ).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "").replace("-", "").isdigit()


class ProgressPrinter:
    """The driver's observer for ``directstream run``: a fold of the events into a live line (or
    plain lines) and the run's totals."""

    def __init__(self, stream: TextIO = sys.stderr, live: bool | None = None) -> None:
        self.out = stream
        self.live = stream.isatty() if live is None else live
        self.records = 0
        self.batches = 0
        self.started = time.monotonic()
        self._last_idle = False
        self._line_open = False
        self._lag: int | None = None

    def __call__(self, event: ev.Event) -> None:
        match event:
            case ev.Committed(records=records, positions_only=positions_only, lag=lag):
                self.records += records
                self.batches += 0 if positions_only else 1
                self._lag = lag
            case ev.Idle(lag=lag):
                self._lag = lag
        if self.live:
            self._live(event)
        else:
            self._plain(event)

    def _plain(self, event: ev.Event) -> None:
        idle = isinstance(event, ev.Idle)
        if idle and self._last_idle:
            return
        self._last_idle = idle
        prefix = "WARNING " if event.warning else ""
        rate = ""
        if isinstance(event, ev.Committed) and not event.positions_only:
            rate = f" ({event.records / (event.seconds or 1e-9):,.0f} records/s)"
        print(f"{time.strftime('%H:%M:%S')} {prefix}{event.message}{rate}", file=self.out, flush=True)

    def _live(self, event: ev.Event) -> None:
        shown = ev.CaughtUp | ev.Stopped | ev.Started | ev.Note | ev.TopicsDropped | ev.ExecutorsScaled
        if event.warning or isinstance(event, shown):
            self._clear()
            print(("WARNING " if event.warning else "") + event.message, file=self.out, flush=True)
            return
        match event:
            case ev.Planned(batch_id=batch, offsets=offsets):
                status = f"batch {batch}: planned {offsets:,} offsets"
            case ev.Launched(batch_id=batch, executors=executors):
                status = f"batch {batch}: running {executors} executor(s)"
            case ev.Idle():
                status = "waiting for new records"
            case _:
                status = event.message
        elapsed = max(time.monotonic() - self.started, 1e-9)
        line = (
            f"\r\033[K{status} | {self.batches} batches, {self.records:,} records, "
            f"{self.records / elapsed:,.0f} records/s"
            + (f" | lag {self._lag:,}" if self._lag is not None else "")
        )
        self.out.write(line)
        self.out.flush()
        self._line_open = True

    def _clear(self) -> None:
        if self._line_open:
            self.out.write("\r\033[K")
            self._line_open = False

    def close(self) -> None:
        if self._line_open:
            self.out.write("\n")
            self._line_open = False


def offsets_table(
    committed: Mapping[TopicPartition, int], latest: Mapping[TopicPartition, int] | None
) -> str:
    tps = sorted(set(committed) | set(latest or {}))
    lags = lag_of(committed, latest or {})
    rows = []
    for tp in tps:
        end = (latest or {}).get(tp)
        done = committed.get(tp)
        lag: object = "-" if end is None else lags[tp]
        rows.append([tp[0], tp[1], "-" if done is None else done, "-" if end is None else end, lag])
    return table(["TOPIC", "PARTITION", "COMMITTED", "LATEST", "LAG"], rows)


def poison_totals(state: StreamState) -> str:
    """The poison-record totals line of ``status`` (empty when none were ever dropped)."""
    if not (state.skipped_total or state.dead_lettered_total):
        return ""
    return f"{state.skipped_total:,} skipped, {state.dead_lettered_total:,} dead-lettered (all time)"


def scale_summary(state: StreamState) -> str:
    """A pool's executor counts and why (empty when the stream is not a pool)."""
    scale = state.scale
    if scale is None:
        return ""
    return f"{scale.current} running, target {scale.target} ({scale.reason})"


def ledger_table(state: StreamState) -> str:
    poison = any(e.skipped or e.dead_lettered for e in state.ledger)
    units = any(e.executors for e in state.ledger)
    rows = [
        [
            e.batch_id,
            e.attempts,
            e.partitions,
            e.records,
            e.bytes,
            f"{e.seconds:.2f}s",
            *([e.executors or "-"] if units else []),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.committed_at)),
            *([e.skipped, e.dead_lettered] if poison else []),
            e.note or "",
        ]
        for e in reversed(state.ledger)
    ]
    poison_columns = ["SKIPPED", "DEAD-LETTERED"] if poison else []
    return table(
        [
            "BATCH",
            "ATTEMPTS",
            "RANGES",
            "RECORDS",
            "BYTES",
            "DURATION",
            *(["EXECUTORS"] if units else []),
            "COMMITTED AT",
            *poison_columns,
            "NOTE",
        ],
        rows,
    )


def plan_report(spec: StreamSpec, plan: BatchPlan, kind: str, state: StreamState | None = None) -> str:
    """A batch plan as ``directstream plan`` and ``kubectl directstream plan`` show it (split for a
    pool's executor count as ``state`` has it)."""
    lines = [
        f"{kind} batch {plan.batch_id}: {plan.offsets:,} offsets in {len(plan.record_ranges)} range(s)"
        + (" (rate-capped: more is waiting)" if plan.rate_capped else "")
    ]
    lines += [f"  data loss: {x}; read from its start" for x in plan.recreated]
    lines += [f"  data loss: {loss}" for loss in plan.data_loss]
    lines.append(f"  poison records: {describe_policy(spec.processor.poison)}")
    count = (
        state.scale.target if state is not None and state.scale and spec.executors.mode == "pool" else None
    )
    units = build_work_units(spec, plan, 1, executor_kafka_settings(spec), count)
    rows = [
        [u.index, r.topic, r.partition, r.from_offset, r.until_offset, r.count]
        for u in units
        for r in u.ranges
    ]
    lines.append(
        table(["EXECUTOR", "TOPIC", "PARTITION", "FROM", "UNTIL", "OFFSETS"], rows)
        if rows
        else "nothing to read"
    )
    return "\n".join(lines)
