"""A status or state file written by state version 1 (offsets as ``{topic: {"partition": n}}``)
is still read: a running stream adopted by this version keeps its committed offsets and its
recorded plan. And the compact tables of version 2 round-trip in every form."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from directstream.operator.adapters.local.state import LocalStateStore, read_state_file
from directstream.operator.core import events as ev
from directstream.operator.core.errors import StateUnreadable
from directstream.operator.core.offset_tables import (
    partitions_from_text,
    partitions_to_text,
    table_from_json,
    table_to_json,
)
from directstream.operator.core.spec import parse_spec
from directstream.operator.core.state import STATE_VERSION, StreamState
from directstream.operator.core.status import state_from_status
from directstream.operator.driver import RunMode, run_stream
from directstream.operator.testing import FakeKafka, MemoryHost, MemoryState
from tests.crd_support import full_state, node_at, schema_errors

DATA = Path(__file__).parent / "data"


def old(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / name).read_text())
    return doc


def test_a_full_version_1_status_reads_as_the_same_state() -> None:
    status = old("status_v1_full.json")
    assert status["version"] == 1 and "committed" in status and "until" in status["pending"]
    assert state_from_status(status) == full_state()


def test_the_crd_still_declares_the_version_1_fields() -> None:
    """Until the new operator writes the status again, the API server must not prune the old fields."""
    assert schema_errors(old("status_v1_full.json"), node_at("status"), "status") == []


def running() -> StreamState:
    return state_from_status(old("state_v1_running.json"))


def test_a_running_version_1_state_keeps_its_offsets_and_plan() -> None:
    doc = old("state_v1_running.json")
    state = running()
    assert len(state.committed) == 119 and ("orders-2", 5) not in state.committed
    assert state.committed[("orders-1", 39)] == 2_000_000 + 17 * 39
    assert state.pending is not None and state.pending.attempt == 2
    plan = state.pending.plan
    untils = {(t, int(p)): o for t, parts in doc["pending"]["until"].items() for p, o in parts.items()}
    assert {(r.topic, r.partition): r.until_offset for r in plan.ranges} == untils
    assert plan.new_partitions == (("orders-2", 41),)
    assert [r for r in plan.ranges if r.partition == 41] == [r for r in plan.ranges if r.from_offset == 0]
    assert state.pending.pinned is not None and len(state.pending.pinned.layout) == 3
    assert StreamState.from_json(json.loads(json.dumps(state.to_json()))) == state, "written as version 2"


def test_an_adopted_version_1_plan_runs_its_recorded_ranges_then_commits_them() -> None:
    state = running()
    assert state.pending is not None and state.pending.pinned is not None
    plan, pinned = state.pending.plan, state.pending.pinned
    kafka = FakeKafka({(r.topic, r.partition): r.until_offset + 5 for r in plan.ranges})
    kafka.groups["orders"] = dict(state.committed)
    spec = parse_spec(
        "orders",
        {
            "kafka": {"bootstrapServers": "k:9092"},
            "topicPattern": "^orders-.*$",
            "executors": {"max": 3, "maxRecords": 10},
            "processor": {"sink": "count"},
        },
    )
    host = MemoryHost(spec, kafka=kafka, state=MemoryState(state))
    outcome = asyncio.run(run_stream(host, RunMode.ONCE, host.settings, clock=host.clock))
    assert outcome.ok, outcome.reason
    launch = host.launcher.launches[0]
    assert launch.attempt.digest == pinned.digest and launch.units[0].attempt == 2
    # Each unit reads what the old record's layout text says: index i of the (sorted) ranges, or i:from-until.
    ordered = sorted(plan.ranges, key=lambda r: (r.topic, r.partition))
    expected = []
    for text in old("state_v1_running.json")["pending"]["pinned"]["layout"]:
        unit = []
        for entry in text.split(","):
            index, _, bounds = entry.partition(":")
            whole = ordered[int(index)]
            start, until = map(int, bounds.split("-")) if bounds else (whole.from_offset, whole.until_offset)
            unit.append((whole.topic, whole.partition, start, until))
        expected.append(unit)
    assert any(":" in text for text in old("state_v1_running.json")["pending"]["pinned"]["layout"])
    assert [
        [(r.topic, r.partition, r.from_offset, r.until_offset) for r in u.ranges] for u in launch.units
    ] == expected
    assert not host.of_type(ev.SpecChangeDeferred), "the same spec: the pinned digest still matches"
    assert host.store.state.committed == {**state.committed, **plan.next_offsets()}


def test_a_version_1_state_file_is_read_and_then_written_as_version_2(tmp_path: Path) -> None:
    shutil.copy(DATA / "state_v1_running.json", tmp_path / "state.json")
    state = read_state_file(tmp_path)
    assert state == running()
    asyncio.run(LocalStateStore(tmp_path).save(state))
    written = json.loads((tmp_path / "state.json").read_text())
    assert written["version"] == STATE_VERSION and "committed" not in written
    assert read_state_file(tmp_path) == state


def test_the_compact_tables_as_they_look() -> None:
    assert table_to_json({0: 100, 1: 250, 2: 37}) == {"first": 0, "offsets": [100, 250, 37]}
    assert table_to_json({3: 0, 4: 0, 5: 0}) == {"first": 3, "last": 5, "value": 0}
    assert table_to_json({0: 10, 7: 20}, "counts") == {"partitions": [0, 7], "counts": [10, 20]}
    assert partitions_to_text([9, 0, 1, 2, 3, 7, 10, 11, 12]) == "0-3,7,9-12"


@given(st.dictionaries(st.integers(0, 3000), st.integers(0, 2**63 - 1), max_size=60))
def test_tables_round_trip(values: dict[int, int]) -> None:
    assert table_from_json(json.loads(json.dumps(table_to_json(values, "counts"))), "counts") == values
    assert partitions_from_text(partitions_to_text(values)) == sorted(values)


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"partitions": [0, 1], "offsets": [5]}, "2 partitions but 1 offsets"),
        ({"first": 4, "last": 2, "value": 0}, "before first"),
        ({"first": -1, "offsets": [5]}, "negative partition"),
    ],
)
def test_a_malformed_table_names_the_field(table: dict[str, Any], fragment: str) -> None:
    status = StreamState(committed={("t", 0): 5}).to_json()
    status["committedOffsets"] = {"t": table}
    with pytest.raises(StateUnreadable) as caught:
        state_from_status(status)
    assert caught.value.field == "committedOffsets" and fragment in str(caught.value)


def test_a_layout_that_cannot_be_derived_again_is_refused_not_run() -> None:
    """The stored digest guards the derived split: a different split is never run as the recorded one."""
    status = full_state().to_json()
    status["pending"]["pinned"]["digest"] = "0000000000000000"
    with pytest.raises(StateUnreadable) as caught:
        state_from_status(status)
    assert caught.value.field == "pending" and "cannot be derived again" in str(caught.value)
