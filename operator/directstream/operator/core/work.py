"""From a batch plan to the work units executors receive (pure and deterministic)."""

from __future__ import annotations

from directstream.executor.contract import KafkaClientSettings, ProcessorSettings, WorkUnit

from .planning import BatchPlan, split_work
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
    spec: StreamSpec, plan: BatchPlan, attempt: int, kafka: KafkaClientSettings
) -> tuple[WorkUnit, ...]:
    """One unit per executor. The split depends only on the plan and the spec, so every
    attempt of a batch reads exactly the same ranges in the same units."""
    processor = ProcessorSettings(spec.processor.sink, dict(spec.processor.options))
    groups = split_work(plan.ranges, spec.executors.max, spec.executors.max_records)
    return tuple(
        WorkUnit(
            stream=spec.name,
            batch_id=plan.batch_id,
            attempt=attempt,
            index=index,
            ranges=ranges,
            kafka=kafka,
            processor=processor,
        )
        for index, ranges in enumerate(groups)
    )
