"""Every tunable of the driver loop in one place. Tests pass smaller values instead of patching
constants; the operator and the CLI use the defaults."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def backoff(delays: Sequence[float], failures: int) -> float:
    """The wait after the ``failures``-th consecutive failure (1-based); the last delay repeats."""
    if not delays:
        return 0.0
    return float(delays[min(max(failures, 1), len(delays)) - 1])


@dataclass(frozen=True, slots=True)
class DriverSettings:
    # A failed batch attempt is retried with the same ranges after these waits.
    retry_backoff_s: Sequence[float] = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
    # Kafka or the offsets database unreachable: the step is tried again after these waits.
    unavailable_backoff_s: Sequence[float] = (2.0, 4.0, 8.0, 16.0, 32.0, 60.0)
    # Local mode with --once or --until-caught-up gives up after this many failures in a row.
    unavailable_failures_before_exit: int = 3
    # A refused Kubernetes API call (RBAC, quota, admission) is tried again this often.
    kube_retry_s: float = 30.0
    # A stream Failed for good tries again this often, or as soon as its spec changes.
    failed_retry_s: float = 300.0
    # Suspended, completed or invalid: how long to wait for a spec change before looking again.
    idle_recheck_s: float = 3600.0
    # The Job launcher's poll besides its wake-ups (Job and pod events).
    job_poll_s: float = 5.0
    # The largest state (compact JSON) a plan may be recorded with: etcd stores objects up to
    # 1.5 MiB, and metadata, spec, conditions and lag need the rest. Local mode checks it too,
    # so the same YAML runs the same everywhere.
    max_state_bytes: int = 1_400_000


DEFAULT_SETTINGS = DriverSettings()
