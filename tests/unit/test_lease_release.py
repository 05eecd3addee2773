"""LeaseElector.release (adapters.kube.lease) against a Lease kept in memory with the API server's
optimistic concurrency: a clean stop hands the Lease back even when a renewal of its own was still
in flight as the campaign was cancelled (the version it last saw is then stale)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from directstream.operator.adapters.kube.lease import LeaseConflict, LeaseElector, LeaseState
from directstream.operator.core.leadership import ElectionSettings, LeaseRecord

FAST = ElectionSettings(lease_duration_s=3, renew_deadline_s=2.0, retry_period_s=0.5)


@dataclass
class MemoryLease:
    """``LeaseApi``'s surface over one Lease: a write must carry the resourceVersion last read."""

    namespace: str = "ns"
    name: str = "election"
    record: LeaseRecord | None = None
    version: int = 0
    writes: list[LeaseRecord] = field(default_factory=list)
    hold_writes: threading.Event | None = None  # when set, the next write waits for it (in flight)
    write_started: threading.Event = field(default_factory=threading.Event)

    @property
    def where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def get(self) -> LeaseState | None:
        return None if self.record is None else LeaseState(self.record, str(self.version))

    def write(self, record: LeaseRecord, resource_version: str | None) -> str:
        self.write_started.set()
        if self.hold_writes is not None:
            self.hold_writes.wait(5)
        expected = None if self.record is None else str(self.version)
        if resource_version != expected:
            raise LeaseConflict(f"writing {self.where}: 409 the object has been modified", 409)
        self.record, self.version = record, self.version + 1
        self.writes.append(record)
        return str(self.version)


async def leading(lease: MemoryLease) -> tuple[LeaseElector, asyncio.Task[None]]:
    """An elector for "a" that campaigns until it leads."""
    elector = LeaseElector(lease, "a", FAST)  # type: ignore[arg-type]
    task = asyncio.create_task(elector.run())
    await asyncio.wait_for(elector.became_leader.wait(), 5)
    return elector, task


def test_release_hands_the_lease_back_after_a_clean_campaign():
    lease = MemoryLease()

    async def scenario() -> None:
        elector, task = await leading(lease)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await elector.release()
        assert not elector.leading

    asyncio.run(scenario())
    assert lease.record is not None and lease.record.holder == "", "the Lease is handed back"


def test_release_succeeds_when_a_renewal_was_in_flight_at_cancellation():
    """The campaign is cancelled while its renewal's call still runs in its thread: the renewal
    lands (the version moves on) but the elector never learns the new version. Handing back with
    the old one is refused (409); the elector must read again and hand back what it still holds."""
    lease = MemoryLease()

    async def scenario() -> None:
        elector, task = await leading(lease)
        gate = threading.Event()
        lease.hold_writes, lease.write_started = gate, threading.Event()
        await asyncio.to_thread(lease.write_started.wait, 5)  # the next renewal is in flight
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gate.set()  # ... and lands after the cancellation
        lease.hold_writes = None
        await asyncio.sleep(0.1)
        assert lease.record is not None and lease.record.holder == "a" and len(lease.writes) == 2
        await elector.release()

    asyncio.run(scenario())
    assert lease.record is not None and lease.record.holder == "", "the Lease is handed back"


def test_release_leaves_a_lease_another_operator_took_alone():
    lease = MemoryLease()

    async def scenario() -> None:
        elector, task = await leading(lease)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert lease.record is not None
        taken = LeaseRecord("b", 3, lease.record.acquired_at, lease.record.renewed_at, 1)
        lease.record, lease.version = taken, lease.version + 1  # b took it over meanwhile
        await elector.release()

    asyncio.run(scenario())
    assert lease.record is not None and lease.record.holder == "b", "b's Lease is not released"
