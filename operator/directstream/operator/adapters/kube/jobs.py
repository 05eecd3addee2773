"""The operator's executors: one Kubernetes Job per batch attempt, one pod per work unit.

The Job's name is a function of (stream, batch, attempt), so after an operator restart the
running attempt's Job is found and adopted instead of launched twice. Results come from the
pods' termination messages. The launcher waits on a wake-up that Job events set, with a slow
poll as a safety net; pods stuck Pending past ``executors.pendingTimeout`` fail the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from directstream.executor.contract import ExecutorResult, WorkUnit

from ...core.job_results import read_job_progress
from ...core.manifests import build_executor_job
from ...core.spec import StreamSpec
from .api import AsyncKubeApi

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

    async def run(self, units: Sequence[WorkUnit]) -> list[ExecutorResult]:
        if not units:
            return []
        spec = self._spec()
        secret_name, secret_keys = self._secret()
        manifest = build_executor_job(
            spec,
            units,
            namespace=self._namespace,
            owner=self._owner,
            image=self._image,
            secret_name=secret_name,
            secret_keys=secret_keys,
        )
        name = manifest["metadata"]["name"]
        if await self._kube.get_job(self._namespace, name) is None:
            await self._kube.create_job(self._namespace, manifest)
            log.info("created Job %s for batch %s attempt %s", name, units[0].batch_id, units[0].attempt)
        else:
            log.info(
                "adopted running Job %s (batch %s attempt %s)", name, units[0].batch_id, units[0].attempt
            )
        if self._on_job is not None:
            await self._on_job(name)
        try:
            results, job_done = await self._wait(name, len(units), spec.executors.pending_timeout_seconds)
        finally:
            if self._on_job is not None:
                await self._on_job(None)
        if all(r.ok for r in results) or not job_done:
            # Succeeded Jobs are not kept (a stream runs one every few seconds), nor a Job given up
            # on while its pods were stuck Pending. Failed ones stay, until
            # ttlSecondsAfterFinished, for their pods' logs.
            await self._kube.delete_job(self._namespace, name)
        return results

    async def _wait(
        self, name: str, expected: int, pending_timeout: float
    ) -> tuple[list[ExecutorResult], bool]:
        """The attempt's results, and whether the Job itself finished (not given up on)."""
        while True:
            self._wake.clear()
            job = await self._kube.get_job(self._namespace, name)
            if job is None:
                message = f"Job {name} was deleted before its executors finished"
                return [ExecutorResult(0, 0, i, ok=False, error=message) for i in range(expected)], True
            pods = await self._kube.job_pods(self._namespace, name)
            progress = read_job_progress(
                job, pods, expected, now=datetime.now(UTC), pending_timeout_seconds=pending_timeout
            )
            if progress.finished:
                conditions = (job.get("status") or {}).get("conditions") or []
                done = any(
                    c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
                )
                return list(progress.results), done or progress.pending == 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
