"""Every failure in a stream's loop becomes a condition and an event with a reason, with a bounded
wait, never an exception out of the daemon (kopf's 60 s crash loop): the real loop over the fakes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from directstream.operator.core import events as ev
from directstream.operator.core.errors import StateUnreadable
from directstream.operator.core.planning import PlanInputs, Watermarks, plan_batch
from directstream.operator.core.spec import SpecError, StreamSpec, parse_spec
from directstream.operator.core.state import StreamState
from directstream.operator.core.status import state_from_status
from directstream.operator.core.status_fold import StatusView, fold
from directstream.operator.driver import DriverSettings, RunMode, run_stream
from directstream.operator.testing import FakeKafka, MemoryHost, MemoryState

FAST = DriverSettings(
    retry_backoff_s=(0.5, 1.0),
    unavailable_backoff_s=(1.0, 3.0),
    kube_retry_s=11.0,
    idle_recheck_s=13.0,
)
T0 = ("t", 0)


def doc(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kafka": {"bootstrapServers": "fake:9092"},
        "topics": ["t"],
        "batchInterval": "5s",
        "processor": {"sink": "count"},
    }
    base.update(fields)
    return base


def run(host: MemoryHost) -> Any:
    return asyncio.run(run_stream(host, RunMode.FOREVER, host.settings, clock=host.clock))


class LiveSpecHost(MemoryHost):
    """Reads its spec as the operator does: parsed from the object's current mapping."""

    def __init__(self, raw: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(parse_spec("clicks", doc()), **kwargs)
        self.raw = raw

    async def read_spec(self) -> StreamSpec:
        self.turns_left -= 1
        self.spec = parse_spec("clicks", self.raw)
        return self.spec


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        (
            {"kafka": {"bootstrapServers": "fake:9092", "config": {"no.such.setting": "1"}}},
            "not a librdkafka",
        ),
        (
            {"kafka": {"bootstrapServers": "fake:9092", "config": {"plugin.library.paths": "/x.so"}}},
            "refused",
        ),
        ({"kafka": {"bootstrapServers": "fake:9092", "config": {"sasl.password": "hunter2"}}}, "a secret"),
        ({"rate": {"maxPerPartition": 1e308}}, "must be <= 1e+09"),
    ],
)
def test_an_invalid_spec_is_a_condition_and_a_bounded_wait(fields: dict[str, Any], fragment: str) -> None:
    kafka = FakeKafka({T0: 10})
    host = LiveSpecHost(doc(**fields), kafka=kafka, settings=FAST, policy="cluster", max_turns=3)
    outcome = run(host)
    assert outcome.reason == "stopped"
    invalid = host.of_type(ev.InvalidSpec)
    assert len(invalid) == 3 and all(fragment in e.message for e in invalid), invalid
    assert "hunter2" not in " ".join(e.message for e in host.events)
    assert host.waits == [FAST.idle_recheck_s] * 3, "it waits for a spec change, no tight loop"
    assert not host.launcher.launches and not kafka.commits and host.store.state.committed == {}


def test_a_fixed_spec_runs_after_an_invalid_one() -> None:
    kafka = FakeKafka({T0: 10})
    raw = doc(rate={"maxPerPartition": 1e308})
    host = LiveSpecHost(raw, kafka=kafka, settings=FAST, policy="cluster", max_turns=3)
    host.on_wait = lambda h: raw.update(rate={"maxPerPartition": 1e9})
    run(host)
    assert host.store.state.committed == {T0: 10}


def test_a_huge_interval_times_the_highest_rate_plans_without_overflow() -> None:
    stream = parse_spec("clicks", doc(batchInterval="100000000000000h", rate={"maxPerPartition": 1e9}))
    inputs = PlanInputs(committed={T0: 0}, watermarks={T0: Watermarks(0, 50)})
    plan = plan_batch(stream, inputs, 1)
    assert plan.next_offsets() == {T0: 50}


class UnreadableState(MemoryState):
    """A status edited by hand: ``committed`` holds a word where an offset belongs."""

    async def load(self) -> StreamState:
        return state_from_status({"committed": {"t": {"0": "forty-two"}}, "nextBatchId": 3})


def test_a_malformed_status_names_the_field_and_moves_nothing() -> None:
    kafka = FakeKafka({T0: 10})
    kafka.groups["clicks"] = {T0: 4}
    host = MemoryHost(
        parse_spec("clicks", doc()),
        kafka=kafka,
        state=UnreadableState(),
        settings=FAST,
        policy="cluster",
        max_turns=2,
    )
    run(host)
    unreadable = host.of_type(ev.StateUnreadable)
    assert len(unreadable) == 2
    assert "status.committed is malformed" in unreadable[0].message
    assert host.waits == [FAST.kube_retry_s] * 2
    assert not host.launcher.launches and not kafka.commits and not host.store.saved
    assert kafka.groups["clicks"] == {T0: 4}


def test_state_unreadable_names_each_field() -> None:
    with pytest.raises(StateUnreadable) as caught:
        state_from_status({"committed": {"t": {"0": 5}}, "pending": {"batch": 1, "attempt": 1}})
    assert caught.value.field == "pending"
    with pytest.raises(StateUnreadable) as caught:
        state_from_status({"history": [{"batch": "x"}]})
    assert caught.value.field == "history"


class BuggyKafka(FakeKafka):
    """A bug (not an outage) in the first ``bugs`` requests, with a password in its message."""

    def __init__(self, partitions: dict[tuple[str, int], int], bugs: int) -> None:
        super().__init__(partitions)
        self.bugs = bugs

    async def partitions(self) -> list[tuple[str, int]]:
        if self.bugs > 0:
            self.bugs -= 1
            raise RuntimeError("unexpected answer from postgresql://app:hunter2@db/x")
        return await super().partitions()


def test_an_unexpected_exception_is_a_condition_retried_with_a_capped_backoff() -> None:
    kafka = BuggyKafka({T0: 10}, bugs=3)
    host = MemoryHost(parse_spec("clicks", doc()), kafka=kafka, settings=FAST, policy="cluster", max_turns=5)
    outcome = run(host)
    assert outcome.reason == "stopped"
    errors = host.of_type(ev.InternalError)
    assert [e.error_type for e in errors] == ["RuntimeError"] * 3  # type: ignore[attr-defined]
    assert all("hunter2" not in e.message and "postgresql://app:***@db/x" in e.message for e in errors)
    assert host.pauses[:3] == [1.0, 3.0, 3.0], "the unavailable backoff, capped at its last delay"
    assert host.store.state.committed == {T0: 10}, "the turn after the bug ran the batch"


def test_an_unexpected_exception_ends_a_local_run_with_its_message() -> None:
    kafka = BuggyKafka({T0: 10}, bugs=1)
    host = MemoryHost(parse_spec("clicks", doc()), kafka=kafka, settings=FAST, policy="local")
    outcome = run(host)
    assert (outcome.ok, outcome.reason) == (False, "internal-error")
    assert "RuntimeError" in outcome.message and "hunter2" not in outcome.message


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (ev.InternalError(message="internal error KeyError: 'x'", error_type="KeyError"), "InternalError"),
        (ev.StateUnreadable(message="status.committed is malformed"), "StateUnreadable"),
        (ev.InvalidSpec(message="invalid spec: password=hunter2"), "InvalidSpec"),
    ],
)
def test_each_reason_is_a_degraded_condition_and_a_warning_event(event: ev.Event, reason: str) -> None:
    view, posted = fold(StatusView(), event, generation=2, now_iso="2026-01-01T00:00:00Z")
    degraded = next(c for c in view.conditions if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", reason)
    assert posted is not None and (posted.type, posted.reason) == ("Warning", reason)
    assert "hunter2" not in posted.message and "hunter2" not in degraded["message"]


def test_spec_error_for_1e308_has_the_crd_bound() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec("clicks", doc(rate={"maxPerPartition": 1e308}))
    assert [p.path for p in caught.value.problems] == ["spec.rate.maxPerPartition"]


def test_a_plan_too_large_for_the_status_is_not_recorded_and_says_how_large() -> None:
    """150k partitions of ten-digit offsets: the first plan would not fit in one object (etcd 1.5 MiB)."""
    topics = [f"clickstream-events-{n:03d}" for n in range(150)]
    kafka = FakeKafka({(t, p): 9_876_543_210 + p for t in topics for p in range(1000)})
    raw = doc(topicPattern="^clickstream-events-.*$")
    del raw["topics"]
    host = MemoryHost(parse_spec("clicks", raw), kafka=kafka, settings=FAST, policy="cluster", max_turns=2)
    outcome = run(host)
    assert outcome.reason == "stopped"
    refused = host.of_type(ev.StateTooLarge)
    assert len(refused) == 2 and all(e.size > e.limit == FAST.max_state_bytes for e in refused), refused
    assert "over 150000 partitions" in refused[0].message
    assert f"would be {refused[0].size:,} bytes, over the 1,400,000 bytes" in refused[0].message
    assert "split topics / topicPattern" in refused[0].message and "offsets unchanged" in refused[0].message
    assert host.waits == [FAST.idle_recheck_s] * 2, "it waits for a spec change, no tight loop"
    assert all(s.pending is None for s in host.store.saved), "no plan was recorded"
    assert not host.launcher.launches and not kafka.commits and host.store.state.committed == {}
    view = StatusView()
    for event in refused:
        view, posted = fold(view, event, generation=2, now_iso="2026-01-01T00:00:00Z")
    degraded = next(c for c in view.conditions if c["type"] == "Degraded")
    assert (degraded["reason"], view.phase) == ("StatusTooLarge", "Failed") and "bytes" in degraded["message"]
    assert posted is not None and (posted.type, posted.reason) == ("Warning", "StatusTooLarge")


def test_a_local_run_until_caught_up_with_a_plan_too_large_exits_with_the_message() -> None:
    kafka = FakeKafka({T0: 10, ("t", 1): 10})
    settings = DriverSettings(max_state_bytes=400)  # the same check with a smaller bound
    host = MemoryHost(parse_spec("clicks", doc()), kafka=kafka, settings=settings, policy="local")
    host.mode = RunMode.UNTIL_CAUGHT_UP  # directstream run --until-caught-up
    outcome = asyncio.run(run_stream(host, RunMode.UNTIL_CAUGHT_UP, host.settings, clock=host.clock))
    assert not outcome.ok and "would be" in outcome.message and "over the 400 bytes" in outcome.message
    assert not host.launcher.launches and host.store.state.committed == {}
