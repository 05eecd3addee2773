"""From a batch plan to the work units executors receive (pure and deterministic)."""

from __future__ import annotations

from directstream.executor.contract import KafkaClientSettings, WorkUnit

from .pinning import pin, work_units
from .planning import BatchPlan
from .spec import StreamSpec


def executor_kafka_settings(
    spec: StreamSpec, secret_env: dict[str, str] | None = None
) -> KafkaClientSettings:
    return KafkaClientSettings(
        bootstrap_servers=spec.kafka.bootstrap_servers,
        isolation_level=spec.kafka.isolation_level,
        config=dict(spec.kafka.config),
        secret_env=dict(secret_env or {}),
    )


def build_work_units(
    spec: StreamSpec, plan: BatchPlan, attempt: int, kafka: KafkaClientSettings, units: int | None = None
) -> tuple[WorkUnit, ...]:
    """One unit per executor, as the driver would pin them for ``plan`` under ``spec`` now, into
    at most ``units`` (a pool's executor count; default ``executors.max``) (previews; the driver
    itself runs the units of the pinned attempt)."""
    return work_units(spec.name, plan, pin(spec, plan, units), attempt, kafka)
