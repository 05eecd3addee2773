"""The driver's errors, on the contract's one root (:mod:`directstream.executor.contract.errors`)."""

from __future__ import annotations

from directstream.executor.contract import DirectStreamError, PermanentError, RetryableError

__all__ = [
    "DirectStreamError",
    "Fenced",
    "KafkaUnavailable",
    "KubeApiError",
    "NotLeading",
    "OffsetStoreUnavailable",
    "PermanentError",
    "RetryableError",
    "StateTooLarge",
    "StateUnreadable",
]


class KafkaUnavailable(RetryableError):
    """Kafka could not answer (unreachable, unknown topic, authorisation...)."""


class OffsetStoreUnavailable(RetryableError):
    """The user's offsets database could not be read or written."""


class StateUnreadable(PermanentError, ValueError):
    """The stored state (a status edited by hand, a damaged state file) cannot be read: the stream
    moves no offsets until it is fixed; ``field`` names the part that is malformed."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class StateTooLarge(PermanentError):
    """Recording a plan would make the stored state larger than fits safely in one object."""

    def __init__(self, message: str, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class KubeApiError(RetryableError):
    """The Kubernetes API refused or failed a call (RBAC, quota, admission, unreachable)."""


class Fenced(RetryableError):
    """This operator may no longer write the stream's state: another writer changed it since this
    operator read it (a new leader, a second operator). Nothing this operator held was written.
    The loop does not catch it: its host stops driving the stream and, if it still leads, starts
    again from a fresh read of the state, never from the state it held."""


class NotLeading(Fenced):
    """This operator no longer holds the leader Lease, so it writes nothing (status, Kafka group,
    offsets table) for any stream."""
