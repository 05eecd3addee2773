"""One batch at a time: plan, record, launch, commit (the steps the loop in ``loop.py`` runs).

All I/O comes in through ports (offsets, state, launcher), so this module decides *when*
things happen and the pure core decides *what* they are.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

from directstream.executor.contract import ExecutorResult, KafkaClientSettings, PermanentError

from ..core import events as ev
from ..core.errors import KafkaUnavailable, KubeApiError, OffsetStoreUnavailable, StateTooLarge
from ..core.pinning import AttemptRun, pin, spec_fingerprint, work_units
from ..core.planning import (
    BatchPlan,
    DataLossError,
    PlanInputs,
    TopicPartition,
    Watermarks,
    plan_batch,
    reset_offsets,
)
from ..core.rate import next_rate
from ..core.spec import ResetSpec, StreamSpec
from ..core.state import LedgerEntry, StreamState, check_state_size
from ..core.status import lag_of
from ..core.topic_lifecycle import compare_topics, skip_lost, topic_records
from .chains import OffsetsTable
from .outcomes import BatchFailed, Step, dead_letter_event, describe_failures, gave_up_message, poison_note
from .ports import ExecutorScalePort, ExternalOffsetsPort, LauncherPort, Observer, OffsetsPort, StatePort
from .scaling import pinned_units, rescale, resume_scale, scale_changed, units_for
from .settings import DEFAULT_SETTINGS, DriverSettings, backoff
from .topics import (
    TopicsNow,
    announce_recreated,
    as_planned,
    caught_up,
    check_recorded_plan,
    drop_unread,
    dropped_event,
    still_read,
    topics_now,
)


async def _no_sleep(seconds: float) -> None:
    """For a driver that never waits between attempts (previews)."""


class Driver:
    def __init__(
        self,
        spec: StreamSpec,
        *,
        offsets: OffsetsPort,
        state: StatePort,
        launcher: LauncherPort,
        executor_kafka: KafkaClientSettings,
        observe: Observer,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = _no_sleep,
        settings: DriverSettings = DEFAULT_SETTINGS,
        external: ExternalOffsetsPort | None = None,
        scaler: ExecutorScalePort | None = None,
    ) -> None:
        self.spec = spec
        self._offsets = offsets
        self._store = state
        self._launcher = launcher
        self._executor_kafka = executor_kafka
        self._observe = observe
        self._now = clock
        self._sleep = sleep
        self._settings = settings
        self._external = external
        self._scaler = scaler  # a pool's executor count (executors.mode: pool)
        self._table = OffsetsTable(external, state, observe) if external is not None else None
        self._group_behind = False
        self._ids_at_ends: dict[str, str] = {}
        self._deferred: tuple[int, str] | None = None  # the deferred spec change already reported
        self.latest: dict[TopicPartition, int] = {}

    async def close(self) -> None:
        """Release what the launcher keeps between batches (a pool's warm executors)."""
        close = getattr(self._launcher, "close", None)
        if close is not None:
            await close()

    # -- start-up ---------------------------------------------------------------------------

    async def load_state(self) -> StreamState:
        """The stored state; for a stream never run, offsets the Kafka group already has.
        If the group drifted from the stored offsets, say so and put the group right."""
        state = await self._store.load()
        now = await topics_now(self._offsets)
        if state.pending is None:  # a recorded plan resolves its own ranges first
            state = await drop_unread(state, now, self._store, self._external, self._observe)
        if self._table is not None:
            state = await self._table.adopt(state, now)
        group = await self._offsets.committed(self.spec.group_id)  # the stream's partitions only
        if state.is_new:
            if group:
                self._observe(
                    ev.Started(message=f"resuming from the offsets of consumer group {self.spec.group_id}")
                )
                state = replace(state, committed=group)
            return state
        stored = still_read(state, now, state.committed)  # a recreated topic's offsets are not compared
        drift = {tp: (off, group.get(tp)) for tp, off in stored.items() if group.get(tp) != off}
        if drift:
            sample = ", ".join(
                f"{t}[{p}] stored {s} group {g}" for (t, p), (s, g) in sorted(drift.items())[:5]
            )
            self._observe(
                ev.Drift(
                    message=f"consumer group {self.spec.group_id} differs from the stored offsets "
                    f"({sample}); re-committing the stored offsets"
                )
            )
            await self._offsets.commit(self.spec.group_id, stored)
        if state.ledger:
            # A stop between the last commit and its release left that batch's Jobs (files).
            await self._launcher.release(state.ledger[-1].batch_id)
        return state

    async def watermarks_now(self) -> dict[TopicPartition, Watermarks]:
        """Earliest and latest offsets of every partition the stream reads now (the ends of a run
        until caught up; their topics' ids too, so that old offsets of a topic recreated since
        are not taken for having reached them)."""
        now = await topics_now(self._offsets)
        self._ids_at_ends = {topic: info.id for topic, info in now.topics.items()}
        return await self._offsets.watermarks(now.partitions)

    # -- planning ---------------------------------------------------------------------------

    async def plan_next(
        self, state: StreamState, stop_offsets: Mapping[TopicPartition, int] | None
    ) -> BatchPlan:
        """The next batch (read-only: offsets of topics no longer read are left out, not dropped)."""
        now = await topics_now(self._offsets)
        changes = compare_topics(state.committed, state.topics, now.partitions, now.topics)
        plan, _ = await self._plan(state.with_topics(state.topics, changes.dropped), now, stop_offsets)
        return plan

    async def _plan(
        self, state: StreamState, now: TopicsNow, stop_offsets: Mapping[TopicPartition, int] | None
    ) -> tuple[BatchPlan, dict[TopicPartition, Watermarks]]:
        tps = now.partitions
        marks = await self._offsets.watermarks(tps)
        self.latest = {tp: m.latest for tp, m in marks.items()}
        first = state.next_batch_id == 1 and not state.committed
        timestamp_offsets: dict[TopicPartition, int] = {}
        start = self.spec.starting_offsets
        fresh = [tp for tp in tps if tp not in state.committed]
        if start.kind == "timestamp" and first and fresh and start.timestamp_ms is not None:
            timestamp_offsets = await self._offsets.offsets_for_timestamp(fresh, start.timestamp_ms)
        inputs = PlanInputs(
            committed=state.committed,
            watermarks=marks,
            timestamp_offsets=timestamp_offsets,
            backpressure_rate=state.rate.rate,
            first_batch=first,
            stop_offsets=stop_offsets,
            recreated=compare_topics(state.committed, state.topics, tps, now.topics).recreated,
        )
        return plan_batch(self.spec, inputs, state.next_batch_id), marks

    # -- one batch --------------------------------------------------------------------------

    async def run_batch(
        self, state: StreamState, stop_offsets: Mapping[TopicPartition, int] | None = None
    ) -> tuple[StreamState, BatchPlan | None]:
        """Plan (or resume) one batch, run it to success and commit it.

        Returns the new state and the committed plan (None when there was nothing to do).
        Raises DataLossError, BatchFailed or KafkaUnavailable with committed offsets unchanged.
        """
        if state.pending is not None:
            plan = state.pending.plan
            self._observe(
                ev.Resumed(
                    message=f"batch {plan.batch_id}: resuming the recorded plan "
                    f"(attempt {state.pending.attempt}, {plan.offsets} offsets)",
                    batch_id=plan.batch_id,
                    attempt=state.pending.attempt,
                    offsets=plan.offsets,
                )
            )
            state = await self._pinned(state)
            await resume_scale(self.spec, state, self._scaler)
            if self._table is not None:  # again: the crash may have come first
                await self._table.start(plan, state.committed)
            state = await self._check_recorded(state)
            plan = state.pending.plan if state.pending is not None else plan
        else:
            now = await topics_now(self._offsets)
            state = await drop_unread(state, now, self._store, self._external, self._observe)
            plan, marks = await self._plan(state, now, stop_offsets)
            scaled = await rescale(
                self.spec,
                state,
                plan,
                self.latest,
                scaler=self._scaler,
                now=self._now(),
                observe=self._observe,
            )
            if not plan.changes_positions(state.committed):
                if scale_changed(state, scaled):  # e.g. scaled down while idle: show it
                    await self._store.save(scaled)
                self._observe(
                    ev.Idle(message="no new records", lag=sum(lag_of(state.committed, self.latest).values()))
                )
                return scaled, None
            state = scaled
            for loss in plan.data_loss:
                self._observe(
                    ev.DataLossSkipped(
                        message=f"batch {plan.batch_id}: {loss}; skipping to offset {loss.resumed_at} "
                        "(onDataLoss: earliest)",
                        batch_id=plan.batch_id,
                        lost=loss.lost,
                    )
                )
            announce_recreated(plan, self._observe)
            planned = as_planned(state, plan, marks, now)  # the topics as planned, then the plan
            units = units_for(self.spec, planned)
            planned = planned.with_plan(plan, self._now(), pin(self.spec, plan, units))
            check_state_size(planned, plan, self._settings.max_state_bytes)
            state = planned
            await self._store.save(state)  # the write-ahead log: durable before any executor starts
            if self._table is not None:
                await self._table.start(plan, state.committed)
            self._observe(
                ev.Planned(
                    message=f"batch {plan.batch_id}: {len(plan.record_ranges)} ranges, "
                    f"{plan.offsets} offsets",
                    batch_id=plan.batch_id,
                    offsets=plan.offsets,
                    ranges=len(plan.record_ranges),
                )
            )
        started = self._now()
        state, results = await self._run_attempts(state)
        return await self._commit(state, results, started), plan

    async def _check_recorded(self, state: StreamState) -> StreamState:
        """The recorded plan against the topics now (retention, deleted or recreated topics)."""
        state, marks = await check_recorded_plan(state, self.spec, self._offsets, self._store, self._observe)
        self.latest = {**self.latest, **{tp: m.latest for tp, m in marks.items()}}
        return state

    async def _pinned(self, state: StreamState) -> StreamState:
        """A recorded batch runs with the settings it was planned with; say so when the spec has
        changed since (the change applies from the next batch)."""
        assert state.pending is not None
        pending = state.pending
        live = pin(self.spec, pending.plan, pinned_units(self.spec, pending))
        if pending.pinned is None:  # recorded by a version that did not pin: pin it now
            state = state.with_pinned(live)
            await self._store.save(state)
            return state
        if live.digest != pending.pinned.digest and self._deferred != (pending.plan.batch_id, live.digest):
            self._deferred = (pending.plan.batch_id, live.digest)
            self._observe(
                ev.SpecChangeDeferred(
                    message=f"batch {pending.plan.batch_id} runs with the executor, processor and split "
                    f"settings it was planned with; the spec change applies from batch "
                    f"{pending.plan.batch_id + 1}",
                    batch_id=pending.plan.batch_id,
                )
            )
        return state

    async def _run_attempts(self, state: StreamState) -> tuple[StreamState, list[ExecutorResult]]:
        while True:
            state = await self._pinned(state)
            pending = state.pending
            assert pending is not None and pending.pinned is not None
            plan, attempt, pinned = pending.plan, pending.attempt, pending.pinned
            if pending.exhausted is not None:
                if pending.exhausted == spec_fingerprint(self.spec):
                    raise BatchFailed(gave_up_message(state, self.spec.max_attempts), state)
                state = state.with_budget_renewed()  # the spec changed: maxAttempts more attempts
                await self._store.save(state)
                continue
            units = skip_lost(work_units(self.spec.name, plan, pinned, attempt, self._executor_kafka), plan)
            if not units:
                return state, []
            self._observe(
                ev.Launched(
                    message=f"batch {plan.batch_id} attempt {attempt}: {len(units)} executor(s)",
                    batch_id=plan.batch_id,
                    attempt=attempt,
                    executors=len(units),
                )
            )
            results = await self._launcher.run(AttemptRun(units, pinned.executors, pinned.digest))
            failures = [r for r in results if not r.ok]
            if not failures:
                return state, results
            reason = describe_failures(failures)
            failed = pending.failed_attempts + 1
            if failed >= self.spec.max_attempts:
                # Persisted: a restart or another step does not start the count again.
                state = state.with_exhausted(reason, spec_fingerprint(self.spec))
                await self._store.save(state)
                message = gave_up_message(state, self.spec.max_attempts)
                self._observe(ev.BatchGaveUp(message=message, batch_id=plan.batch_id, failures=len(failures)))
                raise BatchFailed(message, state)
            state = state.with_retry(reason)
            await self._store.save(state)
            wait = backoff(self._settings.retry_backoff_s, failed)
            self._observe(
                ev.Retrying(
                    message=f"batch {plan.batch_id} attempt {attempt} failed, retrying the same ranges "
                    f"in {wait:.1f}s: {reason}",
                    batch_id=plan.batch_id,
                    attempt=attempt + 1,
                    failures=len(failures),
                )
            )
            await self._sleep(wait)
            state = await self._check_recorded(state)  # e.g. retention deleted a range's start

    async def _commit(self, state: StreamState, results: list[ExecutorResult], started: float) -> StreamState:
        assert state.pending is not None
        pending = state.pending
        plan = pending.plan
        now = self._now()
        records = sum(r.records for r in results)
        notes = [
            f"skipped {loss.lost} lost records on {loss.topic}[{loss.partition}]" for loss in plan.data_loss
        ] + [
            f"topic {x.topic} recreated: read the new topic from its start; {x.unread} records of the "
            "old topic were never read"
            for x in plan.recreated
        ]
        entry = LedgerEntry(
            batch_id=plan.batch_id,
            attempts=pending.attempt,
            partitions=len(plan.record_ranges),
            records=records,
            bytes=sum(r.bytes for r in results),
            seconds=now - pending.planned_at,
            committed_at=now,
            note="; ".join(notes),
            skipped=sum(r.skipped for r in results),
            dead_lettered=sum(r.dead_lettered for r in results),
            executors=len(results),
        )
        state = state.with_commit(entry)
        if self.spec.rate.backpressure.enabled:
            state = replace(
                state,
                rate=next_rate(
                    state.rate,
                    now=now,
                    records=records,
                    processing_seconds=now - started,
                    scheduling_delay_seconds=max(0.0, started - pending.planned_at),
                    interval_seconds=self.spec.batch_interval_seconds,
                    min_rate=self.spec.rate.backpressure.min_per_partition,
                ),
            )
        if self._table is not None:
            await self._table.check(plan)
        await self._store.save(state)  # the stored offsets are the source of truth
        group_offsets = state.committed if self._group_behind else plan.next_offsets()
        lag = sum(lag_of(state.committed, self.latest).values())
        self._observe(
            ev.Committed(
                message=f"batch {plan.batch_id} committed: {records} records in "
                f"{entry.seconds:.2f}s, lag {lag}{poison_note(entry)}",
                batch_id=plan.batch_id,
                records=records,
                bytes=entry.bytes,
                seconds=entry.seconds,
                lag=lag,
                attempts=pending.attempt,
                positions_only=not plan.record_ranges,
                skipped=entry.skipped,
                dead_lettered=entry.dead_lettered,
            )
        )
        dead_lettered = dead_letter_event(entry, pending, self.spec)
        if dead_lettered is not None:
            self._observe(dead_lettered)
        # After "committed", so that a drift it reports is the condition left standing.
        await self._commit_group(group_offsets, plan.batch_id)
        # Only now, with the commit durable, may the attempt's Jobs (and their results) go.
        await self._launcher.release(plan.batch_id)
        return state

    async def _commit_group(self, offsets: Mapping[TopicPartition, int], batch_id: int) -> None:
        try:
            await self._offsets.commit(self.spec.group_id, offsets)
            self._group_behind = False
        except KafkaUnavailable as exc:
            # The batch is committed in the stored state; the group catches up at the next commit.
            self._group_behind = True
            self._observe(
                ev.Drift(
                    message=f"batch {batch_id}: stored offsets committed, but the consumer group "
                    f"{self.spec.group_id} could not be updated: {exc}",
                    batch_id=batch_id,
                )
            )

    # -- resets (rewind / replay) -----------------------------------------------------------

    async def apply_reset(self, state: StreamState, reset: ResetSpec) -> StreamState:
        """Move the committed offsets to the reset's target, once per reset id, at a batch
        boundary. A recorded batch that never committed is abandoned (the way out of a
        poison record), and says so in the ledger."""
        now = await topics_now(self._offsets)
        tps = now.partitions
        marks = await self._offsets.watermarks(tps)
        by_time: dict[TopicPartition, int] = {}
        if reset.to == "timestamp" and reset.timestamp_ms is not None:
            by_time = await self._offsets.offsets_for_timestamp(tps, reset.timestamp_ms)
        target = reset_offsets(reset, marks, by_time, state.committed)
        note = f"reset {reset.id}: rewound to {reset.to}"
        if state.pending is not None:
            note += f"; abandoned recorded batch {state.pending.plan.batch_id}"
        moved = sum(1 for tp, off in target.items() if off != state.committed.get(tp))
        # The rewind speaks of the topics as they are now: offsets of topics no longer read and
        # of a recreated topic's old incarnation (where the reset does not place them) go.
        changes = compare_topics(state.committed, state.topics, tps, now.topics)
        stale = sorted(changes.forget() - set(target))
        if self._external is not None:
            await self._external.forget(stale)
            await self._external.force(target)
        state = state.with_reset(target, reset.id, note, self._now())
        state = state.with_topics(topic_records(marks, now.topics), stale)
        await self._store.save(state)
        await self._commit_group(target, state.next_batch_id - 1)
        self._observe(
            ev.Rewound(message=f"{note} ({len(target)} partition(s))", partitions=len(target), moved=moved)
        )
        if changes.dropped:
            self._observe(dropped_event(changes))
        return state

    # -- one turn of the loop ----------------------------------------------------------------

    async def step(self, state: StreamState, targets: Mapping[TopicPartition, int] | None = None) -> Step:
        """One turn at a batch boundary: a pending reset, or the next batch. Failures come back
        as outcomes with their event already reported (never as exceptions), offsets unchanged."""
        try:
            reset = self.spec.reset
            if reset is not None and reset.id != state.applied_reset:
                state = await self.apply_reset(state, reset)
                return Step(state, "reset", message=f"applied reset {reset.id}")
            if targets is not None and state.pending is None and caught_up(state, targets, self._ids_at_ends):
                message = (
                    f"caught up: committed offsets reached the {len(targets)} partition end(s) seen at start"
                )
                self._observe(ev.CaughtUp(message=message))
                return Step(state, "caught-up", message=message)
            state, plan = await self.run_batch(state, targets)
        except DataLossError as exc:
            message = f"{exc}; committed offsets unchanged (onDataLoss: fail)"
            self._observe(ev.DataLossRefused(message=message))
            # The stored state: a refused recorded plan stays recorded, dropped topics stay dropped.
            return Step(await self._store.load(), "data-loss", message=message)
        except BatchFailed as exc:
            return Step(exc.state, "batch-failed", message=str(exc))
        except KafkaUnavailable as exc:
            self._observe(ev.KafkaUnreachable(message=str(exc)))
            return Step(state, "kafka-unavailable", message=str(exc))
        except OffsetStoreUnavailable as exc:
            # Retried like an unreachable broker: nothing moved, the recorded plan stays.
            self._observe(ev.OffsetStoreUnreachable(message=str(exc)))
            return Step(state, "store-unavailable", message=str(exc))
        except KubeApiError as exc:
            # e.g. RBAC: 403 jobs.batch is forbidden. The plan was recorded before the launch,
            # so the retry runs the very same ranges.
            message = f"Kubernetes API: {exc}"
            self._observe(ev.KubeApiRefused(message=message))
            return Step(await self._store.load(), "kube-error", message=message)
        except StateTooLarge as exc:
            # Nothing was written; the same plan would be refused again until the spec changes.
            self._observe(ev.StateTooLarge(message=str(exc), size=exc.size, limit=exc.limit))
            return Step(await self._store.load(), "invalid-spec", message=str(exc))
        except PermanentError as exc:
            # The spec passed the parser but cannot run (e.g. the executor Job cannot be built).
            message = f"cannot run batch {state.next_batch_id}: {exc}"
            self._observe(ev.InvalidSpec(message=message))
            return Step(await self._store.load(), "invalid-spec", message=message)
        if plan is None:
            return Step(state, "idle")
        return Step(state, "batch", plan=plan, backlog=plan.rate_capped)
