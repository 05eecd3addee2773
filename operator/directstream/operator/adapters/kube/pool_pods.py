"""A cluster pool's executors (``executors.mode: pool``): bare pods owned by the stream, one per executor.

The ``ExecutorProcessesPort`` of the operator. Before its first executor starts, every pool pod
a previous driver run left (an operator killed, a leader that changed) is deleted and waited for:
such a pod may still be in the middle of a unit the new run replays, and the new run's token
(the stream's Secret, rewritten) already shuts it out. ``stop`` deletes the pod gracefully (the
executor aborts its open ranges on SIGTERM) and waits until it is gone. A watcher, woken by pod
events and polling as a safety net, reports a pod that ended, vanished or stays Pending past
``executors.pendingTimeout`` as dead, so its unit is leased again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from directstream.executor.contract.redact import scrub

from ...core.manifests import stream_selector
from ...core.pinning import AttemptRun
from ...core.pool_pod import (
    LABEL_POOL,
    build_pool_executor_pod,
    build_pool_token_secret,
    pool_layout,
    pool_selector,
    pool_token_secret_name,
)
from ...core.spec import StreamSpec
from .api import AsyncKubeApi, KubeError

log = logging.getLogger(__name__)
GONE_TIMEOUT_S = 120.0


class KubeExecutorPods:
    def __init__(
        self,
        kube: AsyncKubeApi,
        *,
        namespace: str,
        stream: str,
        owner: Mapping[str, Any],
        image: str,
        spec: Callable[[], StreamSpec],
        secret: Callable[[], tuple[str | None, Sequence[str]]],
        wake: asyncio.Event,
        poll_s: float = 2.0,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._stream = stream
        self._owner = dict(owner)
        self._image = image
        self._spec = spec
        self._secret = secret
        self._wake = wake
        self._poll_s = poll_s
        self._run = secrets.token_hex(4)  # this driver run's pods: names never clash with a leftover's
        self._pods: dict[str, str] = {}  # executor id -> pod name
        self._pending_timeout = 300.0
        self._token_written = ""
        self._leftovers_removed = False
        self._watcher: asyncio.Task[None] | None = None
        self._on_exit: Callable[[str, str], None] = lambda executor_id, how: None

    def watch(self, on_exit: Callable[[str, str], None]) -> None:
        self._on_exit = on_exit

    def alive(self) -> set[str]:
        return set(self._pods)

    def layout(self, attempt: AttemptRun) -> Hashable:
        spec = dataclasses.replace(self._spec(), executors=attempt.executors)
        return (attempt.executors, pool_layout(spec, attempt.units[0], self._secret()[0]))

    async def start(self, executor_id: str, url: str, token: str, stream: str, attempt: AttemptRun) -> None:
        if not self._leftovers_removed:
            await self._remove_all()
            self._leftovers_removed = True
        if token != self._token_written:
            secret = build_pool_token_secret(
                self._stream, namespace=self._namespace, owner=self._owner, run=self._run, token=token
            )
            await self._kube.put_secret(self._namespace, secret)
            self._token_written = token
        pod = build_pool_executor_pod(
            dataclasses.replace(self._spec(), executors=attempt.executors),
            attempt.units[0],
            namespace=self._namespace,
            owner=self._owner,
            image=self._image,
            run=self._run,
            executor_id=executor_id,
            url=url,
            kafka_secret=self._secret()[0],
        )
        await self._kube.create_pod(self._namespace, pod)
        self._pods[executor_id] = pod["metadata"]["name"]
        self._pending_timeout = attempt.executors.pending_timeout_seconds
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name=f"pool pods {stream}")

    async def stop(self, executor_id: str) -> None:
        name = self._pods.pop(executor_id, None)
        if name is None:
            return
        await self._kube.delete_pod(self._namespace, name)
        await self._gone(f"{pool_selector(self._stream)}", {name})

    async def close(self) -> None:
        """This run's pool pods gone (and an earlier run's, if this one started none), and the token
        Secret deleted."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        self._pods.clear()
        # Another run's pods only while this run started none: those may be a newer leader's.
        await self._remove_all(every_run=not self._leftovers_removed)
        await self._kube.delete_secret(self._namespace, pool_token_secret_name(self._stream))
        self._token_written = ""

    async def _remove_all(self, every_run: bool = True) -> None:
        selector = pool_selector(self._stream) if every_run else self._own_selector()
        pods = await self._kube.list_pods(self._namespace, selector)
        names = {p["metadata"]["name"] for p in pods}
        for pod in pods:
            if not pod["metadata"].get("deletionTimestamp"):
                log.info("deleting pool pod %s of an earlier run", pod["metadata"]["name"])
                await self._kube.delete_pod(self._namespace, pod["metadata"]["name"])
        await self._gone(selector, names)

    async def _gone(self, selector: str, names: set[str]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GONE_TIMEOUT_S
        while names:
            left = names & {
                p["metadata"]["name"] for p in await self._kube.list_pods(self._namespace, selector)
            }
            if not left:
                return
            if loop.time() > deadline:
                raise KubeError(f"pool pods {sorted(left)} were not gone within {GONE_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.25)

    def _own_selector(self) -> str:
        return f"{stream_selector(self._stream)},{LABEL_POOL}={self._run}"

    async def _watch(self) -> None:
        selector = self._own_selector()
        while True:
            self._wake.clear()
            known = dict(self._pods)  # a pod created while the list is in flight is not judged by it
            try:
                pods = {
                    p["metadata"]["name"]: p for p in await self._kube.list_pods(self._namespace, selector)
                }
            except KubeError as exc:
                log.warning("cannot list the pool's pods: %s", exc)
                pods = None
            for executor_id, name in known.items():
                if pods is None or self._pods.get(executor_id) != name:
                    continue
                death = pod_death(pods.get(name), self._pending_timeout)
                if death is not None:
                    del self._pods[executor_id]
                    if pods.get(name) is not None:
                        await self._kube.delete_pod(self._namespace, name)
                    self._on_exit(executor_id, f"(pod {name}) {death}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)


def pod_death(
    pod: Mapping[str, Any] | None, pending_timeout: float, now: datetime | None = None
) -> str | None:
    """How an executor pod died, or None while it lives (a pod stuck Pending counts as dead)."""
    if pod is None:
        return "was deleted"
    status = pod.get("status") or {}
    phase = status.get("phase")
    terminated: Mapping[str, Any] = {}
    waiting: Mapping[str, Any] = {}
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        terminated = state.get("terminated") or terminated
        waiting = state.get("waiting") or waiting
    if phase in ("Failed", "Succeeded") or terminated:
        code = terminated.get("exitCode")
        how = f"exited with code {code}" if code is not None else f"ended ({phase})"
        reason = terminated.get("reason") or status.get("reason")
        message = scrub(str(terminated.get("message") or status.get("message") or "")).strip()
        return how + (f" ({reason})" if reason else "") + (f": {message[-300:]}" if message else "")
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None  # terminating: dead once it is gone or its container ended
    if phase == "Pending":
        created = (pod.get("metadata") or {}).get("creationTimestamp")
        if isinstance(created, str):
            since = datetime.fromisoformat(created.replace("Z", "+00:00"))
            if ((now or datetime.now(UTC)) - since).total_seconds() > pending_timeout:
                why = waiting.get("reason") or "not scheduled or not started"
                detail = f": {waiting['message']}" if waiting.get("message") else ""
                return f"stayed Pending for more than {pending_timeout:g}s ({why}{detail})"
    return None
