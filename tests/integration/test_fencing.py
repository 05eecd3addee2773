"""Fencing on the real API server: status writes conditional on the resourceVersion they read
(adapters.kube.status_store), and the Lease election itself (adapters.kube.lease)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from directstream.operator.adapters.kube.api import AsyncKubeApi, KubeApi, KubeError
from directstream.operator.adapters.kube.lease import LeaseApi, LeaseElector
from directstream.operator.adapters.kube.status_store import StatusStore
from directstream.operator.core.errors import Fenced, NotLeading
from directstream.operator.core.leadership import ElectionSettings
from directstream.operator.core.state import StreamState
from directstream.operator.core.status import state_from_status
from tests.harness.kube_fixtures import Kube
from tests.harness.operator_fixtures import get_stream, stream_manifest

pytestmark = [pytest.mark.k8s]

T0 = ("t", 0)


@pytest.fixture
def stream(kube: Kube, crd: str, namespace: str) -> Iterator[str]:
    """A DirectStream that no operator drives: the test plays the operators."""
    spec = {"topics": ["t"], "processor": {"sink": "count"}}
    kube.kubectl("apply", "-f", "-", input=stream_manifest("fenced", namespace, "127.0.0.1:1", spec))
    yield "fenced"


@pytest.fixture
def api(kube: Kube) -> Iterator[AsyncKubeApi]:
    client = kube.api_client()
    try:
        yield AsyncKubeApi(KubeApi(client))
    finally:
        client.close()


def committed_in(kube: Kube, namespace: str, name: str) -> dict[tuple[str, int], int]:
    return dict(state_from_status(get_stream(kube, namespace, name).get("status")).committed)


def at(offset: int) -> StreamState:
    return StreamState(committed={T0: offset}, next_batch_id=offset + 1)


def test_a_status_write_with_a_stale_resource_version_is_refused(
    kube: Kube, namespace: str, stream: str, api: AsyncKubeApi
):
    async def scenario() -> None:
        deposed = StatusStore(api, namespace, stream, {})
        leader = StatusStore(api, namespace, stream, {})
        await deposed.load()  # the old leader read the stream ...
        await leader.load()  # ... and so did the new one, which commits first
        await leader.save(at(10))
        with pytest.raises(Fenced, match=r"changed by another writer.*the committed offsets"):
            await deposed.save(at(5))
        # The API server itself refuses the stale resourceVersion, whatever the client thinks.
        stale = get_stream(kube, namespace, stream)["metadata"]["resourceVersion"]
        await leader.save(at(20))
        with pytest.raises(KubeError) as refused:
            await api.replace_status(namespace, stream, {"committed": {"t": {"0": 1}}}, stale)
        assert refused.value.status == 409

    asyncio.run(scenario())
    assert committed_in(kube, namespace, stream) == {T0: 20}, "only the leader's commits stand"


def test_unrelated_changes_to_the_object_do_not_fence_the_writer(
    kube: Kube, namespace: str, stream: str, api: AsyncKubeApi
):
    """kopf's annotations and finalizer, a spec edit and a label all bump the resourceVersion; the
    stream's durable state is still what the store last wrote, so it writes on."""

    async def scenario() -> None:
        store = StatusStore(api, namespace, stream, {})
        await store.load()
        await store.save(at(1))
        changes = [
            ["annotate", "directstream", stream, "directstream.io/last-handled-configuration={}"],
            ["patch", "directstream", stream, "--type=merge", "-p", '{"spec":{"batchInterval":"2s"}}'],
            ["patch", "directstream", stream, "--type=merge", "-p", '{"metadata":{"finalizers":["x.io/y"]}}'],
            ["label", "directstream", stream, "team=a"],
        ]
        for offset, change in enumerate(changes, start=2):
            await asyncio.to_thread(kube.kubectl, *change, "-n", namespace)
            await store.save(at(offset))
            assert committed_in(kube, namespace, stream) == {T0: offset}

    try:
        asyncio.run(scenario())
    finally:
        kube.kubectl(
            "patch",
            "directstream",
            stream,
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
        )


class LosesAnswers(AsyncKubeApi):
    """The write reaches the API server but its answer is lost (a timeout, a dropped connection)."""

    def __init__(self, api: AsyncKubeApi) -> None:
        super().__init__(api.sync)
        self.lose_next = False

    async def replace_status(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        written = await super().replace_status(*args, **kwargs)
        if self.lose_next:
            self.lose_next = False
            raise KubeError("writing the status: the API server did not answer: read timed out")
        return written


def test_a_write_whose_answer_was_lost_is_not_taken_for_another_writer(
    kube: Kube, namespace: str, stream: str, api: AsyncKubeApi
):
    async def scenario() -> None:
        lossy = LosesAnswers(api)
        store = StatusStore(lossy, namespace, stream, {})
        await store.load()
        lossy.lose_next = True
        with pytest.raises(KubeError, match="did not answer"):
            await store.save(at(3))  # it landed, but the store cannot know
        await store.save(at(4))  # 409 (its own write moved the version); re-read: it is ours

    asyncio.run(scenario())
    assert committed_in(kube, namespace, stream) == {T0: 4}


def test_a_store_without_the_lease_writes_nothing(kube: Kube, namespace: str, stream: str, api: AsyncKubeApi):
    before = get_stream(kube, namespace, stream)["metadata"]["resourceVersion"]

    async def scenario() -> None:
        store = StatusStore(api, namespace, stream, {}, may_write=lambda: False)
        await store.load()
        with pytest.raises(NotLeading, match="no longer holds the leader Lease"):
            await store.save(at(7))

    asyncio.run(scenario())
    assert get_stream(kube, namespace, stream)["metadata"]["resourceVersion"] == before


FAST = ElectionSettings(lease_duration_s=3, renew_deadline_s=2.0, retry_period_s=0.5)


def test_of_two_candidates_exactly_one_leads_and_a_crashed_or_released_leader_is_replaced(
    kube: Kube, namespace: str
):
    """Two electors on the real Lease, sampled every 50 ms: never two leaders; a leader that
    stops renewing (a crash) is replaced within the lease duration and a retry period or two;
    one that releases the Lease (a clean stop) within a retry period or two."""

    async def scenario() -> dict[str, float]:
        clients = [kube.api_client(), kube.api_client()]
        a, b = (
            LeaseElector(LeaseApi(c, namespace, "election", 2.0), name, FAST)
            for c, name in zip(clients, ("a", "b"), strict=True)
        )
        tasks = {e.identity: asyncio.create_task(e.run()) for e in (a, b)}
        leaders_seen: set[str] = set()

        async def sample(seconds: float, until: Any = None) -> float:
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                leading = [e.identity for e in (a, b) if e.leading]
                assert len(leading) <= 1, f"two leaders: {leading}"
                leaders_seen.update(leading)
                if until is not None and until():
                    return time.monotonic() - started
                await asyncio.sleep(0.05)
            return seconds

        try:
            await sample(3.0)
            first = a if a.leading else b
            other = b if first is a else a
            assert first.leading and not other.leading
            tasks[first.identity].cancel()  # it stops renewing without a word
            crash = await sample(10.0, until=lambda: other.leading)
            assert other.leading
            tasks[first.identity] = asyncio.create_task(first.run())  # back, as a standby
            await sample(2.0)
            assert other.leading and not first.leading
            tasks[other.identity].cancel()
            await other.release()
            handed_back = await asyncio.to_thread(other.api.get)
            assert handed_back is not None
            assert handed_back.record.holder in ("", first.identity), "the release was refused"
            release = await sample(10.0, until=lambda: first.leading)
            assert first.leading
            return {"crash": crash, "release": release}
        finally:
            for task in tasks.values():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for c in clients:
                c.close()

    took = asyncio.run(scenario())
    print(f"takeover after a crash {took['crash']:.1f}s, after a release {took['release']:.1f}s")
    # A standby counts the lease duration from when it saw the last renewal (up to a retry period
    # x 1.2 after it) and notices the expiry on its next try (another 1.2 periods), plus the calls.
    assert took["crash"] <= FAST.lease_duration_s + 2 * 1.2 * FAST.retry_period_s + 2.0
    assert took["release"] <= 2 * 1.2 * FAST.retry_period_s + 2.0
