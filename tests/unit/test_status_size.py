"""The status stays far below etcd's 1.5 MiB object limit at any partition count: measured with the
real loop over the in-memory fakes, at the largest moments (a plan recorded for every partition, the
first batch of all partitions new, the commit after it). Beyond what fits, the plan is refused
(StatusTooLarge, tests/unit/test_no_crash_loops.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from directstream.operator.core.spec import parse_spec
from directstream.operator.core.state import StreamState
from directstream.operator.core.status import build_status
from directstream.operator.driver import RunMode, run_stream
from directstream.operator.testing import FakeKafka, MemoryHost

ETCD_LIMIT = 1536 * 1024
BUDGET = ETCD_LIMIT // 3  # "well under": room for conditions, history and kopf's annotations
PER_TOPIC = 1000


def status_bytes(state: StreamState) -> int:
    status = build_status(
        state,
        generation=3,
        phase="Running",
        conditions=[],
        latest={tp: off + 10 for tp, off in state.committed.items()},
        job_name="clicks-events-b12-a1",
        now_iso="2026-12-02T12:00:00Z",
    )
    return len(json.dumps(status, separators=(",", ":")))


def largest_status(partitions: int, maximum: int, max_records: int) -> tuple[int, int]:
    """(largest status written while a batch over every partition was pending, after its commit)."""
    topics = [f"clickstream-events-{n:03d}" for n in range(partitions // PER_TOPIC)]
    base = 9_876_543_210  # offsets of a long-lived topic: ten digits each
    kafka = FakeKafka({(t, p): base + p for t in topics for p in range(PER_TOPIC)})
    doc: dict[str, Any] = {
        "kafka": {"bootstrapServers": "fake:9092"},
        "topicPattern": "^clickstream-events-.*$",
        "processor": {"sink": "count"},
        "executors": {"max": maximum, "maxRecords": max_records},
    }
    host = MemoryHost(parse_spec("clicks-events", doc), kafka=kafka)
    host.mode = RunMode.UNTIL_CAUGHT_UP
    outcome = asyncio.run(run_stream(host, RunMode.UNTIL_CAUGHT_UP, host.settings, clock=host.clock))
    assert outcome.ok, outcome.reason
    assert len(host.store.state.committed) == partitions
    pending = max(status_bytes(s) for s in host.store.saved if s.pending is not None)
    return pending, status_bytes(host.store.state)


@pytest.mark.parametrize("partitions", [10_000, 30_000])
@pytest.mark.parametrize(("maximum", "max_records"), [(4, 0), (1000, 0)])
def test_status_is_bounded_at_many_partitions(partitions: int, maximum: int, max_records: int) -> None:
    pending, committed = largest_status(partitions, maximum, max_records)
    print(
        f"\nstatus at {partitions} partitions, executors.max {maximum}, maxRecords {max_records}: "
        f"{pending / 1024:.0f} KiB with the plan recorded ({pending / partitions:.1f} bytes a partition), "
        f"{committed / 1024:.0f} KiB committed (etcd limit {ETCD_LIMIT // 1024} KiB)"
    )
    # Measured 2026-12 before the compact tables: ~370 KiB at 10k partitions, ~1,130 KiB at 30k with
    # a plan recorded (~38 bytes a partition: {topic: {"partition": n}} maps for the committed offsets,
    # every until, the new partitions' starts twice, and the work layout). Per-topic tables (counts
    # from the start, no stored layout) take ~11.3 bytes a partition here with the plan or committed.
    assert committed < BUDGET
    assert pending < BUDGET


def test_status_at_100k_partitions_fits_under_the_limit() -> None:
    pending, committed = largest_status(100_000, 4, 0)
    print(
        f"\nstatus at 100000 partitions: {pending / 1024:.0f} KiB with the plan recorded "
        f"({pending / 100_000:.1f} bytes a partition), {committed / 1024:.0f} KiB committed "
        f"(etcd limit {ETCD_LIMIT // 1024} KiB)"
    )
    assert pending < ETCD_LIMIT and committed < ETCD_LIMIT
