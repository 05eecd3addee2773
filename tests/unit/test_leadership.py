"""The leader election's decisions (core.leadership), with a fake clock and Lease records in memory:
the API server's part (a write is refused unless it carries the resourceVersion last read) is
played by ``LeaseTable``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from directstream.operator.core.leadership import (
    Election,
    ElectionSettings,
    ElectionSettingsError,
    LeaseRecord,
    Wait,
    Write,
)

SETTINGS = ElectionSettings(lease_duration_s=15, renew_deadline_s=10.0, retry_period_s=2.0)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class LeaseTable:
    """One Lease with optimistic concurrency, as the API server keeps it."""

    record: LeaseRecord | None = None
    version: int = 0

    def read(self) -> tuple[LeaseRecord | None, int]:
        return self.record, self.version

    def write(self, record: LeaseRecord, version: int) -> bool:
        if version != self.version:
            return False
        self.record, self.version = record, self.version + 1
        return True


def campaign(election: Election, table: LeaseTable, now: float) -> Wait | Write:
    """One round: read, decide, write if the decision says so (like adapters.kube.lease)."""
    record, version = table.read()
    decision = election.decide(record, now, EPOCH + timedelta(seconds=now))
    if isinstance(decision, Write):
        if table.write(decision.record, version):
            election.written(decision.record, now)
        else:
            election.refused()
    return decision


def test_the_first_candidate_creates_the_lease_and_leads():
    table = LeaseTable()
    a = Election("a", SETTINGS)
    decision = campaign(a, table, now=0.0)
    assert isinstance(decision, Write) and decision.create and not decision.takeover
    assert table.record is not None and table.record.holder == "a" and table.record.duration_s == 15
    assert a.leading(0.0) and a.leading(9.9)


def test_a_second_candidate_waits_while_the_holder_renews():
    table = LeaseTable()
    a, b = Election("a", SETTINGS), Election("b", SETTINGS)
    campaign(a, table, 0.0)
    for now in (1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 17.0, 19.0):
        campaign(a, table, now)  # a renews every 2 s
        decision = campaign(b, table, now + 0.5)
        assert isinstance(decision, Wait) and decision.holder == "a"
        assert a.leading(now + 0.5) and not b.leading(now + 0.5)
    assert table.record is not None and table.record.transitions == 0, "renewals are not transitions"
    assert table.record.acquired_at == EPOCH, "a renewal keeps the acquire time"


def test_expiry_is_measured_on_the_candidates_clock_from_when_it_saw_the_record_change():
    # The holder's renewTime is an hour in the past (its clock is wrong): b still waits a whole
    # lease duration from the moment it observed the record, not from the time written in it.
    stale = LeaseRecord("a", 15, EPOCH - timedelta(hours=1), EPOCH - timedelta(hours=1), 3)
    table = LeaseTable(stale, version=7)
    b = Election("b", SETTINGS)
    first = campaign(b, table, now=100.0)
    assert isinstance(first, Wait) and first.expires_in_s == pytest.approx(15.0)
    assert isinstance(campaign(b, table, now=114.9), Wait)
    taken = campaign(b, table, now=115.0)
    assert isinstance(taken, Write) and taken.takeover
    assert table.record is not None and table.record.holder == "b"
    assert table.record.transitions == 4 and table.record.acquired_at == EPOCH + timedelta(seconds=115)


def test_a_leader_that_cannot_renew_stops_before_anyone_can_take_over():
    table = LeaseTable()
    a, b = Election("a", SETTINGS), Election("b", SETTINGS)
    campaign(a, table, 0.0)
    campaign(b, table, 0.1)  # b sees the record a wrote at 0.0
    # a cannot reach the API server any more: it leads until 10.0, b takes over at 15.1 at the earliest.
    assert a.leading(9.99) and not a.leading(10.0)
    assert isinstance(campaign(b, table, 15.0), Wait)
    assert isinstance(campaign(b, table, 15.1), Write)
    assert b.leading(15.1) and not a.leading(15.1)


def test_never_two_leaders_when_renewals_are_slow_or_lost():
    """A leader's renewals keep failing from t=20 on; the standby polls. At every instant at most
    one of them leads."""
    table = LeaseTable()
    a, b = Election("a", SETTINGS), Election("b", SETTINGS)
    t = 0.0
    while t < 60.0:
        if t < 20.0:
            campaign(a, table, t)
        campaign(b, table, t + 1.0)
        for probe in (t + 0.5, t + 1.0, t + 1.5):
            assert not (a.leading(probe) and b.leading(probe)), f"two leaders at {probe}"
        t += 2.0
    assert b.leading(59.0) and table.record is not None and table.record.holder == "b"


def test_of_two_racing_candidates_only_the_one_whose_write_lands_leads():
    expired = LeaseRecord("gone", 15, EPOCH, EPOCH, 0)
    table = LeaseTable(expired, version=1)
    a, b = Election("a", SETTINGS), Election("b", SETTINGS)
    for e in (a, b):
        e.decide(table.record, 0.0, EPOCH)  # both observe the record
    record, version = table.read()
    wa, wb = a.decide(record, 20.0, EPOCH), b.decide(record, 20.0, EPOCH)
    assert isinstance(wa, Write) and isinstance(wb, Write)
    assert table.write(wa.record, version)
    a.written(wa.record, 20.0)
    assert not table.write(wb.record, version), "the second write carries a stale resourceVersion"
    b.refused()
    assert a.leading(20.0) and not b.leading(20.0)
    assert isinstance(campaign(b, table, 21.0), Wait)


def test_a_refused_renewal_ends_the_leadership_at_once():
    table = LeaseTable()
    a = Election("a", SETTINGS)
    campaign(a, table, 0.0)
    assert table.record is not None
    table.write(replace(table.record, holder="intruder"), table.version)  # someone else wrote it
    assert isinstance(a.decide(table.record, 1.0, EPOCH), Wait)
    assert not a.leading(1.0)


def test_a_released_lease_is_taken_at_once_and_a_holder_takes_its_own_lease_back():
    table = LeaseTable()
    a, b = Election("a", SETTINGS), Election("b", SETTINGS)
    campaign(a, table, 0.0)
    campaign(b, table, 0.5)
    released = a.released(EPOCH)
    assert released is not None and released.holder == "" and released.duration_s == 1
    assert table.write(released, table.version)
    assert not a.leading(0.6)
    taken = campaign(b, table, 1.0)
    assert isinstance(taken, Write) and taken.takeover and b.leading(1.0)
    # A restarted process with the identity of the holder (a pod's container restart) renews.
    again = Election("b", SETTINGS)
    renewed = campaign(again, table, 2.0)
    assert isinstance(renewed, Write) and not renewed.takeover and again.leading(2.0)
    assert Election("c", SETTINGS).released(EPOCH) is None, "nothing to release without the Lease"


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "needle"),
    [
        (10, 10.0, 2.0, "longer than the renew deadline"),
        (15, 2.0, 2.0, "retry period"),
        (0, 1.0, 0.5, "positive"),
        (15, 10.0, 0.0, "positive"),
    ],
)
def test_timings_that_cannot_keep_two_leaders_apart_are_refused(lease, renew, retry, needle):
    with pytest.raises(ElectionSettingsError, match=needle):
        ElectionSettings(lease_duration_s=lease, renew_deadline_s=renew, retry_period_s=retry)


def test_an_empty_identity_is_refused():
    with pytest.raises(ElectionSettingsError, match="identity"):
        Election("", SETTINGS)
