"""The operator's host: one DirectStream on Kubernetes.

The spec is the live object (re-read at every batch boundary, so suspend, rewinds and rate
changes take effect there); the state, conditions and lag live in the status; executors are
Jobs; events become conditions and Kubernetes Events; a stream that cannot go on waits for its
spec to change instead of exiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from directstream.executor.contract import ConfigurationError, PostgresConnection
from directstream.executor.contract.redact import remember, scrub

from ..adapters.kafka import KafkaOffsets, KafkaOffsetsPort
from ..adapters.kube.api import AsyncKubeApi, KubeError
from ..adapters.kube.jobs import JobLauncher
from ..adapters.kube.pool_pods import KubeExecutorPods
from ..adapters.kube.status_store import StatusStore
from ..adapters.pool_http import PoolHub
from ..adapters.postgres import AsyncOffsetStore, PostgresOffsetStore
from ..core import events as ev
from ..core.errors import NotLeading
from ..core.executor_pod import parse_cluster_spec
from ..core.manifests import secret_env_for
from ..core.planning import TopicPartition
from ..core.spec import StreamSpec
from ..core.spec_access import check_oidc, check_secret
from ..core.work import executor_kafka_settings
from ..driver import DEFAULT_SETTINGS, Driver, DriverSettings, RunMode, run_stream
from ..driver.outcomes import Decision, Halt
from ..driver.policies import wait_policy
from ..driver.pool import PoolLauncher
from ..driver.ports import LauncherPort
from .waits import wait_for_any

log = logging.getLogger(__name__)
EventPoster = Callable[[str, str, str], None]  # (type, reason, message)
# The metrics hook (metrics.StreamMetrics): (event, phase, committed, latest)
MetricsHook = Callable[
    [ev.Event, str, Mapping[TopicPartition, int], Mapping[TopicPartition, int] | None], None
]
STOP_CHECK_S = 1.0  # kopf's stop flag is polled this often while waiting
POOL_CLOSE_TIMEOUT_S = 60.0  # a pool's pods deleted when the stream's driving ends


def no_metrics(event: ev.Event, phase: str, committed: Mapping[TopicPartition, int], latest: object) -> None:
    """The default hook: ``--metrics-port 0`` records nothing."""


@dataclass
class StreamContext:
    """What the kopf daemon hands the host (``body`` is kopf's live view of the object)."""

    namespace: str
    name: str
    uid: str
    body: Mapping[str, Any]
    executor_image: str
    wake: asyncio.Event
    post_event: EventPoster
    stopped: Callable[[], bool]
    metrics: MetricsHook = no_metrics  # set from start_metrics while this operator leads
    leading: Callable[[], bool] = lambda: True  # False once this operator lost the leader Lease
    # The stream's series exist only on the leader: made when it starts driving, dropped when it stops.
    start_metrics: Callable[[], MetricsHook] = lambda: no_metrics
    stop_metrics: Callable[[], None] = lambda: None
    allow_kafka_oidc: bool = False  # --allow-kafka-oidc
    pool: PoolHub | None = None  # --pool-port: warm executors (executors.mode: pool) are served
    pool_wake: asyncio.Event = field(default_factory=asyncio.Event)  # set by the stream's pod events


async def run_cluster_stream(
    kube: AsyncKubeApi,
    ctx: StreamContext,
    settings: DriverSettings = DEFAULT_SETTINGS,
    announce: ev.Event | None = None,
) -> None:
    """The one driver loop over this stream's host (``announce``: an event to report first)."""
    host = ClusterHost(kube, ctx, settings)
    if announce is not None:
        host.observe(announce)
    try:
        await run_stream(host, RunMode.FOREVER, settings)
    finally:
        await host.close()


class LeaderOnlyOffsets:
    """The Kafka group commits only while this operator leads (the status write before it is
    fenced on its own; this closes the gap between the two)."""

    def __init__(self, port: KafkaOffsetsPort, leading: Callable[[], bool], where: str) -> None:
        self._port = port
        self._leading = leading
        self._where = where
        self.partitions = port.partitions
        self.topics = port.topics
        self.watermarks = port.watermarks
        self.offsets_for_timestamp = port.offsets_for_timestamp
        self.committed = port.committed

    async def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        _must_lead(self._leading, f"not committing consumer group {group} of {self._where}")
        await self._port.commit(group, offsets)


class LeaderOnlyTable:
    """The offsets table (``offsets.store: postgres``) moves only while this operator leads."""

    def __init__(self, store: AsyncOffsetStore, leading: Callable[[], bool], where: str) -> None:
        self._store = store
        self._leading = leading
        self._where = where
        self.read = store.read

    async def move(self, moves: Mapping[TopicPartition, tuple[int | None, int]]) -> None:
        _must_lead(self._leading, f"not moving the offsets table of {self._where}")
        await self._store.move(moves)

    async def force(self, offsets: Mapping[TopicPartition, int]) -> None:
        _must_lead(self._leading, f"not rewinding the offsets table of {self._where}")
        await self._store.force(offsets)

    async def forget(self, tps: Sequence[TopicPartition]) -> None:
        _must_lead(self._leading, f"not deleting chains of the offsets table of {self._where}")
        await self._store.forget(tps)


def _must_lead(leading: Callable[[], bool], what: str) -> None:
    if not leading():
        raise NotLeading(f"{what}: this operator no longer holds the leader Lease")


class ClusterHost:
    def __init__(self, kube: AsyncKubeApi, ctx: StreamContext, settings: DriverSettings) -> None:
        self._kube = kube
        self._ctx = ctx
        self._settings = settings
        self.store = StatusStore(
            kube, ctx.namespace, ctx.name, ctx.body.get("status") or {}, may_write=ctx.leading
        )
        self._spec: StreamSpec | None = None
        self._driver: Driver | None = None
        self._driver_key: tuple[Any, ...] | None = None
        self._secret: tuple[str | None, list[str]] = (None, [])
        self._launcher_kept: LauncherPort | None = None

    # -- events -----------------------------------------------------------------------------

    def observe(self, event: ev.Event) -> None:
        if isinstance(event, ev.Stopped):
            # The daemon stops when the operator exits or the stream is deleted: nothing to record.
            log.info("%s/%s: %s", self._ctx.namespace, self._ctx.name, event.message)
            return
        posted = self.store.note(event)
        level = (
            logging.WARNING
            if event.warning
            else logging.DEBUG
            if isinstance(event, ev.Idle)
            else logging.INFO
        )
        log.log(level, "%s/%s: %s", self._ctx.namespace, self._ctx.name, scrub(event.message))
        if posted is not None:
            self._ctx.post_event(posted.type, posted.reason, posted.message)
        # The metrics see the event with the phase and offsets it left (driver.latest is the freshest).
        state, latest = self.store.state, self._driver.latest if self._driver else None
        self._ctx.metrics(
            event, self.store.phase, state.committed if state else {}, latest or self.store.latest
        )

    async def checkpoint(self) -> None:
        if self._driver is not None and self._driver.latest:
            self.store.latest = self._driver.latest
        await self.store.flush()

    # -- the spec and the driver built for it -----------------------------------------------

    def _generation(self) -> int:
        return int((self._ctx.body.get("metadata") or {}).get("generation") or 0)

    async def read_spec(self) -> StreamSpec:
        self.store.generation = self._generation()
        # With the cluster's own checks (a jsonl directory on a volume): refused before any batch runs.
        spec = parse_cluster_spec(
            self._ctx.name,
            dict(self._ctx.body.get("spec") or {}),
            self._ctx.namespace,
            pool_endpoint=self._ctx.pool is not None,
        )
        check_oidc(spec, self._ctx.allow_kafka_oidc)
        self._spec = spec
        return spec

    async def driver_for(self, spec: StreamSpec) -> Driver:
        """The driver, rebuilt when the Kafka connection settings or their Secret change."""
        secret_name = spec.kafka.config_from_secret
        secret_data: dict[str, str] = {}
        if secret_name:
            secret_data = await self._kube.secret_data(self._ctx.namespace, secret_name)
            remember(secret_data.values())  # scrubbed from every message from now on
            check_secret(secret_name, secret_data, self._ctx.allow_kafka_oidc)
        dsn = await self._offsets_dsn(spec) if spec.offset_store == "postgres" else None
        key = (spec.kafka, tuple(sorted(secret_data.items())), spec.offset_store, dsn)
        self._secret = (secret_name, sorted(secret_data))
        if self._driver is None or key != self._driver_key:
            where = f"DirectStream {self._ctx.namespace}/{self._ctx.name}"
            table = AsyncOffsetStore(PostgresOffsetStore.for_spec(spec, dsn)) if dsn else None
            self._driver = Driver(
                spec,
                offsets=LeaderOnlyOffsets(
                    KafkaOffsetsPort(KafkaOffsets(spec, secret_data)), self._ctx.leading, where
                ),
                state=self.store,
                launcher=self._launcher(spec),
                executor_kafka=executor_kafka_settings(spec, secret_env_for(sorted(secret_data))),
                observe=self.observe,
                sleep=self.sleep,
                settings=self._settings,
                external=LeaderOnlyTable(table, self._ctx.leading, where) if table else None,
            )
            self._driver_key = key
        self._driver.spec = spec
        state = self.store.state
        if isinstance(self._launcher_kept, PoolLauncher) and (state is None or state.pending is None):
            await self._launcher_kept.follow(spec.executors)
        return self._driver

    def _launcher(self, spec: StreamSpec) -> LauncherPort:
        """One launcher for the whole run (kept across driver rebuilds: a pool outlives them)."""
        if self._launcher_kept is not None:
            return self._launcher_kept
        owner = {
            "apiVersion": "directstream.io/v1alpha1",
            "kind": "DirectStream",
            "name": self._ctx.name,
            "uid": self._ctx.uid,
        }
        job = JobLauncher(
            self._kube,
            namespace=self._ctx.namespace,
            owner=owner,
            image=self._ctx.executor_image,
            spec=lambda: self._spec or spec,
            secret=lambda: self._secret,
            wake=self._ctx.wake,
            on_job=self._on_job,
            poll_s=self._settings.job_poll_s,
        )
        self._launcher_kept = job
        if self._ctx.pool is not None:
            pods = KubeExecutorPods(
                self._kube,
                namespace=self._ctx.namespace,
                stream=self._ctx.name,
                owner=owner,
                image=self._ctx.executor_image,
                spec=lambda: self._spec or spec,
                secret=lambda: self._secret,
                wake=self._ctx.pool_wake,
            )
            route = self._ctx.pool.route(self._ctx.namespace, self._ctx.name)
            self._launcher_kept = PoolLauncher(self._ctx.name, job, route, pods)
        return self._launcher_kept

    async def close(self) -> None:
        """The run ended (stream deleted, operator stopping, leadership lost): stop the pool's pods."""
        close = getattr(self._launcher_kept, "close", None)
        if close is None:
            return
        if not self._ctx.leading():
            # A deposed leader leaves the pods to the new one, which removes them first; it only
            # stops serving the stream.
            if self._ctx.pool is not None:
                await self._ctx.pool.route(self._ctx.namespace, self._ctx.name).close()
            return
        try:
            await asyncio.wait_for(close(), POOL_CLOSE_TIMEOUT_S)
        except (KubeError, TimeoutError) as exc:
            # The next run deletes what is left before it starts executors of its own.
            log.warning("%s/%s: the pool was not stopped: %s", self._ctx.namespace, self._ctx.name, exc)

    async def _offsets_dsn(self, spec: StreamSpec) -> str:
        """The database the executors write to, as the operator can reach it: ``options.dsn``, or
        the executors' variable named by ``options.dsnEnv`` (its value, or the Secret key it
        comes from) in ``spec.executors.env``."""
        connection = PostgresConnection.from_options(spec.processor.options)
        entry = next((e for e in spec.executors.env if e.get("name") == connection.dsn_env), {})
        values: dict[str, str] = {}
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
        if entry.get("value"):
            values[connection.dsn_env] = str(entry["value"])
        elif ref.get("name") and ref.get("key"):
            data = await self._kube.secret_data(self._ctx.namespace, str(ref["name"]))
            if str(ref["key"]) not in data:
                raise KubeError(
                    f"Secret {ref['name']} has no key {ref['key']} "
                    f"(the {connection.dsn_env} of spec.executors.env)"
                )
            values[connection.dsn_env] = data[str(ref["key"])]
            remember([data[str(ref["key"])]])
        try:
            return connection.resolve(
                values.get, "spec.executors.env (a value or a secretKeyRef), the executors'"
            )
        except ConfigurationError as exc:
            raise KubeError(
                f"offsets.store postgres: the operator and the executors must reach the same database: {exc}"
            ) from exc

    async def _on_job(self, name: str | None) -> None:
        """Show the running Job in the status (``pending.job``) while the batch runs."""
        self.store.job = name
        if name is not None:
            await self.store.flush()

    # -- waiting and the terminal policy ----------------------------------------------------

    def stopping(self) -> bool:
        return self._ctx.stopped()

    async def _wait(self, seconds: float, *, wakeable: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        self._ctx.wake.clear()
        never = asyncio.Event()
        while not self._ctx.stopped():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            if await wait_for_any(min(remaining, STOP_CHECK_S), self._ctx.wake if wakeable else never):
                return

    async def sleep(self, seconds: float) -> None:
        await self._wait(seconds, wakeable=False)

    async def pause(self, seconds: float) -> None:
        await self._wait(seconds, wakeable=True)

    async def wait_for_change(self, at_most: float) -> None:
        generation = self._generation()
        deadline = asyncio.get_running_loop().time() + at_most
        while not self._ctx.stopped() and self._generation() == generation:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            await self.pause(min(remaining, 5.0))

    def on_halt(self, halt: Halt) -> Decision:
        return wait_policy(halt, self._settings)
