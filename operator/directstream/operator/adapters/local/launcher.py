"""Local mode's executors: one ``directstream-executor`` process per work unit, in parallel.

A unit goes to its process as a file and the result comes back in a result file, so the
processes' stdout stays free for the ``stdout`` sink. Children get SIGTERM if the driver
dies, so a restarted driver never races a leftover executor of the same batch.
"""

from __future__ import annotations

import asyncio
import ctypes
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from directstream.executor.contract import ContractError, ExecutorResult, WorkUnit

from ...core.pinning import AttemptRun

PR_SET_PDEATHSIG = 1
KEEP_FAILED_ATTEMPTS = 20


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _prepare(unit: WorkUnit, unit_file: Path, log_file: Path) -> BinaryIO:
    unit_file.write_text(unit.dumps())
    return log_file.open("wb")


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def _exit_description(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class LocalLauncher:
    def __init__(self, work_dir: Path, executor_command: Sequence[str] | None = None) -> None:
        self.work_dir = work_dir
        self.command = list(executor_command or [sys.executable, "-m", "directstream.executor"])
        self._succeeded: dict[int, Path] = {}

    async def run(self, attempt: AttemptRun) -> list[ExecutorResult]:
        units = attempt.units
        if not units:
            return []
        attempt_dir = self._attempt_dir(attempt.batch_id, attempt.attempt)
        shutil.rmtree(attempt_dir, ignore_errors=True)
        attempt_dir.mkdir(parents=True)
        results = await asyncio.gather(*(self._run_one(unit, attempt_dir) for unit in units))
        if all(r.ok for r in results):
            self._succeeded[attempt.batch_id] = attempt_dir
        self._prune()
        return list(results)

    async def release(self, batch_id: int) -> None:
        """The batch is committed: the succeeded attempt's files go (failed ones stay, for their logs)."""
        attempt_dir = self._succeeded.pop(batch_id, None)
        if attempt_dir is not None:
            await asyncio.to_thread(shutil.rmtree, attempt_dir, True)

    def _attempt_dir(self, batch_id: int, attempt: int) -> Path:
        return self.work_dir / f"batch-{batch_id:08d}-attempt-{attempt}"

    async def _run_one(self, unit: WorkUnit, attempt_dir: Path) -> ExecutorResult:
        unit_file = attempt_dir / f"unit-{unit.index}.json"
        result_file = attempt_dir / f"result-{unit.index}.json"
        log_file = attempt_dir / f"executor-{unit.index}.log"
        log = await asyncio.to_thread(_prepare, unit, unit_file, log_file)
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                "--work-unit",
                str(unit_file),
                "--result-file",
                str(result_file),
                stdin=asyncio.subprocess.DEVNULL,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
            try:
                code = await process.wait()
            except asyncio.CancelledError:
                if process.returncode is None:
                    process.terminate()
                    await process.wait()
                raise
        finally:
            log.close()
        return self._result(unit, code, result_file, log_file)

    @staticmethod
    def _result(unit: WorkUnit, code: int, result_file: Path, log_file: Path) -> ExecutorResult:
        try:
            result = ExecutorResult.loads(result_file.read_text())
        except (OSError, ContractError):
            result = None
        if result is not None and (result.ok == (code == 0)):
            return result
        detail = result.error if result is not None and result.error else _tail(log_file)
        return ExecutorResult(
            batch_id=unit.batch_id,
            attempt=unit.attempt,
            index=unit.index,
            digest=unit.digest,
            ok=False,
            error=f"executor {_exit_description(code)}"
            + (f": {detail}" if detail else "")
            + f" (log: {log_file})",
        )

    def _prune(self) -> None:
        attempts = sorted(p for p in self.work_dir.glob("batch-*") if p.is_dir())
        for old in attempts[:-KEEP_FAILED_ATTEMPTS]:
            shutil.rmtree(old, ignore_errors=True)
