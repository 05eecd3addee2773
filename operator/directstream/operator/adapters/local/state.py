"""Local mode's state: one JSON file per stream, replaced atomically and fsynced, plus a
lock so that two drivers never run the same stream from the same directory."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from pathlib import Path
from typing import IO

from ...core.errors import PermanentError, StateUnreadable
from ...core.state import StreamState

STATE_FILE = "state.json"


class StateDirLocked(PermanentError):
    """Another driver holds this state directory."""


class StateFileCorrupt(StateUnreadable):
    """The state file exists but cannot be read; it is left untouched for inspection."""


def read_state_file(state_dir: Path) -> StreamState:
    """Read without locking (``directstream status`` while a run is going)."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return StreamState()
    try:
        return StreamState.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise StateFileCorrupt(f"cannot read {path}: {exc}") from exc


class LocalStateStore:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._lock: IO[str] | None = None

    def lock(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.state_dir / "lock", "w")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise StateDirLocked(
                f"{self.state_dir} is in use by another directstream run; stop it first "
                "(two drivers on one stream would commit the same offsets twice)"
            ) from exc
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def load(self) -> StreamState:
        return await asyncio.to_thread(read_state_file, self.state_dir)

    async def save(self, state: StreamState) -> None:
        await asyncio.to_thread(self._write, state)

    def _write(self, state: StreamState) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            json.dump(state.to_json(), handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        # The rename itself must reach the disk, or a crash could bring back the old file.
        dir_fd = os.open(self.state_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
