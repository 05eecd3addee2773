"""The driver's errors, on the contract's one root (:mod:`directstream.executor.contract.errors`)."""

from __future__ import annotations

from directstream.executor.contract import DirectStreamError, PermanentError, RetryableError

__all__ = [
    "DirectStreamError",
    "KafkaUnavailable",
    "KubeApiError",
    "OffsetStoreUnavailable",
    "PermanentError",
    "RetryableError",
]


class KafkaUnavailable(RetryableError):
    """Kafka could not answer (unreachable, unknown topic, authorisation...)."""


class OffsetStoreUnavailable(RetryableError):
    """The user's offsets database could not be read or written."""


class KubeApiError(RetryableError):
    """The Kubernetes API refused or failed a call (RBAC, quota, admission, unreachable)."""
