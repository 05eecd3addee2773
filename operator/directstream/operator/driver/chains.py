"""The offsets table in the user's database (``spec.offsets.store: postgres``), as the driver
keeps it in step: where the stream stands, chains started and moved, and checked after a batch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from ..core import events as ev
from ..core.planning import BatchPlan, TopicPartition
from ..core.state import StreamState
from ..core.topic_lifecycle import chain_moves
from .ports import ExternalOffsetsPort, Observer, StatePort
from .topics import TopicsNow, still_read


class OffsetsTable:
    def __init__(self, external: ExternalOffsetsPort, store: StatePort, observe: Observer) -> None:
        self._external = external
        self._store = store
        self._observe = observe

    async def adopt(self, state: StreamState, now: TopicsNow) -> StreamState:
        """The database says where the stream stands; a state that disagrees (outside a recorded
        batch, which replays) is put right. Rows of partitions not read now, and of a recreated
        topic (the old one's), do not count."""
        if state.pending is not None:
            return state
        stored = still_read(state, now, await self._external.read())
        differs = {
            tp: (state.committed.get(tp), off) for tp, off in stored.items() if state.committed.get(tp) != off
        }
        if not differs:
            return state
        if not state.is_new:
            sample = ", ".join(
                f"{t}[{p}] state {a} table {b}" for (t, p), (a, b) in sorted(differs.items())[:5]
            )
            self._observe(
                ev.Drift(
                    message=f"the offsets table differs from the stream state ({sample}); the table wins"
                )
            )
        state = replace(state, committed={**state.committed, **stored})
        await self._store.save(state)
        return state

    async def start(self, plan: BatchPlan, committed: Mapping[TopicPartition, int]) -> None:
        """Start the chain of new partitions at their first offset and move it over a data-loss
        skip, so the sink's compare-and-set finds each range's ``from``."""
        lacking, moves = chain_moves(plan, committed)  # a recreated topic's chains move too
        await self._external.forget(lacking)
        await self._external.move(moves)

    async def check(self, plan: BatchPlan) -> None:
        """After a batch, the database must stand at every range's end."""
        stored = await self._external.read()
        behind = [
            f"{r.topic}[{r.partition}] table {stored.get((r.topic, r.partition))} plan {r.until_offset}"
            for r in plan.record_ranges
            if stored.get((r.topic, r.partition)) != r.until_offset
        ]
        if behind:
            self._observe(
                ev.Drift(
                    message=f"batch {plan.batch_id}: the offsets table does not match the batch's ends: "
                    + ", ".join(behind[:5]),
                    batch_id=plan.batch_id,
                )
            )
