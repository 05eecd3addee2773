"""The kopf handlers. They stay thin: a daemon per DirectStream runs the driver loop over its ``ClusterHost``;
Job events and spec changes only wake that daemon up."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from .adapters.kafka import KafkaOffsets
from .adapters.kube.api import GROUP, PLURAL, VERSION, AsyncKubeApi, KubeApi, load_client_config
from .core.errors import KafkaUnavailable
from .core.manifests import ANNOTATION_STREAM, LABEL_STREAM, MANAGED_BY
from .core.spec import SpecError, parse_spec
from .hosts.cluster import StreamContext, run_cluster_stream
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

    ctx = StreamContext(
        namespace=namespace,
        name=name,
        uid=uid,
        body=body,
        executor_image=str(getattr(memo, "executor_image", "")),
        wake=WAKEUPS.event(namespace, name),
        post_event=post_event,
        stopped=lambda: bool(stopped),
    )
    metrics: OperatorMetrics | None = getattr(memo, "metrics", None)  # None with --metrics-port 0
    if metrics is not None:
        ctx.metrics = metrics.for_stream(namespace, name)
    try:
        await run_cluster_stream(memo.kube, ctx)
    finally:
        WAKEUPS.forget(namespace, name)
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


def stream_of(labels: kopf.Labels, annotations: kopf.Annotations) -> str | None:
    """The stream an executor Job or pod belongs to (the annotation has the full name when the
    label value had to be shortened)."""
    return annotations.get(ANNOTATION_STREAM) or labels.get(LABEL_STREAM)


def _wants_group_deleted(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("deleteConsumerGroup"))


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_wants_group_deleted, retries=5, backoff=5)
async def delete_consumer_group(
    *, name: str, namespace: str | None, spec: kopf.Spec, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    """``spec.deleteConsumerGroup``: remove the group when the stream goes. Children (Jobs)
    are garbage-collected through their ownerReferences."""
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
    except KafkaUnavailable as exc:
        raise kopf.TemporaryError(f"deleting consumer group {stream.group_id}: {exc}", delay=10) from exc
    logger.info("deleted consumer group %s", stream.group_id)
