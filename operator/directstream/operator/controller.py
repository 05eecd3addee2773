"""The kopf handlers. They stay thin: a daemon per DirectStream runs the driver loop over its ``ClusterHost``;
Job events and spec changes only wake that daemon up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from directstream.executor.contract import ConfigurationError
from directstream.executor.contract.redact import scrub

from .adapters.kafka import KafkaOffsets
from .adapters.kube.api import GROUP, PLURAL, VERSION, AsyncKubeApi, KubeApi, load_client_config
from .adapters.kube.lease import LeaseApi, LeaseElector
from .adapters.pool_http import PoolHub
from .core.errors import KafkaUnavailable
from .core.leadership import ElectionSettings
from .core.manifests import ANNOTATION_STREAM, LABEL_STREAM, MANAGED_BY
from .core.spec import SpecError, parse_spec
from .hosts.cluster import StreamContext
from .hosts.leading import drive_while_leading
from .hosts.waits import wait_for_any
from .metrics import OperatorMetrics

log = logging.getLogger(__name__)


class Wakeups:
    """One asyncio.Event per stream, set by Job events and spec changes."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def event(self, namespace: str, name: str) -> asyncio.Event:
        return self._events.setdefault((namespace, name), asyncio.Event())

    def wake(self, namespace: str | None, name: str | None) -> None:
        event = self._events.get((namespace or "", name or ""))
        if event is not None:
            event.set()

    def forget(self, namespace: str, name: str) -> None:
        self._events.pop((namespace, name), None)


WAKEUPS = Wakeups()
POOL_WAKEUPS = Wakeups()  # pool pod events only: the pool's pod watcher waits on these


@dataclass(frozen=True)
class PoolEndpoint:
    """Where this operator serves warm executors (``--pool-host``/``--pool-port``/``--pool-url``)."""

    host: str
    port: int
    url: str


@dataclass(frozen=True)
class ElectionConfig:
    """Where the leader Lease lives and who this operator is (``directstream-operator`` flags)."""

    namespace: str
    name: str
    identity: str
    settings: ElectionSettings = field(default_factory=ElectionSettings)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Handler progress in annotations: the status belongs to the stream (and its schema would
    # prune kopf's own fields anyway).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/cleanup"
    # Our own events only; kopf would otherwise post every handler log line as an event.
    settings.posting.loggers = False
    settings.watching.server_timeout = 300
    if not hasattr(memo, "kube"):
        memo.kube = AsyncKubeApi(KubeApi(load_client_config()))
    election: ElectionConfig = memo.election
    metrics: OperatorMetrics | None = getattr(memo, "metrics", None)
    memo.leadership = LeaseElector(
        LeaseApi.own_client(election.namespace, election.name, election.settings.renew_deadline_s),
        election.identity,
        election.settings,
        on_change=(lambda leading: metrics.leader.set(1 if leading else 0)) if metrics else None,
    )
    memo.election_task = asyncio.create_task(memo.leadership.run(), name="leader election")
    endpoint: PoolEndpoint | None = getattr(memo, "pool_endpoint", None)
    if endpoint is not None and getattr(memo, "pool", None) is None:
        memo.pool = PoolHub(endpoint.host, endpoint.port, endpoint.url)
        await memo.pool.start()


@kopf.on.cleanup()
async def step_down(memo: kopf.Memo, **_: Any) -> None:
    """kopf runs this after every daemon stopped: hand the Lease to a standby at once."""
    memo.election_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await memo.election_task
    await memo.leadership.release()
    if getattr(memo, "pool", None) is not None:
        await memo.pool.close()


@kopf.on.probe(id="leadership")
async def leadership(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """In /healthz: leader or standby, who holds the Lease. A standby is healthy (it takes over
    when the leader goes); an election that stopped or hangs fails the probe."""
    elector: LeaseElector = memo.leadership
    task: asyncio.Task[None] = memo.election_task
    if task.done():
        why = "cancelled" if task.cancelled() else repr(task.exception())
        raise RuntimeError(f"the leader election stopped: {why}")
    hung = elector.settings.lease_duration_s + elector.settings.renew_deadline_s
    if elector.idle_for() > hung:
        raise RuntimeError(f"the leader election has not completed a round in {hung:g}s")
    return elector.describe()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5.0)
async def drive_stream(
    *,
    name: str,
    namespace: str | None,
    uid: str,
    body: kopf.Body,
    memo: Any,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    namespace = namespace or "default"

    def post_event(event_type: str, reason: str, message: str) -> None:
        kopf.event(body, type=event_type, reason=reason, message=message)

    leadership: LeaseElector = memo.leadership
    ctx = StreamContext(
        namespace=namespace,
        name=name,
        uid=uid,
        body=body,
        executor_image=str(getattr(memo, "executor_image", "")),
        wake=WAKEUPS.event(namespace, name),
        post_event=post_event,
        stopped=lambda: bool(stopped),
        leading=lambda: leadership.leading,
        allow_kafka_oidc=bool(getattr(memo, "allow_kafka_oidc", False)),
        pool=getattr(memo, "pool", None),
        pool_wake=POOL_WAKEUPS.event(namespace, name),
    )
    metrics: OperatorMetrics | None = getattr(memo, "metrics", None)  # None with --metrics-port 0
    if metrics is not None:
        ctx.start_metrics = lambda: metrics.for_stream(namespace, name)
        ctx.stop_metrics = lambda: metrics.forget(namespace, name)
    try:
        await drive_while_leading(memo.kube, ctx, leadership)
    finally:
        WAKEUPS.forget(namespace, name)
        POOL_WAKEUPS.forget(namespace, name)
        if metrics is not None:
            metrics.forget(namespace, name)  # a deleted stream leaves no stale series


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def spec_changed(*, name: str, namespace: str | None, **_: Any) -> None:
    WAKEUPS.wake(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def job_changed(
    *, namespace: str | None, labels: kopf.Labels, annotations: kopf.Annotations, **_: Any
) -> None:
    WAKEUPS.wake(namespace, stream_of(labels, annotations))


@kopf.on.event("", "v1", "pods", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def executor_pod_changed(
    *, namespace: str | None, labels: kopf.Labels, annotations: kopf.Annotations, **_: Any
) -> None:
    # The Job controller batches pod updates for about a second before the Job's status moves;
    # a finished executor pod already holds its result, so the stream reads it at once.
    WAKEUPS.wake(namespace, stream_of(labels, annotations))
    POOL_WAKEUPS.wake(namespace, stream_of(labels, annotations))


def stream_of(labels: kopf.Labels, annotations: kopf.Annotations) -> str | None:
    """The stream an executor Job or pod belongs to (the annotation has the full name when the
    label value had to be shortened)."""
    return annotations.get(ANNOTATION_STREAM) or labels.get(LABEL_STREAM)


def _wants_group_deleted(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("deleteConsumerGroup"))


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_wants_group_deleted, retries=5, backoff=5)
async def delete_consumer_group(
    *,
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """``spec.deleteConsumerGroup``: remove the group when the stream goes. Children (Jobs)
    are garbage-collected through their ownerReferences. Only the leader deletes the group (it
    may still be committing to it); a standby's handler holds kopf's finalizer until the leader
    released the object, or until this operator leads."""
    leadership: LeaseElector = memo.leadership
    while not leadership.leading:
        current = await memo.kube.read_stream(namespace or "default", name)
        if current is None or (current.get("metadata") or {}).get("uid") != uid:
            return  # the leader deleted the group and let the stream go
        await wait_for_any(leadership.settings.retry_period_s, leadership.became_leader)
    try:
        stream = parse_spec(name, dict(spec), namespace or "default")
    except SpecError as exc:
        logger.warning("not deleting the consumer group: the spec is invalid: %s", exc)
        return
    secret: dict[str, str] = {}
    if stream.kafka.config_from_secret:
        secret = await memo.kube.secret_data(stream.namespace, stream.kafka.config_from_secret)
    try:
        await asyncio.to_thread(KafkaOffsets(stream, secret).delete_group, stream.group_id)
    except ConfigurationError as exc:  # settings librdkafka refuses: retrying cannot help
        logger.warning("not deleting the consumer group: %s", scrub(str(exc)))
        return
    except KafkaUnavailable as exc:
        raise kopf.TemporaryError(f"deleting consumer group {stream.group_id}: {exc}", delay=10) from exc
    logger.info("deleted consumer group %s", stream.group_id)
