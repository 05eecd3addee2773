"""The pool's transport: an HTTP endpoint on the driver's event loop that warm executors long-poll.

Only this module knows HTTP: it checks the bearer token (constant time), decodes the bodies of
``contract/pool.py`` and hands them to a :class:`~..core.leases.PoolBackend`. It binds the host
it is given (local mode: 127.0.0.1) on a free port.
"""

from __future__ import annotations

import hmac
import json
import logging
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


class PoolServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._backend: PoolBackend | None = None
        self._token = b""
        self.url = ""

    async def start(self, backend: PoolBackend, token: str) -> str:
        """Serve ``backend`` to holders of ``token``; returns the URL executors use."""
        if self._runner is not None:
            return self.url
        self._backend, self._token = backend, token.encode()
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(PATH_LEASE, self._lease)
        app.router.add_post(PATH_RENEW, self._renew)
        app.router.add_post(PATH_RESULT, self._result)
        app.router.add_post(PATH_REFUSE, self._refuse)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _body(self, request: web.Request) -> tuple[PoolBackend, dict[str, Any], str]:
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ").encode() if header.startswith("Bearer ") else b""
        if self._backend is None or not hmac.compare_digest(given, self._token):
            raise web.HTTPUnauthorized(text="a valid bearer token is required")
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            raise web.HTTPBadRequest(text=f"body is not JSON: {exc}") from exc
        executor = body.get("executor") if isinstance(body, dict) else None
        if not isinstance(executor, str) or not executor:
            raise web.HTTPBadRequest(text="body needs 'executor' (a string)")
        return self._backend, body, executor

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
