"""Backpressure: a PID controller over the stream's processing rate, after Spark's
``PIDRateEstimator``. It turns "the last batch took this long for this many records" into
the records/s the next batch should be planned for."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class RateState:
    """The controller's memory, kept in the stream state so a restart does not reset it."""

    rate: float | None = None  # records/s for the whole stream; None until the first sample
    updated_at: float = 0.0  # seconds (clock time of the last sample)
    error: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"rate": self.rate, "updatedAt": self.updated_at, "error": self.error}

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> RateState:
        if not doc:
            return cls()
        rate = doc.get("rate")
        return cls(
            rate=None if rate is None else float(rate),
            updated_at=float(doc.get("updatedAt", 0.0)),
            error=float(doc.get("error", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class PidGains:
    proportional: float = 1.0
    integral: float = 0.2
    derivative: float = 0.0


def next_rate(
    state: RateState,
    *,
    now: float,
    records: int,
    processing_seconds: float,
    scheduling_delay_seconds: float,
    interval_seconds: float,
    min_rate: float,
    gains: PidGains = PidGains(),
) -> RateState:
    """Fold one finished batch into the estimate.

    ``error`` is how far the planned rate is above what was actually processed;
    the integral term uses the scheduling delay (work queued behind the batch) converted to
    a rate. Batches with no records or no measurable time teach nothing and are ignored.
    """
    if records <= 0 or processing_seconds <= 0 or now <= state.updated_at:
        return state
    processing_rate = records / processing_seconds
    if state.rate is None:
        return RateState(rate=max(processing_rate, min_rate), updated_at=now, error=0.0)
    elapsed = now - state.updated_at
    error = state.rate - processing_rate
    historical_error = scheduling_delay_seconds * processing_rate / interval_seconds
    d_error = (error - state.error) / elapsed
    rate = state.rate - gains.proportional * error - gains.integral * historical_error
    rate -= gains.derivative * d_error
    return replace(state, rate=max(rate, min_rate), updated_at=now, error=error)
