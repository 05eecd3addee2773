"""The operator's executors: one Kubernetes Job per batch attempt, one pod per work unit.

The Job's name is a function of (stream, batch, attempt), so after an operator restart the
running attempt's Job is found and adopted instead of launched twice — only when it is that very
attempt (stream uid, digest, units). The Job is created suspended; the attempt's units go into a
ConfigMap owned by it (one of that name owned by another Job or with another digest is replaced),
and only then is the Job resumed, an adopted Job still suspended too. Results come from the
termination messages of the pods that Job made (a pod that only claims to be one is ignored,
with a warning), and a succeeded Job stays until the batch's commit is durable; then it is
deleted with every other succeeded Job of a committed batch a crash or a refused deletion left.
The launcher waits on a wake-up that Job events set, with a slow poll as a safety net; pods
stuck Pending past ``executors.pendingTimeout`` fail the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from directstream.executor.contract import ExecutorResult

from ...core.job_results import foreign_job, read_job_progress
from ...core.manifests import (
    ANNOTATION_DIGEST,
    LABEL_BATCH,
    build_executor_job,
    build_work_units_configmap,
    stream_selector,
)
from ...core.pinning import AttemptRun
from ...core.spec import StreamSpec
from .api import AsyncKubeApi, KubeError

log = logging.getLogger(__name__)


class JobLauncher:
    def __init__(
        self,
        kube: AsyncKubeApi,
        *,
        namespace: str,
        owner: Mapping[str, Any],
        image: str,
        spec: Callable[[], StreamSpec],
        secret: Callable[[], tuple[str | None, Sequence[str]]],
        wake: asyncio.Event,
        on_job: Callable[[str | None], Awaitable[None]] | None = None,
        poll_s: float = 5.0,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._owner = dict(owner)
        self._image = image
        self._spec = spec
        self._secret = secret
        self._wake = wake
        self._on_job = on_job
        self._poll_s = poll_s  # besides the wake-ups (Job and pod events)
        self._succeeded: dict[int, str] = {}  # batch -> its succeeded Job, deleted on release

    async def run(self, attempt: AttemptRun) -> list[ExecutorResult]:
        units = attempt.units
        if not units:
            return []
        spec = dataclasses.replace(self._spec(), executors=attempt.executors)  # the pinned pod settings
        secret_name, secret_keys = self._secret()
        manifest = build_executor_job(
            spec,
            units,
            namespace=self._namespace,
            owner=self._owner,
            image=self._image,
            secret_name=secret_name,
            secret_keys=secret_keys,
            digest=attempt.digest,
        )
        name = manifest["metadata"]["name"]
        job = await self._create_or_adopt(manifest, attempt)
        await self._provide_units(job, attempt)
        if self._on_job is not None:
            await self._on_job(name)
        try:
            results, job_done = await self._wait(name, len(units), spec.executors.pending_timeout_seconds)
        finally:
            if self._on_job is not None:
                await self._on_job(None)
        if all(r.ok for r in results):
            # Kept until the batch's commit is durable (release): a restart in between adopts it
            # and reads the same results instead of running the batch again.
            self._succeeded[attempt.batch_id] = name
        elif not job_done:
            await self._kube.delete_job(self._namespace, name)  # given up on while its pods were Pending
        # Failed Jobs stay, until ttlSecondsAfterFinished, for their pods' logs.
        return results

    async def release(self, batch_id: int) -> None:
        """Delete the batch's succeeded Job, and those of earlier committed batches still there:
        an operator killed between a commit and the deletion, or a deletion refused, left them
        (their units ConfigMaps go with them). Failed Jobs stay for their logs until their TTL."""
        names = {self._succeeded.pop(batch_id, None)}
        for job in await self._kube.list_jobs(self._namespace, stream_selector(str(self._owner["name"]))):
            if _committed_and_succeeded(job, str(self._owner["uid"]), batch_id):
                names.add(str(job["metadata"]["name"]))
        for name in sorted(n for n in names if n is not None):
            await self._kube.delete_job(self._namespace, name)

    async def _provide_units(self, job: Mapping[str, Any], attempt: AttemptRun) -> None:
        """The units' ConfigMap of this very Job and attempt, then the Job resumed."""
        wanted = build_work_units_configmap(attempt.units, job=job, digest=attempt.digest)
        name = wanted["metadata"]["name"]
        existing = await self._kube.get_configmap(self._namespace, name)
        if existing is not None and _units_of(existing) != _units_of(wanted):
            log.warning("ConfigMap %s holds another attempt's units: replacing it", name)
            await self._kube.delete_configmap(self._namespace, name)
            existing = None
        if existing is None:
            await self._kube.create_configmap(self._namespace, wanted)
        if (job.get("spec") or {}).get("suspend"):
            await self._kube.resume_job(self._namespace, job["metadata"]["name"])

    async def _create_or_adopt(self, manifest: Mapping[str, Any], attempt: AttemptRun) -> dict[str, Any]:
        """Create the attempt's Job, or adopt the one already there if it is this very attempt
        (same stream uid, digest and unit count). A Job of the same name that is not (a stream
        deleted and made again, a hand-edited status) is deleted, and the attempt started anew."""
        name = manifest["metadata"]["name"]
        for _ in range(2):
            existing = await self._kube.get_job(self._namespace, name)
            if existing is None:
                created = await self._kube.create_job(self._namespace, manifest)
                if foreign_job(created, self._owner["uid"], attempt) is None:
                    log.info(
                        "created Job %s for batch %s attempt %s", name, attempt.batch_id, attempt.attempt
                    )
                    return created
                existing = created  # lost a race to another Job of that name
            reason = foreign_job(existing, self._owner["uid"], attempt)
            if reason is None:
                log.info(
                    "adopted running Job %s (batch %s attempt %s)", name, attempt.batch_id, attempt.attempt
                )
                return existing
            log.warning("Job %s is not this attempt's (%s): deleting it", name, reason)
            await self._kube.delete_job(self._namespace, name)
            await self._gone(name)
        raise KubeError(f"Job {self._namespace}/{name} keeps coming back with another attempt's identity")

    async def _gone(self, name: str, timeout_s: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while await self._kube.get_job(self._namespace, name) is not None:
            if asyncio.get_running_loop().time() > deadline:
                raise KubeError(f"Job {self._namespace}/{name} was not deleted within {timeout_s:.0f}s")
            await asyncio.sleep(0.5)

    async def _wait(
        self, name: str, expected: int, pending_timeout: float
    ) -> tuple[list[ExecutorResult], bool]:
        """The attempt's results, and whether the Job itself finished (not given up on)."""
        warned: set[str] = set()  # pods that claim to be the Job's, once each
        while True:
            self._wake.clear()
            job = await self._kube.get_job(self._namespace, name)
            if job is None:
                message = f"Job {name} was deleted before its executors finished"
                return [ExecutorResult(-1, -1, i, ok=False, error=message) for i in range(expected)], True
            pods = await self._kube.job_pods(self._namespace, name)
            progress = read_job_progress(
                job, pods, expected, now=datetime.now(UTC), pending_timeout_seconds=pending_timeout
            )
            for ignored in progress.ignored:
                if ignored not in warned:
                    warned.add(ignored)
                    log.warning("Job %s: ignoring %s; its result does not count", name, ignored)
            if progress.finished:
                conditions = (job.get("status") or {}).get("conditions") or []
                done = any(
                    c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
                )
                return list(progress.results), done or progress.pending == 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)


def _committed_and_succeeded(job: Mapping[str, Any], owner_uid: str, batch_id: int) -> bool:
    """A Job of this stream for a batch up to ``batch_id`` (committed) that completed."""
    metadata = job.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return False  # its deletion is under way
    if not any(
        ref.get("controller") and ref.get("uid") == owner_uid for ref in metadata.get("ownerReferences") or []
    ):
        return False
    batch = str((metadata.get("labels") or {}).get(LABEL_BATCH, ""))
    if not batch.isdigit() or int(batch) > batch_id:
        return False
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)


def _units_of(configmap: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a units ConfigMap this attempt's: its owning Job's uid, the digest and the units."""
    metadata = configmap.get("metadata") or {}
    owners = tuple(ref.get("uid") for ref in metadata.get("ownerReferences") or [])
    digest = (metadata.get("annotations") or {}).get(ANNOTATION_DIGEST)
    return owners, digest, dict(configmap.get("data") or {})
