"""Local mode's warm executors: ``python -m directstream.executor.pool_worker`` processes.

Each gets the pool's URL and its executor id on the command line and the stream's token in its
environment (never on the command line, where ``ps`` shows it). Its log goes to
``<work_dir>/executor-<id>.log``. Children get SIGTERM when the driver dies, so a restarted driver
never races a leftover executor.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

from directstream.executor.contract.pool import ENV_POOL_TOKEN

from ...core.pinning import AttemptRun
from .launcher import _die_with_parent, _exit_description, _tail

STOP_GRACE_S = 5.0


class LocalExecutorProcesses:
    def __init__(self, work_dir: Path, command: Sequence[str] | None = None) -> None:
        self.work_dir = work_dir
        self.command = list(command or [sys.executable, "-m", "directstream.executor.pool_worker"])
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._on_exit: Callable[[str, str], None] = lambda executor_id, how: None

    def watch(self, on_exit: Callable[[str, str], None]) -> None:
        self._on_exit = on_exit

    def alive(self) -> set[str]:
        return set(self._processes)

    def pids(self) -> dict[str, int]:
        return {executor_id: p.pid for executor_id, p in self._processes.items()}

    def layout(self, attempt: AttemptRun) -> Hashable:
        return attempt.executors  # the processes inherit the rest (environment, files)

    async def close(self) -> None:
        """Nothing beyond the processes."""

    async def start(self, executor_id: str, url: str, token: str, stream: str, attempt: AttemptRun) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.work_dir / f"executor-{executor_id}.log"
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                "--url",
                url,
                "--executor-id",
                executor_id,
                "--stream",
                stream,
                stdin=asyncio.subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, ENV_POOL_TOKEN: token},
                preexec_fn=_die_with_parent,
            )
        self._processes[executor_id] = process
        self._watchers[executor_id] = asyncio.create_task(self._watch(executor_id, process, log_path))

    async def stop(self, executor_id: str) -> None:
        process = self._processes.pop(executor_id, None)
        watcher = self._watchers.pop(executor_id, None)
        if watcher is not None:
            watcher.cancel()
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _watch(self, executor_id: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
        code = await process.wait()
        if self._processes.get(executor_id) is process:
            del self._processes[executor_id]
            self._watchers.pop(executor_id, None)
            tail = _tail(log_path, 3)
            how = _exit_description(code) + (f": {tail}" if tail else "") + f" (log: {log_path})"
            self._on_exit(executor_id, how)
