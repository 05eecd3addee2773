"""The operator's ``StatePort``: the stream state lives in the resource's status, written whole
(with conditions, phase and lag) on every save."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ...core.events import Event
from ...core.planning import TopicPartition
from ...core.state import StreamState
from ...core.status import PHASES, Phase, build_status, format_time, state_from_status
from ...core.status_fold import KubeEvent, StatusView, fold
from .api import AsyncKubeApi


def now_iso() -> str:
    return format_time(datetime.now(UTC))


def _phase(value: object) -> Phase:
    for phase in PHASES:
        if value == phase:
            return phase
    return "Pending"


class StatusStore:
    def __init__(self, kube: AsyncKubeApi, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name
        self._initial = dict(status)
        self.view = StatusView(
            _phase(status.get("phase")), tuple(dict(c) for c in status.get("conditions") or [])
        )
        self.generation = 0
        self.latest: Mapping[TopicPartition, int] | None = None
        self.job: str | None = None
        self.state: StreamState | None = None
        self._written: dict[str, Any] | None = None

    @property
    def phase(self) -> Phase:
        return self.view.phase

    async def load(self) -> StreamState:
        if self.state is None:
            self.state = state_from_status(self._initial)
        return self.state

    async def save(self, state: StreamState) -> None:
        self.state = state
        status = build_status(
            state,
            generation=self.generation,
            phase=self.view.phase,
            conditions=self.view.conditions,
            latest=self.latest,
            job_name=self.job,
            now_iso=now_iso(),
        )
        if _without_clock(status) == self._written:
            return  # an idle tick changed nothing: no write (many streams, few seconds apart)
        await self._kube.replace_status(self._namespace, self._name, status)
        self._written = _without_clock(status)

    async def flush(self) -> None:
        """Write conditions and lag changed since the last save."""
        await self.save(self.state if self.state is not None else await self.load())

    def note(self, event: Event) -> KubeEvent | None:
        """Fold an event into conditions and phase; the Kubernetes event to post, if any."""
        self.view, posted = fold(self.view, event, generation=self.generation, now_iso=now_iso())
        return posted


def _without_clock(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status minus the time the lag was measured."""
    copy = dict(status)
    if isinstance(copy.get("lag"), Mapping):
        copy["lag"] = {k: v for k, v in copy["lag"].items() if k != "updatedAt"}
    return copy
