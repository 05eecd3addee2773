"""The two terminal policies a host chooses from: what follows when the loop cannot go on."""

from __future__ import annotations

from .outcomes import Decision, Exit, Halt, Retry, RunMode, WaitForChange
from .settings import DriverSettings


def exit_policy(halt: Halt, mode: RunMode, settings: DriverSettings) -> Decision:
    """Local mode: done when suspended or caught up, a failure otherwise, except that an endless
    run rides out a Kafka or database outage once it has started (a bounded run gives up after
    ``unavailable_failures_before_exit`` failures in a row)."""
    match halt.reason:
        case "suspended" | "caught-up":
            return Exit(ok=True)
        case "kafka-unavailable" | "store-unavailable":
            if halt.before_first_batch:
                return Exit(ok=False)
            if mode is RunMode.FOREVER or halt.failures < settings.unavailable_failures_before_exit:
                return Retry()
            return Exit(ok=False)
    return Exit(ok=False)


def wait_policy(halt: Halt, settings: DriverSettings) -> Decision:
    """The operator: never exit. Conditions say what is wrong; outages are retried with backoff,
    everything else waits for a spec change (or looks again after a while)."""
    match halt.reason:
        case "kafka-unavailable" | "store-unavailable" | "internal-error":
            return Retry()
        case "state-unreadable":
            return WaitForChange(settings.kube_retry_s)  # a status edit bumps no generation: look again
        case "data-loss" | "batch-failed":
            return WaitForChange(settings.failed_retry_s)
        case "kube-error":
            return WaitForChange(settings.kube_retry_s)
    return WaitForChange(settings.idle_recheck_s)
