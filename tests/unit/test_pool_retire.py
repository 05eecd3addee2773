"""A pool retired when the stream goes back to ``job`` (a cluster's pods and token Secret go with it),
and a pool replaced when the executors' layout (not only the executor settings) changes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Hashable

from directstream.operator.core.pinning import AttemptRun
from directstream.operator.core.spec import ExecutorsSpec
from directstream.operator.driver.pool import PoolLauncher
from directstream.operator.testing import FakeExecutorProcesses, FakeLauncher, FakeTransport, MemoryState
from tests.unit.test_pool import attempt_run, with_pool


def test_a_job_attempt_after_pool_attempts_stops_every_executor_and_releases_the_pool() -> None:
    async def test(pool: PoolLauncher, processes: FakeExecutorProcesses, job: FakeLauncher) -> None:
        await pool.run(attempt_run(batch=1))
        assert len(processes.alive()) == 2 and not processes.closed
        results = await pool.run(attempt_run(ExecutorsSpec(mode="job"), batch=2))
        assert [r.ok for r in results] == [True, True, True] and len(job.launches) == 1
        assert processes.alive() == set() and processes.closed, "no warm executor stays for a job stream"
        assert processes.transport.closed
        await pool.run(attempt_run(batch=3))
        assert len(processes.alive()) == 2, "back to pool: a new pool"

    with_pool(test)


class LayoutProcesses(FakeExecutorProcesses):
    """Executors whose layout also names the units' Kafka secret variables (as a cluster's pods do)."""

    def layout(self, attempt: AttemptRun) -> Hashable:
        return (attempt.executors, tuple(sorted(attempt.units[0].kafka.secret_env.items())))


def test_the_pool_is_replaced_when_its_layout_changes_with_the_same_executor_settings() -> None:
    async def body() -> None:
        transport = FakeTransport()
        processes = LayoutProcesses(transport)
        pool = PoolLauncher("s", FakeLauncher(MemoryState()), transport, processes, lease_seconds=0.5)
        try:
            first = attempt_run(batch=1)
            await pool.run(first)
            before = processes.alive()
            kafka = dataclasses.replace(first.units[0].kafka, secret_env={"sasl.password": "V0"})
            units = tuple(dataclasses.replace(u, batch_id=2, kafka=kafka) for u in first.units)
            results = await pool.run(AttemptRun(units, first.executors, first.digest))
            assert all(r.ok for r in results)
            assert processes.alive() and not (processes.alive() & before), "a new pool for the new layout"
            assert set(processes.stopped) == before
        finally:
            await pool.close()

    asyncio.run(body())
