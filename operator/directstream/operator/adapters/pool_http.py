"""The pool's transport: an HTTP endpoint on the driver's event loop that warm executors long-poll.

Only this module knows HTTP: it checks the bearer token (constant time), decodes the bodies of
``contract/pool.py`` and hands them to a :class:`~..core.leases.PoolBackend`.

- ``PoolServer``: one stream's endpoint (local mode: 127.0.0.1, a free port).
- ``PoolHub``: the operator's one endpoint for every stream it drives, each under
  ``/streams/<namespace>/<name>`` with its own token; ``hub.route(namespace, name)`` is that
  stream's ``PoolTransportPort``. An unknown stream is answered 401 like a wrong token, so the
  endpoint does not tell which streams exist.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from directstream.executor.contract import ContractError, ExecutorResult
from directstream.executor.contract.pool import (
    MAX_BODY_BYTES,
    PATH_LEASE,
    PATH_REFUSE,
    PATH_RENEW,
    PATH_RESULT,
    identity_of,
)

from ..core.leases import PoolBackend

log = logging.getLogger(__name__)
MAX_WAIT_SECONDS = 30.0
STREAM_PREFIX = "/streams/{namespace}/{name}"


class _Endpoint:
    """The four paths, for whichever (backend, token) a request resolves to."""

    def __init__(self, resolve: Callable[[web.Request], tuple[PoolBackend, bytes] | None]) -> None:
        self._resolve = resolve

    def add_routes(self, app: web.Application, prefix: str) -> None:
        app.router.add_post(prefix + PATH_LEASE, self._lease)
        app.router.add_post(prefix + PATH_RENEW, self._renew)
        app.router.add_post(prefix + PATH_RESULT, self._result)
        app.router.add_post(prefix + PATH_REFUSE, self._refuse)

    async def _body(self, request: web.Request) -> tuple[PoolBackend, dict[str, Any], str]:
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ").encode() if header.startswith("Bearer ") else b""
        served = self._resolve(request)
        # Compared even for an unknown stream, so the answer's timing does not tell it exists.
        token = served[1] if served is not None else b"\0" * 43
        if not hmac.compare_digest(given, token) or served is None:
            raise web.HTTPUnauthorized(text="a valid bearer token is required")
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            raise web.HTTPBadRequest(text=f"body is not JSON: {exc}") from exc
        executor = body.get("executor") if isinstance(body, dict) else None
        if not isinstance(executor, str) or not executor:
            raise web.HTTPBadRequest(text="body needs 'executor' (a string)")
        return served[0], body, executor

    async def _lease(self, request: web.Request) -> web.Response:
        backend, body, executor = await self._body(request)
        wait = body.get("waitSeconds", 5.0)
        wait = min(float(wait), MAX_WAIT_SECONDS) if isinstance(wait, (int, float)) else 5.0
        lease = await backend.lease(executor, max(wait, 0.0))
        if lease is None:
            return web.Response(status=204)
        return web.json_response(
            {
                "lease": lease.lease_id,
                "leaseSeconds": lease.seconds,
                "identity": identity_of(lease.unit),
                "unit": lease.unit.to_json(),
            }
        )

    async def _renew(self, request: web.Request) -> web.Response:
        backend, body, executor = await self._body(request)
        lease = backend.renew(executor, str(body.get("lease", "")))
        if lease is None:
            raise web.HTTPConflict(text="the lease is not current: stop the unit")
        return web.json_response({"leaseSeconds": lease.seconds})

    async def _result(self, request: web.Request) -> web.Response:
        backend, body, executor = await self._body(request)
        try:
            result = ExecutorResult.loads(json.dumps(body.get("result") or {}))
        except ContractError as exc:
            raise web.HTTPBadRequest(text=f"malformed result: {exc}") from exc
        refused = backend.complete(executor, str(body.get("lease", "")), result)
        if refused is not None:
            log.warning("refused a result from executor %s: %s", executor, refused)
            raise web.HTTPConflict(text=refused)
        return web.json_response({"counted": True})

    async def _refuse(self, request: web.Request) -> web.Response:
        backend, body, executor = await self._body(request)
        backend.refuse(executor, str(body.get("lease", "")), str(body.get("reason", "refused")))
        return web.json_response({})


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner, int(runner.addresses[0][1])


class PoolServer:
    """One stream's endpoint: the ``PoolTransportPort`` of local mode."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._served: tuple[PoolBackend, bytes] | None = None
        self.url = ""

    async def start(self, backend: PoolBackend, token: str) -> str:
        """Serve ``backend`` to holders of ``token``; returns the URL executors use."""
        if self._runner is not None:
            return self.url
        self._served = (backend, token.encode())
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        _Endpoint(lambda request: self._served).add_routes(app, "")
        self._runner, port = await _serve(app, self._host, self._port)
        self.url = f"http://{self._host}:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class PoolHub:
    """The operator's endpoint for all its streams (``--pool-port``). ``url`` is where executors
    reach this operator (``--pool-url``: its pod's address), without the stream's path."""

    def __init__(self, host: str, port: int, url: str = "") -> None:
        self._host = host
        self._port = port
        self._public = url.rstrip("/")
        self._runner: web.AppRunner | None = None
        self._streams: dict[tuple[str, str], tuple[PoolBackend, bytes]] = {}
        self.url = ""

    async def start(self) -> str:
        if self._runner is None:
            app = web.Application(client_max_size=MAX_BODY_BYTES)
            _Endpoint(self._resolve).add_routes(app, STREAM_PREFIX)
            self._runner, port = await _serve(app, self._host, self._port)
            self.url = self._public or f"http://{self._host}:{port}"
            log.info("pool endpoint listening on %s:%d, executors use %s", self._host, port, self.url)
        return self.url

    async def close(self) -> None:
        self._streams.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def route(self, namespace: str, name: str) -> HubRoute:
        return HubRoute(self, namespace, name)

    def serving(self) -> set[tuple[str, str]]:
        return set(self._streams)

    def _resolve(self, request: web.Request) -> tuple[PoolBackend, bytes] | None:
        return self._streams.get((request.match_info["namespace"], request.match_info["name"]))


class HubRoute:
    """One stream's ``PoolTransportPort`` on the operator's hub."""

    def __init__(self, hub: PoolHub, namespace: str, name: str) -> None:
        self._hub = hub
        self._key = (namespace, name)

    async def start(self, backend: PoolBackend, token: str) -> str:
        base = await self._hub.start()
        self._hub._streams[self._key] = (backend, token.encode())
        namespace, name = self._key
        return f"{base}/streams/{namespace}/{name}"

    async def close(self) -> None:
        self._hub._streams.pop(self._key, None)
