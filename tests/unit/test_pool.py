"""The warm pool's launcher and lease book with the in-memory fakes of its ports."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TypeVar

from directstream.executor.contract import (
    ExecutorResult,
    KafkaClientSettings,
    OffsetRange,
    ProcessorSettings,
    WorkUnit,
)
from directstream.executor.contract.pool import identity_of, stale_reason
from directstream.operator.core.leases import LeaseBook
from directstream.operator.core.pinning import AttemptRun
from directstream.operator.core.spec import ExecutorsSpec
from directstream.operator.driver.pool import PoolLauncher
from directstream.operator.testing import FakeExecutorProcesses, FakeLauncher, FakeTransport, MemoryState

T = TypeVar("T")
POOL = ExecutorsSpec(mode="pool", max=2)


def units(batch: int = 1, attempt: int = 1, count: int = 3, digest: str = "d1") -> tuple[WorkUnit, ...]:
    return tuple(
        WorkUnit(
            stream="s",
            batch_id=batch,
            attempt=attempt,
            index=i,
            ranges=(OffsetRange("t", i, 0, 10),),
            kafka=KafkaClientSettings("k:9092"),
            processor=ProcessorSettings("count", {}),
            digest=digest,
        )
        for i in range(count)
    )


def attempt_run(executors: ExecutorsSpec = POOL, **kw: int) -> AttemptRun:
    return AttemptRun(units(**kw), executors, "d1")


def ok(unit: WorkUnit) -> ExecutorResult:
    return ExecutorResult(unit.batch_id, unit.attempt, unit.index, ok=True, records=10, digest=unit.digest)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def with_pool(test: Callable[[PoolLauncher, FakeExecutorProcesses, FakeLauncher], Awaitable[T]]) -> T:
    async def body() -> T:
        transport = FakeTransport()
        processes = FakeExecutorProcesses(transport)
        job = FakeLauncher(MemoryState())
        pool = PoolLauncher("s", job, transport, processes, lease_seconds=0.5)
        try:
            return await test(pool, processes, job)
        finally:
            await pool.close()
            assert transport.closed and processes.alive() == set()

    return asyncio.run(body())


def test_job_mode_attempts_go_to_the_job_launcher_and_start_no_executor() -> None:
    async def test(pool: PoolLauncher, processes: FakeExecutorProcesses, job: FakeLauncher) -> None:
        results = await pool.run(attempt_run(ExecutorsSpec(mode="job")))
        assert [r.index for r in results] == [0, 1, 2]
        assert len(job.launches) == 1 and processes.started == []

    with_pool(test)


def test_a_pool_of_max_executors_serves_every_attempt_and_results_come_in_unit_order() -> None:
    async def test(pool: PoolLauncher, processes: FakeExecutorProcesses, job: FakeLauncher) -> None:
        for batch in (1, 2, 3):
            results = await pool.run(attempt_run(batch=batch))
            assert [(r.batch_id, r.index, r.ok) for r in results] == [(batch, i, True) for i in range(3)]
        assert processes.started == ["1-1", "1-2"], "the same two executors for every batch"
        assert job.launches == []

    with_pool(test)


def test_a_killed_executor_is_replaced_and_its_unit_runs_again_in_the_same_attempt() -> None:
    async def test(pool: PoolLauncher, processes: FakeExecutorProcesses, job: FakeLauncher) -> None:
        processes.hang = {1}
        run = asyncio.create_task(pool.run(attempt_run()))
        await until(lambda: any(u.index == 1 for e in processes.executors.values() for u in e.units))
        victim = processes.holding(1)
        processes.hang = set()
        processes.kill(victim)
        results = await run
        assert all(r.ok for r in results) and [r.index for r in results] == [0, 1, 2]
        reruns = [u for e in processes.executors.values() for u in e.units if u.index == 1]
        assert reruns and all((u.attempt, u.digest) == (1, "d1") for u in reruns), "same attempt's layout"
        await until(lambda: len(processes.alive()) == 2)  # after a short crash-loop backoff
        assert len(processes.alive()) == 2 and len(processes.started) == 3 and pool.replaced == 1

    with_pool(test)


def test_a_hung_executor_loses_its_lease_and_is_replaced() -> None:
    async def test(pool: PoolLauncher, processes: FakeExecutorProcesses, job: FakeLauncher) -> None:
        processes.hang = {0}
        run = asyncio.create_task(pool.run(attempt_run()))
        await until(lambda: any(u.index == 0 for e in processes.executors.values() for u in e.units))
        hung = processes.holding(0)
        processes.hang = set()
        results = await asyncio.wait_for(run, 10)
        assert all(r.ok for r in results)
        assert hung in processes.stopped and hung not in processes.alive()
        assert len(processes.alive()) == 2

    with_pool(test)


def test_changed_pinned_executor_settings_replace_the_whole_pool() -> None:
    async def test(pool: PoolLauncher, processes: FakeExecutorProcesses, job: FakeLauncher) -> None:
        await pool.run(attempt_run(batch=1))
        await pool.run(attempt_run(dataclasses.replace(POOL, max=3), batch=2))
        assert sorted(processes.stopped) == ["1-1", "1-2"]
        assert sorted(processes.alive()) == ["2-3", "2-4", "2-5"]

    with_pool(test)


def test_an_attempt_cancelled_mid_unit_leaves_no_unit_running() -> None:
    async def test(pool: PoolLauncher, processes: FakeExecutorProcesses, job: FakeLauncher) -> None:
        processes.hang = {0, 1, 2}
        run = asyncio.create_task(pool.run(attempt_run()))
        await until(lambda: sum(len(e.units) for e in processes.executors.values()) >= 2)
        holders = {e.executor_id for e in processes.executors.values() if e.units}
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        assert holders <= set(processes.stopped), "the executors of the cancelled units are stopped"
        assert len(processes.alive()) == 2, "and replaced"

    with_pool(test)


def test_results_of_an_old_attempt_or_a_revoked_lease_are_refused() -> None:
    book = LeaseBook(lease_seconds=10)
    book.offer(units(attempt=1))
    old = book.lease("a", now=0)
    assert old is not None
    book.offer(units(attempt=2))  # a new attempt: the old lease is revoked
    refused = book.complete("a", old.lease_id, ok(old.unit))
    assert refused is not None and "not current" in refused
    current = book.lease("a", now=0)
    assert current is not None and current.unit.attempt == 2
    stale = book.complete("a", current.lease_id, ok(units(attempt=1)[current.unit.index]))
    assert stale is not None and "does not match" in stale
    assert book.complete("b", current.lease_id, ok(current.unit)) is not None, "only its holder reports"
    assert book.complete("a", current.lease_id, ok(current.unit)) is None
    assert book.renew("a", current.lease_id, now=1) is None, "a completed lease is no longer current"


def test_a_unit_is_leased_to_one_executor_at_a_time_and_fails_after_max_leases() -> None:
    book = LeaseBook(lease_seconds=10, max_leases=2)
    book.offer(units(count=1))
    first = book.lease("a", now=0)
    assert first is not None and book.lease("b", now=0) is None, "never two holders"
    assert book.renew("a", first.lease_id, now=5) is not None
    assert book.expired(now=14) == [], "renewed until 15"
    assert book.expired(now=15) == ["a"]
    second = book.lease("b", now=15)
    assert second is not None and second.unit == first.unit
    book.lost("b", "executor b was killed by SIGKILL")
    assert book.done()
    (result,) = book.results()
    assert (
        not result.ok
        and result.error == "unit 0 lost its executor 2 times; last: executor b was killed by SIGKILL"
    )


def test_executors_refuse_stale_units() -> None:
    unit = units(batch=5, attempt=2)[0]
    assert stale_reason(unit, identity_of(unit), "s", (5, 2)) is None
    assert stale_reason(unit, identity_of(unit), "s", (4, 9)) is None
    older = stale_reason(unit, identity_of(unit), "s", (5, 3))
    assert older is not None and "older than batch 5 attempt 3" in older
    other = stale_reason(unit, identity_of(unit), "t", (0, 0))
    assert other is not None and "stream 's'" in other
    forged = stale_reason(unit, {**identity_of(unit), "digest": "x"}, "s", (0, 0))
    assert forged is not None and "does not match" in forged


def test_resize_before_the_first_attempt_sets_how_many_executors_it_starts() -> None:
    async def test(pool: PoolLauncher, processes: FakeExecutorProcesses, job: FakeLauncher) -> None:
        await pool.resize(1)
        assert processes.started == [] and pool.executors() == 0, "nothing starts before an attempt"
        results = await pool.run(attempt_run())
        assert [r.index for r in results] == [0, 1, 2] and processes.started == ["1-1"]
        await pool.resize(3)
        assert pool.executors() == 3 and processes.started == ["1-1", "1-2", "1-3"], "warm before the batch"

    with_pool(test)


def test_shrinking_between_attempts_stops_the_newest_idle_executors() -> None:
    async def test(pool: PoolLauncher, processes: FakeExecutorProcesses, job: FakeLauncher) -> None:
        await pool.resize(3)
        await pool.run(attempt_run(batch=1))
        await pool.resize(1)
        assert sorted(processes.stopped) == ["1-2", "1-3"] and processes.alive() == {"1-1"}
        results = await pool.run(attempt_run(batch=2))
        assert all(r.ok for r in results) and processes.alive() == {"1-1"}

    with_pool(test)


def test_shrinking_never_stops_an_executor_that_holds_a_lease() -> None:
    async def test(pool: PoolLauncher, processes: FakeExecutorProcesses, job: FakeLauncher) -> None:
        processes.hang = {0}
        run = asyncio.create_task(pool.run(attempt_run(count=1)))
        await until(lambda: any(e.units for e in processes.executors.values()))
        holder = processes.holding(0)
        await pool.resize(1)
        assert holder in processes.alive() and holder not in processes.stopped, "the holder stays"
        assert pool.executors() == 1 and len(processes.stopped) == 1
        await pool.resize(1)  # asking again changes nothing while the unit runs
        assert holder in processes.alive()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)

    with_pool(test)


def test_an_executor_killed_after_a_shrink_is_replaced_only_up_to_the_new_count() -> None:
    async def test(pool: PoolLauncher, processes: FakeExecutorProcesses, job: FakeLauncher) -> None:
        await pool.resize(3)
        await pool.run(attempt_run(batch=1))
        await pool.resize(2)
        processes.kill(sorted(processes.alive())[0])
        await until(lambda: len(processes.alive()) == 2)
        await asyncio.sleep(0.3)  # past the replacement backoff: no third one comes
        assert len(processes.alive()) == 2 and pool.executors() == 2

    with_pool(test)


def test_a_refused_replacement_fails_the_waiting_units_with_the_refusal() -> None:
    """A replacement the API server refuses (admission, a quota) is counted like a crash: the
    waiting units fail with the refusal once no executor stays up, instead of waiting forever."""

    async def test(pool: PoolLauncher, processes: FakeExecutorProcesses, job: FakeLauncher) -> None:
        processes.hang = {0, 1, 2}
        run = asyncio.create_task(pool.run(attempt_run()))
        await until(
            lambda: len(processes.alive()) == 2 and all(e.units for e in processes.executors.values())
        )
        processes.refuse = 'pods "s-pool-1-3" is forbidden: exceeded quota: pods'
        for executor_id in sorted(processes.alive()):
            processes.kill(executor_id)
        results = await asyncio.wait_for(run, 10)
        assert results and not any(r.ok for r in results)
        assert all("could not be started" in (r.error or "") for r in results), results
        assert all("exceeded quota" in (r.error or "") for r in results), results
        assert processes.alive() == set()

    with_pool(test)


def test_a_live_spec_back_in_job_mode_retires_an_idle_pool_without_waiting_for_a_batch() -> None:
    async def test(pool: PoolLauncher, processes: FakeExecutorProcesses, job: FakeLauncher) -> None:
        await pool.run(attempt_run(batch=1))
        assert len(processes.alive()) == 2
        await pool.follow(POOL)
        assert len(processes.alive()) == 2, "still pool: the executors stay warm"
        await pool.follow(ExecutorsSpec(mode="job"))
        assert processes.alive() == set() and processes.closed
        await pool.follow(ExecutorsSpec(mode="job"))  # nothing left to retire
        assert job.launches == []

    with_pool(test)
