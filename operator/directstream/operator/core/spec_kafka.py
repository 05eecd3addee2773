"""``spec.kafka``, read and checked; what ``spec.kafka.config`` (and the Secret of ``spec.kafka.configFrom``)
may hold (pure).

Each key is a librdkafka setting the bundled librdkafka knows; the keys directstream manages, the ones
that run a command or load code (``UNSAFE_CONFIG``) and secrets (``SECRET_CONFIG``) are refused, each
with the message the CRD's rule gives; OIDC is allowed only by an operator flag (``check_oidc``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from directstream.executor.contract.kafka import (
    ALLOW_OIDC_FLAG,
    OIDC_CONFIG,
    REFUSED_CONFIG,
    SECRET_CONFIG,
    UNSAFE_CONFIG,
)
from directstream.executor.contract.librdkafka_properties import LIBRDKAFKA_PROPERTIES, LIBRDKAFKA_VERSION
from directstream.operator.core.spec_fields import (
    DNS_SUBDOMAIN,
    Section,
    join,
    read_bootstrap_servers,
    type_name,
)

LOCAL_SECRET_PREFIX = "DIRECTSTREAM_KAFKA_"
IsolationLevel = Literal["read_committed", "read_uncommitted"]
ISOLATION_LEVELS: tuple[IsolationLevel, ...] = ("read_committed", "read_uncommitted")


@dataclass(frozen=True)
class KafkaSpec:
    bootstrap_servers: str
    isolation_level: IsolationLevel = "read_committed"
    config: Mapping[str, str] = field(default_factory=dict)
    config_from_secret: str | None = None  # spec.kafka.configFrom.secretRef.name (cluster only)


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


def read_kafka(s: Section) -> KafkaSpec:
    """``spec.kafka``: the bootstrap servers, isolation level, librdkafka settings (each key checked by
    ``key_problem``) and the Secret they may come from."""
    servers = read_bootstrap_servers(s)
    isolation = s.choice("isolationLevel", KafkaSpec.isolation_level, ISOLATION_LEVELS)
    config: dict[str, str] = {}
    for key, value in s.mapping("config").items():
        path = join(s.at("config"), key)
        refused = key_problem(key)
        if refused is not None:
            s.problems.add(path, refused)
        elif isinstance(value, bool):
            config[key] = "true" if value else "false"  # librdkafka's spelling, not Python's
        elif isinstance(value, str | int | float):
            config[key] = str(value)
        else:
            # Never echo the value: this map may hold a password.
            s.problems.add(path, f"expected a string, number or boolean, got {type_name(value)}")
    secret = None
    config_from = s.section("configFrom")
    if config_from.data:  # an empty configFrom reads no Secret
        secret_ref = config_from.section("secretRef", required=True)
        secret = secret_ref.string("name", "", required=True, non_empty=True) or None
        if secret is not None and not DNS_SUBDOMAIN.fullmatch(secret):
            s.problems.add(secret_ref.at("name"), f"{secret!r} is not a valid Secret name")
            secret = None
        secret_ref.close()
    config_from.close()
    s.close()
    return KafkaSpec(servers, isolation, config, secret)
