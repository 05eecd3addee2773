"""The pool's lease book (pure): which executor holds which unit of the running attempt.

A unit is leased to one executor at a time until its lease runs out; an executor renews it while
it works. A unit whose executor died or let its lease run out goes back to the front of the queue
in the same attempt (same layout, same digest), at most ``max_leases`` times. A result counts only
when it comes with the lease that is current for its unit and names that unit's batch, attempt,
index and digest: a result of an old attempt or of a revoked lease is refused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from directstream.executor.contract import ExecutorResult, WorkUnit

DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_MAX_LEASES = 3


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: str
    executor_id: str
    unit: WorkUnit
    expires_at: float
    seconds: float  # the lease's length: renew well within it


@dataclass(slots=True)
class _Entry:
    unit: WorkUnit
    leases: int = 0  # how often the unit was handed out
    result: ExecutorResult | None = None


@dataclass(slots=True)
class LeaseBook:
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    max_leases: int = DEFAULT_MAX_LEASES
    _entries: dict[int, _Entry] = field(default_factory=dict)
    _queue: deque[int] = field(default_factory=deque)
    _leases: dict[str, tuple[int, Lease]] = field(default_factory=dict)
    _serial: int = 0

    def offer(self, units: Iterable[WorkUnit]) -> None:
        """The units of one attempt; whatever an earlier attempt left is dropped and its leases revoked."""
        units = tuple(units)
        self._entries = {u.index: _Entry(u) for u in units}
        self._queue = deque(u.index for u in units)
        self._leases.clear()

    def clear(self) -> None:
        self.offer(())

    def waiting(self) -> bool:
        return bool(self._queue)

    def lease(self, executor_id: str, now: float) -> Lease | None:
        """The next unit for ``executor_id``, or None when none waits."""
        if not self._queue:
            return None
        index = self._queue.popleft()
        entry = self._entries[index]
        entry.leases += 1
        self._serial += 1
        unit = entry.unit
        lease_id = f"{unit.batch_id}.{unit.attempt}.{unit.index}.{self._serial}"
        lease = Lease(lease_id, executor_id, unit, now + self.lease_seconds, self.lease_seconds)
        self._leases[lease.lease_id] = (index, lease)
        return lease

    def renew(self, executor_id: str, lease_id: str, now: float) -> Lease | None:
        """The renewed lease, or None when it is no longer current (the executor must stop)."""
        held = self._current(executor_id, lease_id)
        if held is None:
            return None
        index, lease = held
        renewed = Lease(lease.lease_id, executor_id, lease.unit, now + self.lease_seconds, self.lease_seconds)
        self._leases[lease_id] = (index, renewed)
        return renewed

    def complete(self, executor_id: str, lease_id: str, result: ExecutorResult) -> str | None:
        """Count ``result``; returns why it was refused, or None when it counted."""
        held = self._current(executor_id, lease_id)
        if held is None:
            return f"lease {lease_id} of executor {executor_id} is not current (revoked, expired or unknown)"
        index, lease = held
        unit = lease.unit
        got = (result.batch_id, result.attempt, result.index, result.digest)
        want = (unit.batch_id, unit.attempt, unit.index, unit.digest)
        if got != want:
            return f"result for batch/attempt/unit/digest {got} does not match the leased unit {want}"
        del self._leases[lease_id]
        self._entries[index].result = result
        return None

    def lost(self, executor_id: str, why: str) -> None:
        """``executor_id`` died: its units wait again, at the front (or fail past ``max_leases``)."""
        for lease_id, (index, lease) in list(self._leases.items()):
            if lease.executor_id == executor_id:
                del self._leases[lease_id]
                self._requeue(index, why)

    def expired(self, now: float) -> list[str]:
        """The executors holding a lease that ran out; their leases are revoked and the units wait again."""
        holders = []
        for lease_id, (index, lease) in list(self._leases.items()):
            if lease.expires_at <= now:
                del self._leases[lease_id]
                holders.append(lease.executor_id)
                self._requeue(index, f"executor {lease.executor_id} let its lease run out")
        return holders

    def fail_waiting(self, why: str) -> None:
        """Fail every unit that waits for an executor (none could start)."""
        while self._queue:
            entry = self._entries[self._queue.popleft()]
            entry.leases = self.max_leases
            self._requeue(entry.unit.index, why)

    def holders(self) -> set[str]:
        return {lease.executor_id for _, lease in self._leases.values()}

    def done(self) -> bool:
        return bool(self._entries) and all(e.result is not None for e in self._entries.values())

    def results(self) -> list[ExecutorResult]:
        """One result per unit, in unit order (only once ``done``)."""
        return [e.result for _, e in sorted(self._entries.items()) if e.result is not None]

    def _current(self, executor_id: str, lease_id: str) -> tuple[int, Lease] | None:
        held = self._leases.get(lease_id)
        if held is None or held[1].executor_id != executor_id:
            return None
        return held

    def _requeue(self, index: int, why: str) -> None:
        entry = self._entries[index]
        if entry.result is not None:
            return
        if entry.leases < self.max_leases:
            self._queue.appendleft(index)
            return
        unit = entry.unit
        entry.result = ExecutorResult(
            batch_id=unit.batch_id,
            attempt=unit.attempt,
            index=unit.index,
            ok=False,
            error=why
            if entry.leases == 0
            else f"unit {unit.index} lost its executor {entry.leases} times; last: {why}",
            digest=unit.digest,
        )


class PoolBackend(Protocol):
    """What the pool's transport asks of the driver; the transport only authenticates and decodes."""

    async def lease(self, executor_id: str, wait_seconds: float) -> Lease | None:
        """The next unit for ``executor_id``, waiting up to ``wait_seconds`` for one."""

    def renew(self, executor_id: str, lease_id: str) -> Lease | None: ...

    def complete(self, executor_id: str, lease_id: str, result: ExecutorResult) -> str | None:
        """None when the result counted, else why not."""

    def refuse(self, executor_id: str, lease_id: str, reason: str) -> None: ...
