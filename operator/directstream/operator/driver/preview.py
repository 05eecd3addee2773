"""The one read-only preview of the next batch (``directstream plan``, ``kubectl directstream
plan``): what the driver would run next, computed as the driver does, writing nothing."""

from __future__ import annotations

from dataclasses import replace

from directstream.executor.contract import ExecutorResult

from ..core.pinning import AttemptRun
from ..core.planning import BatchPlan, TopicPartition, reset_offsets
from ..core.spec import StreamSpec
from ..core.state import StreamState
from ..core.work import executor_kafka_settings
from .batch import Driver
from .ports import OffsetsPort


class _ReadOnly:
    """State and launcher ports for planning only: a preview never writes or runs anything."""

    def __init__(self, state: StreamState) -> None:
        self._state = state

    async def load(self) -> StreamState:
        return self._state

    async def save(self, state: StreamState) -> None:
        raise RuntimeError("a preview never writes the stream state")

    async def run(self, attempt: AttemptRun) -> list[ExecutorResult]:
        raise RuntimeError("a preview never runs executors")

    async def release(self, batch_id: int) -> None:
        raise RuntimeError("a preview never removes anything")


async def preview_next_batch(
    spec: StreamSpec, state: StreamState, offsets: OffsetsPort
) -> tuple[BatchPlan, str]:
    """The batch the driver would run next, and where it comes from. A recorded plan resumes as
    is; a new stream starts from its consumer group's offsets (without putting a drifted group
    right); a requested reset not yet applied is applied in memory first, as the driver would."""
    if state.pending is not None:
        return state.pending.plan, "recorded (it resumes as is)"
    note = "next"
    if state.is_new:
        state = replace(state, committed=await offsets.committed(spec.group_id))
    if spec.reset is not None and spec.reset.id != state.applied_reset:
        tps = await offsets.partitions()
        marks = await offsets.watermarks(tps)
        by_time: dict[TopicPartition, int] = {}
        if spec.reset.to == "timestamp" and spec.reset.timestamp_ms is not None:
            by_time = await offsets.offsets_for_timestamp(tps, spec.reset.timestamp_ms)
        target = reset_offsets(spec.reset, marks, by_time, state.committed)
        state = replace(state, committed={**state.committed, **target}, pending=None)
        note = f"next, after reset {spec.reset.id} (to {spec.reset.to})"
    ports = _ReadOnly(state)
    driver = Driver(
        spec,
        offsets=offsets,
        state=ports,
        launcher=ports,
        executor_kafka=executor_kafka_settings(spec),
        observe=lambda _event: None,
    )
    return await driver.plan_next(state, None), note
