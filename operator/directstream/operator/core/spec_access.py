"""The checks of a spec that need what only a host knows: the operator's flags and the Secret's data."""

from __future__ import annotations

from collections.abc import Mapping

from .spec import FieldProblem, SpecError, StreamSpec
from .spec_kafka import oidc_problems, secret_problems


def check_oidc(spec: StreamSpec, allow_oidc: bool) -> None:
    """Raise ``SpecError`` if ``spec.kafka.config`` uses OIDC without ``--allow-kafka-oidc``."""
    problems = [
        FieldProblem(f"spec.kafka.config.{message.split(':', 1)[0]}", message)
        for message in oidc_problems(spec.kafka.config, allow_oidc)
    ]
    if problems:
        raise SpecError(problems)


def check_secret(name: str, data: Mapping[str, str], allow_oidc: bool) -> None:
    """Raise ``SpecError`` if the Secret of ``spec.kafka.configFrom`` holds what a client must not get."""
    problems = secret_problems(name, data, data, allow_oidc)
    if problems:
        raise SpecError([FieldProblem("spec.kafka.configFrom.secretRef.name", p) for p in problems])
