"""Leader election over a ``coordination.k8s.io/v1`` Lease, decided purely (client-go's
``leaderelection`` algorithm; the adapter ``adapters.kube.lease`` does the I/O and the timing).

- A candidate reads the Lease every ``retry_period``. It takes a Lease that is absent, released
  (no holder) or expired, and renews one it holds, each write conditional on the resourceVersion
  it read, so of two candidates only one wins.
- "Expired" is measured on the candidate's own clock from the moment it *observed* the record
  change, never from the ``renewTime`` written in it: clocks of two machines need not agree.
- A leader stops leading ``renew_deadline`` after the start of its last successful renewal, even if
  it cannot reach the API server to learn anything. ``lease_duration > renew_deadline``, so a
  deposed leader has stopped before any other candidate can take the Lease over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

JITTER = 1.2  # a standby waits retry_period x [1, JITTER) between tries (client-go's JitterFactor)


class ElectionSettingsError(ValueError):
    """Election timings that cannot keep two leaders apart."""


@dataclass(frozen=True, slots=True)
class ElectionSettings:
    """client-go's defaults: a Lease of 15 s, renewed every 2 s, given up 10 s after the last renewal."""

    lease_duration_s: int = 15
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if self.lease_duration_s < 1 or self.renew_deadline_s <= 0 or self.retry_period_s <= 0:
            raise ElectionSettingsError("lease duration, renew deadline and retry period must be positive")
        if self.lease_duration_s <= self.renew_deadline_s:
            raise ElectionSettingsError(
                f"the lease duration ({self.lease_duration_s}s) must be longer than the renew deadline "
                f"({self.renew_deadline_s}s), or a deposed leader could still act when another takes over"
            )
        if self.renew_deadline_s <= JITTER * self.retry_period_s:
            raise ElectionSettingsError(
                f"the renew deadline ({self.renew_deadline_s}s) must be longer than {JITTER} x the retry "
                f"period ({self.retry_period_s}s), or one slow renewal would end the leadership"
            )


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The Lease's ``spec``; an empty ``holder`` is a released Lease."""

    holder: str
    duration_s: int
    acquired_at: datetime | None
    renewed_at: datetime | None
    transitions: int = 0


@dataclass(frozen=True, slots=True)
class Write:
    """Create (no Lease yet) or update the Lease with ``record``."""

    record: LeaseRecord
    create: bool
    takeover: bool  # another holder's (expired or released) Lease is being taken


@dataclass(frozen=True, slots=True)
class Wait:
    """Another candidate holds a live Lease: stay a standby."""

    holder: str
    expires_in_s: float  # on this candidate's clock, if the holder stops renewing now


Decision = Write | Wait


class Election:
    """One candidate's view of the Lease. ``now`` is a monotonic clock in seconds, ``wall`` the
    time written into the record (for people and tools; never compared across machines)."""

    def __init__(self, identity: str, settings: ElectionSettings) -> None:
        if not identity:
            raise ElectionSettingsError("the leader election identity is empty")
        self.identity = identity
        self.settings = settings
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # start of the last successful write of ours

    @property
    def observed(self) -> LeaseRecord | None:
        return self._observed

    def leading(self, now: float) -> bool:
        return self._renewed_at is not None and now < self._renewed_at + self.settings.renew_deadline_s

    def leads_until(self) -> float | None:
        """When the leadership ends unless renewed (None when not leading)."""
        if self._renewed_at is None:
            return None
        return self._renewed_at + self.settings.renew_deadline_s

    def decide(self, current: LeaseRecord | None, now: float, wall: datetime) -> Decision:
        """What to do with the Lease as just read (None: there is none)."""
        duration = self.settings.lease_duration_s
        if current is None:
            return Write(LeaseRecord(self.identity, duration, wall, wall, 0), create=True, takeover=False)
        if current != self._observed:
            self._observed, self._observed_at = current, now
        mine = current.holder == self.identity
        if current.holder and not mine:
            expires = self._observed_at + max(current.duration_s, 1)
            if now < expires:
                self._renewed_at = None
                return Wait(current.holder, expires - now)
        if mine:
            record = replace(current, duration_s=duration, renewed_at=wall)
        else:
            record = LeaseRecord(self.identity, duration, wall, wall, current.transitions + 1)
        return Write(record, create=False, takeover=not mine)

    def written(self, record: LeaseRecord, started: float) -> None:
        """Our write succeeded; ``started`` is when it was sent (the Lease may count from then)."""
        self._observed, self._observed_at = record, started
        self._renewed_at = started

    def refused(self) -> None:
        """Our write lost a race (409): another candidate wrote the Lease first. Whatever we
        held is gone at once; the next round reads it again."""
        self._observed = None
        self._renewed_at = None

    def released(self, wall: datetime) -> LeaseRecord | None:
        """The record that hands the Lease back on a clean stop (None when we do not hold it)."""
        held = self._observed
        self._renewed_at = None
        if held is None or held.holder != self.identity:
            return None
        return replace(held, holder="", duration_s=1, renewed_at=wall)
