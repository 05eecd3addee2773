"""The operator's ``StatePort``: the stream state lives in the resource's status, written whole
(with conditions, phase and lag) on every save.

Every write is conditional on the resourceVersion this store last read or wrote, so a deposed
leader (or any second writer) cannot overwrite what another operator committed. A conflict is
not always a rival: kopf's own annotation and finalizer patches, spec edits and label changes
bump the resourceVersion too. So a 409 re-reads the object, and the write is retried only if the
stream's durable state (committed offsets, the recorded plan and its attempt, batch ids) is still
what this store last saw; otherwise the store is ``Fenced`` and writes nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ...core.errors import Fenced, NotLeading, StateUnreadable
from ...core.events import Event
from ...core.planning import TopicPartition
from ...core.state import StreamState
from ...core.status import (
    PHASES,
    Phase,
    build_status,
    describe_state_change,
    durable_state,
    format_time,
    state_from_status,
)
from ...core.status_fold import KubeEvent, StatusView, fold
from .api import AsyncKubeApi, KubeError

log = logging.getLogger(__name__)
# Unrelated changes that land between a re-read and the retried write: give up after this many.
CONFLICT_RETRIES = 5


def now_iso() -> str:
    return format_time(datetime.now(UTC))


def _phase(value: object) -> Phase:
    for phase in PHASES:
        if value == phase:
            return phase
    return "Pending"


def _always() -> bool:
    return True


class StatusStore:
    def __init__(
        self,
        kube: AsyncKubeApi,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        may_write: Callable[[], bool] = _always,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name
        self._may_write = may_write  # False once this operator no longer holds the leader Lease
        self.view = StatusView(
            _phase(status.get("phase")), tuple(dict(c) for c in status.get("conditions") or [])
        )
        self.generation = 0
        self.latest: Mapping[TopicPartition, int] | None = None
        self.job: str | None = None
        self.state: StreamState | None = None
        self._written: dict[str, Any] | None = None
        self._version: str | None = None  # the resourceVersion every write is conditional on
        self._durable: dict[str, Any] | None = None  # durable state as last read or written here
        self._unconfirmed: dict[str, Any] | None = None  # sent, but no answer came back
        self._unreadable: dict[str, Any] | None = None  # the status as read, when its state is malformed

    @property
    def phase(self) -> Phase:
        return self.view.phase

    @property
    def where(self) -> str:
        return f"DirectStream {self._namespace}/{self._name}"

    async def load(self) -> StreamState:
        """The state as stored now: read fresh from the API server (not from a watch cache), so
        an operator that just took over starts where the last leader's last write left it."""
        if self.state is None:
            current = await self._read()
            self._unreadable = None
            try:
                self.state = state_from_status(current.get("status"))
            except StateUnreadable:
                self._unreadable = dict(current.get("status") or {})  # kept as it is: never overwritten
                raise
        return self.state

    async def save(self, state: StreamState) -> None:
        if self._version is None:
            await self.load()
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
        await self._write(status)
        self._written = _without_clock(status)

    async def flush(self) -> None:
        """Write conditions and lag changed since the last save. Before the first batch too: an
        invalid spec's condition must reach the status although no state was ever loaded."""
        if self.state is None:
            try:
                await self.load()
            except StateUnreadable:
                await self._write_conditions()
                return
        assert self.state is not None
        await self.save(self.state)

    async def _write_conditions(self) -> None:
        """A state that cannot be read: only conditions and phase are written, the fields as stored
        stay untouched (a whole status written from no state would reset the offsets)."""
        assert self._unreadable is not None
        status = {
            **self._unreadable,
            "phase": self.view.phase,
            "conditions": [dict(c) for c in self.view.conditions],
            "observedGeneration": self.generation,
        }
        if status != self._written:
            await self._write(status)
            self._written = status

    def note(self, event: Event) -> KubeEvent | None:
        """Fold an event into conditions and phase; the Kubernetes event to post, if any."""
        self.view, posted = fold(self.view, event, generation=self.generation, now_iso=now_iso())
        return posted

    async def _read(self) -> dict[str, Any]:
        current = await self._kube.read_stream(self._namespace, self._name)
        if current is None:
            raise KubeError(f"{self.where} is gone", 404)
        self._version = str(current["metadata"]["resourceVersion"])
        self._durable = durable_state(current.get("status"))
        return current

    async def _write(self, status: Mapping[str, Any]) -> None:
        assert self._version is not None
        mine = durable_state(status)
        for _ in range(CONFLICT_RETRIES):
            if not self._may_write():
                raise NotLeading(
                    f"not writing the status of {self.where}: this operator no longer holds the leader Lease"
                )
            # Until the API server answers, the write may have landed (a lost answer, a cancel).
            earlier, self._unconfirmed = self._unconfirmed, mine
            try:
                written = await self._kube.replace_status(self._namespace, self._name, status, self._version)
            except KubeError as exc:
                if exc.status != 409:
                    raise
                self._unconfirmed = earlier  # a 409 is an answer: this one did not land
                await self._after_conflict()
                continue
            self._version = str(written["metadata"]["resourceVersion"])
            self._durable = durable_state(written.get("status"))
            self._unconfirmed = None
            return
        raise KubeError(
            f"writing the status of {self.where}: it kept changing ({CONFLICT_RETRIES} conflicts in a row)",
            409,
        )

    async def _after_conflict(self) -> None:
        """Re-read after a 409: go on if only unrelated fields moved, else this store is fenced."""
        before = self._durable
        await self._read()
        theirs = self._durable
        assert theirs is not None and before is not None
        if theirs == self._unconfirmed:
            self._unconfirmed = None  # an earlier write of ours landed although its answer was lost
            return
        if theirs == before:
            log.debug("%s: the status write met an unrelated change; writing it again", self.where)
            return
        raise Fenced(
            f"the status of {self.where} was changed by another writer since this operator read "
            f"it ({describe_state_change(before, theirs)}): another operator drives this stream"
        )


def _without_clock(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status minus the time the lag was measured."""
    copy = dict(status)
    if isinstance(copy.get("lag"), Mapping):
        copy["lag"] = {k: v for k, v in copy["lag"].items() if k != "updatedAt"}
    return copy
