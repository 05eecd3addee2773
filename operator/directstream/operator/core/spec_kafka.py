"""What ``spec.kafka.config`` (and the Secret of ``spec.kafka.configFrom``) may hold (pure).

Each key is a librdkafka setting the bundled librdkafka knows; the keys directstream manages, the ones
that run a command or load code (``UNSAFE_CONFIG``) and secrets (``SECRET_CONFIG``) are refused, each
with the message the CRD's rule gives; OIDC is allowed only by an operator flag (``check_oidc``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from directstream.executor.contract.kafka import (
    ALLOW_OIDC_FLAG,
    OIDC_CONFIG,
    REFUSED_CONFIG,
    SECRET_CONFIG,
    UNSAFE_CONFIG,
)
from directstream.executor.contract.librdkafka_properties import LIBRDKAFKA_PROPERTIES, LIBRDKAFKA_VERSION

LOCAL_SECRET_PREFIX = "DIRECTSTREAM_KAFKA_"


def local_secret_variable(key: str) -> str:
    """The environment variable ``directstream run`` reads a secret setting from."""
    return LOCAL_SECRET_PREFIX + key.upper().replace(".", "_")


def managed_message(key: str) -> str:
    return f"{key!r} is managed by directstream: {REFUSED_CONFIG[key]}"


def unsafe_message(key: str) -> str:
    return f"{key!r} is refused: {UNSAFE_CONFIG[key]}"


def secret_message(key: str) -> str:
    return (
        f"{key!r} is a secret and is refused here: give it as a key of the Secret named by "
        f"spec.kafka.configFrom.secretRef (cluster) or in the variable {local_secret_variable(key)} "
        "(directstream run)"
    )


def oidc_message(key: str) -> str:
    return (
        f"{key}: {OIDC_CONFIG[key]} makes the Kafka client fetch tokens from a URL: allowed only when the "
        f"operator (or directstream run) is started with {ALLOW_OIDC_FLAG}"
    )


def unknown_message(key: str) -> str:
    hint = difflib.get_close_matches(key, sorted(LIBRDKAFKA_PROPERTIES), n=1, cutoff=0.7)
    tail = f"; did you mean {hint[0]!r}?" if hint else ""
    return f"{key!r} is not a librdkafka client setting (librdkafka {LIBRDKAFKA_VERSION}){tail}"


def key_problem(key: str, *, in_secret: bool = False) -> str | None:
    """Why ``key`` may not be set (None: it may). A Secret may hold secrets; the manifest may not."""
    if key in REFUSED_CONFIG:
        return managed_message(key)
    if key in UNSAFE_CONFIG:
        return unsafe_message(key)
    if key not in LIBRDKAFKA_PROPERTIES:
        return unknown_message(key)
    if key in SECRET_CONFIG and not in_secret:
        return secret_message(key)
    return None


def oidc_problems(settings: Mapping[str, str], allow_oidc: bool) -> list[str]:
    """The OIDC settings among ``settings`` that need ``--allow-kafka-oidc``."""
    if allow_oidc:
        return []
    return [
        oidc_message(key)
        for key, value in sorted(OIDC_CONFIG.items())
        if str(settings.get(key, "")).strip().lower() == value
    ]


def secret_problems(name: str, keys: Iterable[str], values: Mapping[str, str], allow_oidc: bool) -> list[str]:
    """What is wrong with the Secret of ``spec.kafka.configFrom`` (never echoing a value)."""
    problems = []
    for key in sorted(keys):
        why = key_problem(key, in_secret=True)
        if why is not None:
            problems.append(f"Secret {name} key {why}")
    problems.extend(f"Secret {name}: {p}" for p in oidc_problems(values, allow_oidc))
    return problems
