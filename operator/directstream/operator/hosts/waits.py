"""Waiting that a stop (and, for ``pause``, a wake-up) ends early: the hosts' shared primitive."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_for_any(seconds: float, *events: asyncio.Event) -> bool:
    """Wait up to ``seconds`` for any of ``events``; True when one was set."""
    if seconds <= 0:
        return any(e.is_set() for e in events)
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        with contextlib.suppress(TimeoutError):
            done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            return bool(done)
        return False
    finally:
        for waiter in waiters:
            waiter.cancel()
