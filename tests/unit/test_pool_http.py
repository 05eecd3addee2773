"""The pool's HTTP transport on 127.0.0.1: the bearer token, and leases and results through it."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from directstream.executor.contract import ExecutorResult
from directstream.operator.adapters.pool_http import PoolHub, PoolServer
from directstream.operator.core.leases import Lease, LeaseBook
from tests.unit.test_pool import ok, units


class BookBackend:
    def __init__(self) -> None:
        self.book = LeaseBook(lease_seconds=10)
        self.book.offer(units(count=1))
        self.refused: list[str] = []

    async def lease(self, executor_id: str, wait_seconds: float) -> Lease | None:
        return self.book.lease(executor_id, 0)

    def renew(self, executor_id: str, lease_id: str) -> Lease | None:
        return self.book.renew(executor_id, lease_id, 1)

    def complete(self, executor_id: str, lease_id: str, result: ExecutorResult) -> str | None:
        return self.book.complete(executor_id, lease_id, result)

    def refuse(self, executor_id: str, lease_id: str, reason: str) -> None:
        self.refused.append(reason)


def post(url: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_only_the_token_holder_gets_units_and_only_the_lease_holder_reports() -> None:
    async def body() -> None:
        backend = BookBackend()
        server = PoolServer("127.0.0.1")
        url = await server.start(backend, "s3cret-token")
        assert url.startswith("http://127.0.0.1:")
        try:
            call = asyncio.to_thread
            assert (await call(post, url + "/v1/lease", "wrong", {"executor": "a"}))[0] == 401
            assert (await call(post, url + "/v1/lease", "", {"executor": "a"}))[0] == 401
            status, lease = await call(post, url + "/v1/lease", "s3cret-token", {"executor": "a"})
            assert status == 200 and lease["identity"]["batch"] == 1 and lease["unit"]["index"] == 0
            assert (await call(post, url + "/v1/lease", "s3cret-token", {"executor": "b"}))[0] == 204
            result = ok(units(count=1)[0]).to_json()
            other = {"executor": "b", "lease": lease["lease"], "result": result}
            assert (await call(post, url + "/v1/result", "s3cret-token", other))[0] == 409
            mine = {**other, "executor": "a"}
            assert (await call(post, url + "/v1/result", "s3cret-token", mine)) == (200, {"counted": True})
            assert backend.book.done()
            again = await call(
                post, url + "/v1/renew", "s3cret-token", {"executor": "a", "lease": lease["lease"]}
            )
            assert again[0] == 409, "a completed lease is not current"
        finally:
            await server.close()

    asyncio.run(body())


def test_the_operators_hub_routes_by_stream_and_a_token_opens_only_its_own_stream() -> None:
    async def body() -> None:
        hub = PoolHub("127.0.0.1", 0)
        first, second = BookBackend(), BookBackend()
        clicks = await hub.route("team-a", "clicks").start(first, "token-of-clicks")
        views = await hub.route("team-a", "views").start(second, "token-of-views")
        assert clicks.endswith("/streams/team-a/clicks") and views.endswith("/streams/team-a/views")
        base = clicks.removesuffix("/streams/team-a/clicks")
        try:
            call = asyncio.to_thread
            lease = {"executor": "a"}
            assert (await call(post, clicks + "/v1/lease", "token-of-views", lease))[0] == 401
            assert (await call(post, base + "/streams/team-a/nope/v1/lease", "token-of-clicks", lease))[
                0
            ] == 401
            status, got = await call(post, clicks + "/v1/lease", "token-of-clicks", lease)
            assert status == 200 and got["identity"]["stream"] == "s"
            assert second.book.waiting(), "the other stream's unit is still waiting"
            await hub.route("team-a", "clicks").close()
            assert hub.serving() == {("team-a", "views")}
            assert (await call(post, clicks + "/v1/lease", "token-of-clicks", lease))[0] == 401
        finally:
            await hub.close()

    asyncio.run(body())
