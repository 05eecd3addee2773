"""Leader election: the operator campaigns for one ``coordination.k8s.io/v1`` Lease in the background.

``LeaseApi`` makes the blocking calls (each write carries the resourceVersion it read, so of two
candidates only one wins). ``LeaseElector`` runs the pure ``core.leadership.Election`` every
retry period, each call in a worker thread, and answers ``leading`` at any moment from its own
clock, so a leader that cannot renew stops leading at the renew deadline even while a call hangs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from ...core.leadership import JITTER, Election, ElectionSettings, LeaseRecord, Wait, Write
from .api import KubeError, describe_refusal, unanswered

log = logging.getLogger(__name__)


class LeaseConflict(KubeError):
    """Another candidate wrote the Lease since we read it (409)."""


def _micro_time(moment: datetime | None) -> str | None:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class LeaseState:
    record: LeaseRecord
    resource_version: str


class LeaseApi:
    """Blocking reads and conditional writes of one Lease."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str, timeout_s: float) -> None:
        self._api = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self._timeout = timeout_s

    @classmethod
    def own_client(cls, namespace: str, name: str, timeout_s: float) -> LeaseApi:
        """With a client of its own (the loaded configuration): renewals never queue behind the
        streams' calls."""
        return cls(client.ApiClient(), namespace, name, timeout_s)

    @property
    def where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def get(self) -> LeaseState | None:
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self._timeout, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise describe_refusal(exc, f"reading {self.where}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise unanswered(exc, f"reading {self.where}") from exc
        try:
            doc = json.loads(lease.data)
            spec = doc.get("spec") or {}
            record = LeaseRecord(
                holder=str(spec.get("holderIdentity") or ""),
                duration_s=int(spec.get("leaseDurationSeconds") or 0),
                acquired_at=_parse_time(spec.get("acquireTime")),
                renewed_at=_parse_time(spec.get("renewTime")),
                transitions=int(spec.get("leaseTransitions") or 0),
            )
            return LeaseState(record, str(doc["metadata"]["resourceVersion"]))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise KubeError(f"{self.where} is malformed ({exc!r}): delete it to start afresh") from exc

    def write(self, record: LeaseRecord, resource_version: str | None) -> str:
        """Create the Lease (``resource_version`` None) or replace it if still at that version;
        the new resourceVersion. ``LeaseConflict`` when another candidate was first."""
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": record.holder or None,
                "leaseDurationSeconds": record.duration_s,
                "acquireTime": _micro_time(record.acquired_at),
                "renewTime": _micro_time(record.renewed_at),
                "leaseTransitions": record.transitions,
            },
        }
        try:
            if resource_version is None:
                lease = self._api.create_namespaced_lease(
                    self.namespace, body, _request_timeout=self._timeout
                )
            else:
                lease = self._api.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=self._timeout
                )
        except ApiException as exc:
            described = describe_refusal(exc, f"writing {self.where}")
            if exc.status == 409:
                raise LeaseConflict(str(described), 409) from exc
            raise described from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise unanswered(exc, f"writing {self.where}") from exc
        return str(lease.metadata.resource_version)


class LeaseElector:
    """Campaigns for the Lease until cancelled. ``became_leader`` / ``became_standby`` are set
    while this operator leads / does not lead; ``leading`` is exact at any moment."""

    def __init__(
        self,
        api: LeaseApi,
        identity: str,
        settings: ElectionSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.api = api
        self.identity = identity
        self.settings = settings
        self.election = Election(identity, settings)
        self.became_leader = asyncio.Event()
        self.became_standby = asyncio.Event()
        self.became_standby.set()
        self.last_error: str | None = None
        self.last_round: float | None = None
        self._clock = clock
        self._wall = wall
        self._on_change = on_change
        self._version: str | None = None
        self._holder: str | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._started = clock()

    @property
    def leading(self) -> bool:
        return self.became_leader.is_set() and self.election.leading(self._clock())

    @property
    def holder(self) -> str | None:
        """Who holds the Lease, as last read ("" when released, None before the first read)."""
        return self._holder

    async def run(self) -> None:
        try:
            while True:
                await self._round()
                period = self.settings.retry_period_s
                if not self.leading:
                    period *= random.uniform(1.0, JITTER)
                await asyncio.sleep(period)
        finally:
            if self._expiry is not None:
                self._expiry.cancel()

    async def _round(self) -> None:
        started = self._clock()
        try:
            current = await asyncio.to_thread(self.api.get)
            decision = self.election.decide(current.record if current else None, self._clock(), self._wall())
            match decision:
                case Wait(holder=holder):
                    if holder != self._holder and not self.became_leader.is_set():
                        log.info(
                            "leader election: standby (%s): %s is held by %s; this operator drives "
                            "no stream until it holds the Lease",
                            self.identity,
                            self.api.where,
                            holder,
                        )
                    self._holder = holder
                    self._set(False, f"the Lease is held by {holder}")
                case Write(record=record, create=create, takeover=takeover):
                    version = None if create else (current.resource_version if current else None)
                    self._version = await asyncio.to_thread(self.api.write, record, version)
                    self.election.written(record, started)
                    self._holder = self.identity
                    previous = current.record.holder if current and takeover else ""
                    self._set(True, f"took over from {previous}" if previous else "acquired")
            self.last_error = None
        except LeaseConflict:
            self.election.refused()
            self._set(False, "another operator wrote the Lease first")
        except KubeError as exc:
            if str(exc) != self.last_error:
                log.warning(
                    "leader election: %s; %s",
                    exc,
                    "still leading until the renew deadline"
                    if self.leading
                    else "this operator stays a standby and drives no stream",
                )
            self.last_error = str(exc)
        self.last_round = self._clock()
        self._lapse()

    def _lapse(self) -> None:
        """Stop leading once the renew deadline passed without a renewal."""
        until = self.election.leads_until()
        if until is None or self._clock() >= until:
            self._set(False, f"not renewed within the renew deadline ({self.settings.renew_deadline_s:g}s)")
            return
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_later(until - self._clock(), self._lapse)

    def _set(self, leading: bool, why: str, level: int = logging.WARNING) -> None:
        was = self.became_leader.is_set()
        if leading == was:
            return
        where = self.api.where
        if leading:
            self.became_standby.clear()
            self.became_leader.set()
            log.info("leader election: this operator (%s) leads: %s %s", self.identity, why, where)
        else:
            self.became_leader.clear()
            self.became_standby.set()
            log.log(
                level, "leader election: this operator (%s) stopped leading %s: %s", self.identity, where, why
            )
        if self._on_change is not None:
            self._on_change(leading)

    def standby_reason(self) -> str:
        holder = self._holder
        if self.last_error and not holder:
            return f"{self.api.where} cannot be read or written: {self.last_error}"
        if holder == self.identity:
            return f"this operator could not renew {self.api.where} in time"
        return f"{self.api.where} is held by {holder or 'nobody yet'}"

    async def release(self) -> None:
        """Stop leading and hand the Lease back (a clean stop), so a standby takes over within a
        retry period instead of a lease duration. Call it only once nothing drives a stream."""
        self._set(False, "the operator is stopping", logging.INFO)
        record = self.election.released(self._wall())
        if record is None:
            return
        try:
            await self._hand_back(record)
        except KubeError as exc:
            log.warning("leader election: could not release %s: %s", self.api.where, exc)

    async def _hand_back(self, record: LeaseRecord) -> None:
        version = self._version
        for _ in range(3):
            if version is not None:
                try:
                    await asyncio.to_thread(self.api.write, record, version)
                    log.info("leader election: released %s", self.api.where)
                    return
                except LeaseConflict:
                    pass
            # A renewal still in flight when the campaign was cancelled lands without us learning
            # its version: read again and hand back only what this operator still holds.
            current = await asyncio.to_thread(self.api.get)
            if current is None or current.record.holder != self.identity:
                return
            version = current.resource_version
        raise LeaseConflict(f"writing {self.api.where}: it kept changing under the release", 409)

    def idle_for(self) -> float:
        """Seconds since the last round of the campaign ended (since start before the first)."""
        return self._clock() - (self.last_round if self.last_round is not None else self._started)

    def describe(self) -> dict[str, Any]:
        """For /healthz: the role, who holds the Lease, the last error."""
        return {
            "role": "leader" if self.leading else "standby",
            "identity": self.identity,
            "lease": f"{self.api.namespace}/{self.api.name}",
            "holder": self._holder,
            "lastError": self.last_error,
        }
