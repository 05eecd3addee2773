"""One DirectStream on Kubernetes: the shared driver loop with the cluster's adapters.

The kopf daemon of a stream runs ``StreamRunner.run``. It re-reads the live spec at every
batch boundary (suspend, rewinds and rate changes take effect there), keeps the status
(the write-ahead plan, committed offsets, conditions, lag) through ``StatusStore``, and
turns driver events into conditions and Kubernetes events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .adapters.job_launcher import JobLauncher
from .adapters.kafka import KafkaOffsets, KafkaOffsetsPort
from .adapters.kube import AsyncKubeApi, KubeError
from .adapters.postgres_offsets import DEFAULT_DSN_ENV, AsyncOffsetStore, PostgresOffsetStore
from .core.executor_pod import parse_cluster_spec
from .core.manifests import ManifestError, secret_env_for
from .core.planning import TopicPartition
from .core.spec import SpecError, StreamSpec
from .core.state import StreamState
from .core.status import apply_outcome, build_status, format_time, outcome_for_event, state_from_status
from .core.work import executor_kafka_settings
from .driver import Driver
from .outcomes import Step
from .ports import DriverEvent, KafkaUnavailable, OffsetStoreUnavailable

log = logging.getLogger(__name__)

KAFKA_BACKOFF_MAX_S = 60.0
KUBE_RETRY_S = 30.0  # a refused API call (RBAC, quota, admission) is retried this often
FAILED_RETRY_S = 300.0  # a stream Failed for good tries again this often (or on a spec change)
EventPoster = Callable[[str, str, str], None]  # (type, reason, message)
# -- metrics hook (metrics.StreamMetrics): (event, phase, committed, latest) -------------------
MetricsHook = Callable[
    [DriverEvent, str, Mapping[TopicPartition, int], Mapping[TopicPartition, int] | None], None
]


def no_metrics(
    event: DriverEvent, phase: str, committed: Mapping[TopicPartition, int], latest: object
) -> None:
    """The default hook: runner tests and ``--metrics-port 0`` record nothing."""


def now_iso() -> str:
    return format_time(datetime.now(UTC))


class StatusStore:
    """The operator's ``StatePort``: the stream state lives in the resource's status, written
    whole (with conditions, phase and lag) on every save."""

    def __init__(self, kube: AsyncKubeApi, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name
        self._initial = dict(status)
        self.conditions: list[dict[str, Any]] = [dict(c) for c in status.get("conditions") or []]
        self.phase: str = str(status.get("phase") or "Pending")
        self.generation = 0
        self.latest: Mapping[TopicPartition, int] | None = None
        self.job: str | None = None
        self.state: StreamState | None = None
        self._written: dict[str, Any] | None = None

    async def load(self) -> StreamState:
        if self.state is None:
            self.state = state_from_status(self._initial)
        return self.state

    async def save(self, state: StreamState) -> None:
        self.state = state
        status = build_status(
            state,
            generation=self.generation,
            phase=self.phase,
            conditions=self.conditions,
            latest=self.latest,
            job_name=self.job,
            applied_reset=state.applied_reset,
            now_iso=now_iso(),
        )
        if _without_clock(status) == self._written:
            return  # an idle tick changed nothing: no write (many streams, few seconds apart)
        await self._kube.replace_status(self._namespace, self._name, status)
        self._written = _without_clock(status)

    async def flush(self) -> None:
        """Write conditions and lag changed since the last save."""
        await self.save(self.state if self.state is not None else await self.load())

    def note(self, kind: str, message: str, warning: bool = False) -> tuple[str, str, str] | None:
        """Fold an event into conditions and phase; the Kubernetes event to post, if any."""
        outcome = outcome_for_event(kind, message, warning)
        self.conditions = apply_outcome(
            self.conditions, outcome, generation=self.generation, now_iso=now_iso()
        )
        if outcome.phase is not None:
            self.phase = outcome.phase
        return (outcome.event_type, outcome.reason, outcome.message) if outcome.emit_event else None


def _without_clock(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status minus the time the lag was measured."""
    copy = dict(status)
    if isinstance(copy.get("lag"), Mapping):
        copy["lag"] = {k: v for k, v in copy["lag"].items() if k != "updatedAt"}
    return copy


@dataclass
class StreamContext:
    """What the kopf daemon hands the runner (``body`` is kopf's live view of the object)."""

    namespace: str
    name: str
    uid: str
    body: Mapping[str, Any]
    executor_image: str
    wake: asyncio.Event
    post_event: EventPoster
    stopped: Callable[[], bool]
    metrics: MetricsHook = no_metrics  # the operator injects metrics.StreamMetrics


class StreamRunner:
    def __init__(self, kube: AsyncKubeApi, ctx: StreamContext) -> None:
        self._kube = kube
        self._ctx = ctx
        self.store = StatusStore(kube, ctx.namespace, ctx.name, ctx.body.get("status") or {})
        self._spec: StreamSpec | None = None
        self._driver: Driver | None = None
        self._driver_key: tuple[Any, ...] | None = None
        self._secret: tuple[str | None, list[str]] = (None, [])

    # -- events -----------------------------------------------------------------------------

    def observe(self, event: DriverEvent) -> None:
        posted = self.store.note(event.kind, event.message, event.warning)
        level = logging.WARNING if event.warning else logging.DEBUG if event.kind == "idle" else logging.INFO
        log.log(level, "%s/%s: %s", self._ctx.namespace, self._ctx.name, event.message)
        if posted is not None:
            self._ctx.post_event(*posted)
        # -- metrics: the event with the phase and offsets it left (driver.latest is the freshest)
        state, latest = self.store.state, self._driver.latest if self._driver else None
        self._ctx.metrics(
            event, self.store.phase, state.committed if state else {}, latest or self.store.latest
        )

    async def _note_and_flush(self, kind: str, message: str, warning: bool = False) -> None:
        self.observe(DriverEvent(kind, message, warning=warning))  # type: ignore[arg-type]
        await self.store.flush()

    # -- waiting ----------------------------------------------------------------------------

    def _generation(self) -> int:
        return int((self._ctx.body.get("metadata") or {}).get("generation") or 0)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake early for a spec change, a Job event or a stop."""
        deadline = asyncio.get_running_loop().time() + seconds
        self._ctx.wake.clear()
        while not self._ctx.stopped():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ctx.wake.wait(), timeout=min(remaining, 1.0))
                return

    async def _wait_for_change(self, at_most: float = 3600.0) -> None:
        generation = self._generation()
        deadline = asyncio.get_running_loop().time() + at_most
        while not self._ctx.stopped() and self._generation() == generation:
            if asyncio.get_running_loop().time() >= deadline:
                return
            await self._pause(5.0)

    # -- adapters ---------------------------------------------------------------------------

    async def _driver_for(self, spec: StreamSpec) -> Driver:
        """The driver, rebuilt when the Kafka connection settings or their Secret change."""
        secret_name = spec.kafka.config_from_secret
        secret_data: dict[str, str] = {}
        if secret_name:
            secret_data = await self._kube.secret_data(self._ctx.namespace, secret_name)
        dsn = await self._offsets_dsn(spec) if spec.offset_store == "postgres" else None
        key = (spec.kafka, tuple(sorted(secret_data.items())), spec.offset_store, dsn)
        self._secret = (secret_name, sorted(secret_data))
        if self._driver is None or key != self._driver_key:
            offsets = KafkaOffsetsPort(KafkaOffsets(spec, secret_data))
            launcher = JobLauncher(
                self._kube,
                namespace=self._ctx.namespace,
                owner={
                    "apiVersion": "directstream.io/v1alpha1",
                    "kind": "DirectStream",
                    "name": self._ctx.name,
                    "uid": self._ctx.uid,
                },
                image=self._ctx.executor_image,
                spec=lambda: self._spec or spec,
                secret=lambda: self._secret,
                wake=self._ctx.wake,
                on_job=self._on_job,
            )
            self._driver = Driver(
                spec,
                offsets=offsets,
                state=self.store,
                launcher=launcher,
                executor_kafka=executor_kafka_settings(spec, secret_env_for(sorted(secret_data))),
                observe=self.observe,
                external=AsyncOffsetStore(PostgresOffsetStore.for_spec(spec, dsn)) if dsn else None,
            )
            self._driver_key = key
        self._driver.spec = spec
        return self._driver

    async def _offsets_dsn(self, spec: StreamSpec) -> str:
        """The database the executors write to, as the operator can reach it: ``options.dsn``, or
        the executors' environment variable named by ``options.dsnEnv`` (its value, or the
        Secret key it comes from)."""
        options = spec.processor.options
        if options.get("dsn"):
            return str(options["dsn"])
        variable = str(options.get("dsnEnv", DEFAULT_DSN_ENV))
        for entry in spec.executors.env:
            if entry.get("name") != variable:
                continue
            if entry.get("value"):
                return str(entry["value"])
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name") and ref.get("key"):
                data = await self._kube.secret_data(self._ctx.namespace, str(ref["name"]))
                if str(ref["key"]) in data:
                    return data[str(ref["key"])]
                raise KubeError(
                    f"Secret {ref['name']} has no key {ref['key']} (the {variable} of spec.executors.env)"
                )
        raise KubeError(
            f"offsets.store postgres: set {variable} in spec.executors.env (a value or a secretKeyRef) "
            "so that the operator and the executors reach the same database"
        )

    async def _on_job(self, name: str | None) -> None:
        """Show the running Job in the status (``pending.job``) while the batch runs."""
        self.store.job = name
        if name is not None:
            await self.store.flush()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        state: StreamState | None = None
        targets: dict[TopicPartition, int] | None = None
        kafka_failures = 0
        next_tick = 0.0
        while not self._ctx.stopped():
            self.store.generation = self._generation()
            try:
                # Cluster checks too (a jsonl directory on a volume): refused before any batch runs.
                spec = parse_cluster_spec(
                    self._ctx.name, dict(self._ctx.body.get("spec") or {}), self._ctx.namespace
                )
            except SpecError as exc:
                await self._note_and_flush("invalid-spec", f"invalid spec: {exc}", warning=True)
                await self._wait_for_change()
                continue
            self._spec = spec
            if spec.suspend:
                if self.store.phase != "Suspended":
                    await self._note_and_flush(
                        "suspended", "suspended (spec.suspend: true) at a batch boundary"
                    )
                await self._wait_for_change()
                continue
            try:
                driver = await self._driver_for(spec)
                if state is None:
                    state = await driver.load_state()
                    self.observe(
                        DriverEvent("started", f"driving stream {self._ctx.name} (group {spec.group_id})")
                    )
                if spec.stop_at == "latest" and targets is None:
                    targets = {tp: m.latest for tp, m in (await driver.watermarks_now()).items()}
                elif spec.stop_at != "latest":
                    targets = None
            except (KafkaUnavailable, OffsetStoreUnavailable) as exc:
                kafka_failures += 1
                kind = "kafka-unavailable" if isinstance(exc, KafkaUnavailable) else "store-unavailable"
                await self._note_and_flush(kind, str(exc), warning=True)
                await self._pause(min(KAFKA_BACKOFF_MAX_S, 2.0**kafka_failures))
                continue
            except KubeError as exc:
                await self._note_and_flush("kube-api-error", f"Kubernetes API: {exc}", warning=True)
                await self._wait_for_change(at_most=KUBE_RETRY_S)
                continue
            if self.store.phase == "Completed" and targets is not None:
                await self._wait_for_change()
                continue
            try:
                result = await driver.step(state, targets)
            except ManifestError as exc:
                await self._note_and_flush(
                    "invalid-spec", f"cannot build the executor Job: {exc}", warning=True
                )
                await self._wait_for_change()
                continue
            except KubeError as exc:
                # e.g. RBAC: 403 jobs.batch is forbidden ... cannot create resource "jobs". The plan was
                # recorded before the launch, so the retry runs the very same ranges.
                state = self.store.state or state
                await self._note_and_flush("kube-api-error", f"Kubernetes API: {exc}", warning=True)
                await self._pause(KUBE_RETRY_S)
                continue
            state = result.state
            self.store.latest = driver.latest or None
            next_tick = await self._after(result, spec, next_tick)
            kafka_failures = kafka_failures + 1 if result.outcome == "kafka-unavailable" else 0
            if result.outcome == "kafka-unavailable":
                await self._pause(min(KAFKA_BACKOFF_MAX_S, 2.0**kafka_failures))

    async def _after(self, result: Step, spec: StreamSpec, next_tick: float) -> float:
        """Write what the step changed and wait for the next one; returns the next tick."""
        await self.store.flush()
        loop_time = asyncio.get_running_loop().time()
        if result.outcome in ("data-loss", "batch-failed"):
            self.store.phase = "Failed"
            await self.store.flush()
            await self._wait_for_change(at_most=FAILED_RETRY_S)
            return loop_time
        if result.outcome == "caught-up":
            return loop_time
        if result.outcome == "reset" or result.backlog:
            return loop_time
        if result.outcome == "kafka-unavailable":
            return loop_time
        next_tick = max(next_tick + spec.batch_interval_seconds, loop_time - 1e-3)
        await self._pause(next_tick - loop_time)
        return next_tick
