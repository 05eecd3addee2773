"""Status building: conditions, the state round trip, lag, merge patches, driver events."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from directstream.executor.contract import OffsetRange
from directstream.operator.core import events as ev
from directstream.operator.core.job_results import JobProgress
from directstream.operator.core.planning import BatchPlan, DataLoss
from directstream.operator.core.rate import RateState
from directstream.operator.core.state import LedgerEntry, PendingBatch, StreamState
from directstream.operator.core.status import (
    CONDITION_TYPES,
    build_status,
    describe_state_change,
    durable_state,
    format_time,
    get_condition,
    lag_summary,
    set_condition,
    state_from_status,
)
from directstream.operator.core.status_fold import StatusView, fold, outcome_of

T1, T2, T3 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"
REASON = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")


def entry(batch: int, records: int = 10) -> LedgerEntry:
    return LedgerEntry(batch, 1, 2, records, records * 5, 0.25, 1_700_000_000.5 + batch, "")


def full_state() -> StreamState:
    plan = BatchPlan(
        batch_id=5,
        ranges=(OffsetRange("t", 0, 40, 60), OffsetRange("t", 1, 30, 35), OffsetRange("u", 0, 0, 9)),
        data_loss=(DataLoss("t", 1, 20, 30, "deleted"),),
        new_partitions=(("u", 0),),
        rate_capped=True,
    )
    return StreamState(
        committed={("t", 0): 40, ("t", 1): 20},
        pending=PendingBatch(plan, attempt=2, planned_at=1_700_000_100.125, first_error="index 0: boom"),
        next_batch_id=6,
        ledger=(entry(3, 0), LedgerEntry(4, 2, 2, 30, 90, 1.5, 1_700_000_050.25, "reset r1: rewound")),
        rate=RateState(rate=1234.5, updated_at=1_700_000_050.0, error=-3.25),
        records_total=30,
        applied_reset="r1",
    )


def status_of(state: StreamState, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "generation": 3,
        "phase": "Running",
        "conditions": [],
        "latest": None,
        "job_name": None,
        "now_iso": T1,
    }
    arguments.update(overrides)
    return build_status(state, **arguments)


# -- conditions ------------------------------------------------------------------------------


def test_set_condition_keeps_the_transition_time_while_the_status_holds() -> None:
    first = set_condition([], "Ready", True, "BatchCommitted", "batch 1", generation=1, now_iso=T1)
    assert first == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "BatchCommitted",
            "message": "batch 1",
            "lastTransitionTime": T1,
            "observedGeneration": 1,
        }
    ]
    same = set_condition(first, "Ready", "True", "CaughtUp", "all read", generation=2, now_iso=T2)
    assert same[0]["lastTransitionTime"] == T1
    assert (same[0]["reason"], same[0]["message"], same[0]["observedGeneration"]) == (
        "CaughtUp",
        "all read",
        2,
    )
    flipped = set_condition(same, "Ready", False, "KafkaUnavailable", "down", generation=2, now_iso=T3)
    assert flipped[0]["lastTransitionTime"] == T3
    assert first[0]["reason"] == "BatchCommitted"  # the input is not modified


def test_set_condition_keeps_other_conditions_in_order() -> None:
    conditions = set_condition([], "Ready", True, "A", "", generation=1, now_iso=T1)
    conditions = set_condition(conditions, "Degraded", False, "B", "", generation=1, now_iso=T1)
    conditions = set_condition(conditions, "Ready", False, "C", "", generation=1, now_iso=T2)
    assert [c["type"] for c in conditions] == ["Ready", "Degraded"]
    assert get_condition(conditions, "Degraded") == conditions[1]
    assert get_condition(conditions, "Progressing") is None


@pytest.mark.parametrize(
    ("type_", "status", "reason"),
    [
        ("Healthy", "True", "Ok"),
        ("Ready", "yes", "Ok"),
        ("Ready", "True", "not camel"),
        ("Ready", "True", ""),
    ],
)
def test_set_condition_refuses_nonsense(type_: str, status: str, reason: str) -> None:
    with pytest.raises(ValueError):
        set_condition([], type_, status, reason, "", generation=1, now_iso=T1)


def test_long_messages_are_bounded() -> None:
    (condition,) = set_condition([], "Degraded", True, "BatchFailed", "x" * 5000, generation=1, now_iso=T1)
    assert len(condition["message"]) == 1024


# -- status and state ------------------------------------------------------------------------


def test_status_round_trip() -> None:
    state = full_state()
    status = status_of(state, job_name="s-b5-a2", latest={("t", 0): 100})
    assert json.loads(json.dumps(status)) == status
    assert state_from_status(json.loads(json.dumps(status))) == state
    assert status["pending"]["job"] == "s-b5-a2"
    assert status["observedGeneration"] == 3 and status["phase"] == "Running"
    assert status["appliedReset"] == "r1"
    assert status["batch"] == 4
    for key in ("committedOffsets", "pending", "nextBatchId", "history", "rate", "recordsTotal"):
        assert key in status


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.tuples(st.sampled_from(["a", "b.c"]), st.integers(0, 50)), st.integers(0, 10**12)),
    st.integers(1, 10**6),
    st.integers(0, 10**9),
    st.none() | st.text(min_size=1, max_size=10),
)
def test_status_round_trip_property(
    committed: dict[tuple[str, int], int], next_batch: int, records: int, reset: str | None
) -> None:
    state = StreamState(
        committed=committed, next_batch_id=next_batch, records_total=records, applied_reset=reset
    )
    assert state_from_status(json.loads(json.dumps(status_of(state)))) == state


def test_missing_status_is_a_new_stream() -> None:
    assert state_from_status(None) == StreamState()
    assert state_from_status({}) == StreamState()
    only_conditions = {"conditions": [{"type": "Ready", "status": "False"}], "phase": "Failed"}
    assert state_from_status(only_conditions).is_new


def test_status_of_another_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        state_from_status({"version": 99, "committed": {}})


def test_batch_is_the_last_committed_batch() -> None:
    assert status_of(StreamState())["batch"] == 0
    assert status_of(StreamState(next_batch_id=9))["batch"] == 8
    state = full_state()
    assert status_of(StreamState(pending=state.pending, next_batch_id=6))["batch"] == 4
    assert status_of(StreamState(ledger=(entry(12),), next_batch_id=13))["batch"] == 12


def test_phase_is_checked() -> None:
    with pytest.raises(ValueError, match="phase"):
        status_of(StreamState(), phase="Happy")


def test_lag_is_bounded_with_ten_thousand_partitions() -> None:
    committed = {("t", p): 0 for p in range(10_000)}
    latest = {("t", p): p for p in range(10_000)}
    status = status_of(StreamState(committed=committed), latest=latest, now_iso=T2)
    lag = status["lag"]
    assert lag["total"] == sum(range(10_000))
    assert lag["updatedAt"] == T2
    assert len(lag["partitions"]) == 100
    assert lag["partitions"][0] == {"topic": "t", "partition": 9999, "lag": 9999}
    assert [p["lag"] for p in lag["partitions"]] == list(range(9999, 9899, -1))
    assert len(json.dumps(lag)) < 10_000


def test_lag_ignores_caught_up_and_uncommitted_partitions() -> None:
    lag = lag_summary({("t", 0): 5, ("t", 1): 9}, {("t", 0): 5, ("t", 1): 10, ("t", 2): 50}, T1)
    assert lag == {"total": 1, "partitions": [{"topic": "t", "partition": 1, "lag": 1}], "updatedAt": T1}


def test_lag_and_executors_are_optional() -> None:
    status = status_of(StreamState())
    assert "lag" not in status and "executors" not in status
    progress = JobProgress(False, (), 2, 1, 0, 1, None, "")
    assert status_of(StreamState(), executors=progress)["executors"] == {
        "active": 3,
        "succeeded": 1,
        "failed": 0,
    }


def test_format_time() -> None:
    assert format_time(datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == T1
    assert format_time(datetime(2026, 1, 1, 0, 1, 0, 999, tzinfo=UTC)) == T2


# -- merge patches ---------------------------------------------------------------------------


def _event(event_type: type[ev.Event], message: str = "message") -> ev.Event:
    """An instance of ``event_type`` with zeros for its figures."""
    figures = {
        f.name: 0
        for f in dataclasses.fields(event_type)
        if f.name not in ("message", "batch_id", "positions_only")
    }
    return event_type(message=message, **figures)


def test_every_event_class_is_listed() -> None:
    # By name: a slots dataclass is a new class, and the one it replaced stays a subclass too.
    declared = {cls.__name__ for cls in ev.Event.__subclasses__()}
    assert sorted(t.__name__ for t in ev.EVENT_TYPES) == sorted(declared)


def test_every_driver_event_has_a_meaning() -> None:
    for event_type in ev.EVENT_TYPES:
        outcome = outcome_of(_event(event_type))
        if event_type is ev.Note:
            assert outcome is None  # a CLI line, no status
            continue
        assert outcome is not None, event_type
        assert REASON.fullmatch(outcome.reason)
        assert all(update.type in CONDITION_TYPES for update in outcome.conditions)


@pytest.mark.parametrize(
    ("event_type", "reason", "event_type_text", "conditions", "phase"),
    [
        (ev.Committed, "BatchCommitted", "Normal", {"Ready": "True", "Degraded": "False"}, "Running"),
        (ev.Retrying, "BatchRetrying", "Warning", {"Degraded": "True"}, "Running"),
        (ev.BatchGaveUp, "BatchFailed", "Warning", {"Ready": "False", "Degraded": "True"}, "Failed"),
        (ev.DataLossRefused, "BatchFailed", "Warning", {"Ready": "False", "Degraded": "True"}, "Failed"),
        (ev.DataLossSkipped, "DataLoss", "Warning", {"Degraded": "True"}, None),
        (ev.Drift, "OffsetsDrift", "Warning", {"Degraded": "True"}, None),
        (ev.KafkaUnreachable, "KafkaUnavailable", "Warning", {"Ready": "False"}, None),
        (ev.OffsetStoreUnreachable, "OffsetStoreUnavailable", "Warning", {"Ready": "False"}, None),
        (ev.CaughtUp, "CaughtUp", "Normal", {"Ready": "True", "Progressing": "False"}, "Completed"),
        (ev.Suspended, "Suspended", "Normal", {"Progressing": "False"}, "Suspended"),
        (ev.Rewound, "Rewound", "Normal", {"Progressing": "True"}, "Running"),
        (ev.InvalidSpec, "InvalidSpec", "Warning", {"Ready": "False", "Degraded": "True"}, "Failed"),
    ],
)
def test_event_outcomes(
    event_type: type[ev.Event],
    reason: str,
    event_type_text: str,
    conditions: dict[str, str],
    phase: str | None,
) -> None:
    event = _event(event_type, "it happened")
    outcome = outcome_of(event)
    assert outcome is not None
    assert (outcome.reason, outcome.phase) == (reason, phase)
    assert ("Warning" if event.warning else "Normal") == event_type_text
    updates = {update.type: update.status for update in outcome.conditions}
    assert conditions.items() <= updates.items()


def test_positions_only_commits_have_their_own_reason() -> None:
    event = ev.Committed(message="", records=0, bytes=0, seconds=0, lag=0, attempts=1, positions_only=True)
    outcome = outcome_of(event)
    assert outcome is not None and outcome.reason == "PositionsCommitted"


def test_routine_events_do_not_flood_kubernetes_events() -> None:
    for event_type in (ev.Planned, ev.Launched, ev.Committed, ev.Idle):
        outcome = outcome_of(_event(event_type))
        assert outcome is not None and not outcome.emit_event
    for event_type in (ev.Retrying, ev.BatchGaveUp, ev.DataLossSkipped, ev.Drift, ev.CaughtUp):
        outcome = outcome_of(_event(event_type))
        assert outcome is not None and outcome.emit_event


def test_fold_sets_conditions_with_the_message_and_posts_only_what_it_should() -> None:
    view, posted = fold(StatusView(), _event(ev.Committed, "batch 1 committed"), generation=2, now_iso=T1)
    assert posted is None
    view, posted = fold(view, _event(ev.Committed, "batch 2"), generation=2, now_iso=T2)
    ready = get_condition(view.conditions, "Ready")
    assert ready is not None
    assert (ready["status"], ready["message"], ready["lastTransitionTime"]) == ("True", "batch 2", T1)
    assert view.phase == "Running"
    view, posted = fold(view, _event(ev.Retrying, "attempt 2"), generation=2, now_iso=T3)
    degraded = get_condition(view.conditions, "Degraded")
    assert degraded is not None
    assert (degraded["status"], degraded["reason"], degraded["lastTransitionTime"]) == (
        "True",
        "BatchRetrying",
        T3,
    )
    assert posted is not None and (posted.type, posted.reason, posted.message) == (
        "Warning",
        "BatchRetrying",
        "attempt 2",
    )
    unchanged, posted = fold(view, ev.Note(message="a CLI line"), generation=2, now_iso=T3)
    assert (unchanged, posted) == (view, None)


def test_the_durable_state_is_what_a_driver_moves_and_nothing_else():
    state = full_state()
    status = status_of(state)
    durable = durable_state(status)
    assert durable == state.to_json()
    # What any operator may rewrite without moving offsets: conditions, phase, lag, the Job shown.
    cosmetic = {**status, "phase": "Failed", "conditions": [], "lag": {"total": 1}, "observedGeneration": 9}
    cosmetic["pending"] = {**status["pending"], "job": "another-job"}
    assert durable_state(cosmetic) == durable
    # The API server renders whole floats as integers: the same state.
    rendered = json.dumps(status).replace("1700000050.0", "1700000050")
    assert rendered != json.dumps(status)
    assert durable_state(json.loads(rendered)) == durable


def test_a_moved_offset_or_plan_is_a_different_durable_state_and_says_what_moved():
    state = full_state()
    before = durable_state(status_of(state))
    idle = dataclasses.replace(state, pending=None)
    moved = dataclasses.replace(idle, committed={("t", 0): 41, ("t", 1): 20})
    assert durable_state(status_of(moved)) != durable_state(status_of(idle))
    assert describe_state_change(durable_state(status_of(idle)), durable_state(status_of(moved))) == (
        "the committed offsets"
    )
    assert state.pending is not None
    retried = durable_state(status_of(state.with_retry("again")))
    assert (
        describe_state_change(before, retried) == "the recorded plan (batch 5 attempt 2 -> batch 5 attempt 3)"
    )
    gone = durable_state(status_of(dataclasses.replace(state, pending=None, next_batch_id=7)))
    assert describe_state_change(before, gone) == "the recorded plan (batch 5 attempt 2 -> none), nextBatchId"
    assert durable_state({"committed": {"t": {"0": "x"}}}) != durable_state({})
