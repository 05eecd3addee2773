"""One container's processes on the test node: start, stop, exit status, termination message."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.harness.podenv import expand
from tests.harness.podvolumes import Mount, launcher

# kubelet limits (pkg/kubelet/container): the file is read up to 4 KiB; the log fallback is 80 lines / 2 KiB.
MAX_MESSAGE = 4096
FALLBACK_LINES = 80
FALLBACK_BYTES = 2048


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Exit:
    code: int
    reason: str
    message: str
    started_at: str
    finished_at: str


@dataclass
class ContainerRun:
    """The container as the runtime knows it across restarts."""

    spec: Any
    workdir: Path  # this container's private files on the host
    log_path: Path
    pid_path: Path
    restart_count: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    last_exit: Exit | None = None  # most recent termination
    previous_exit: Exit | None = None  # the one before, shown as lastState
    ready: bool = False
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    not_before: float = 0.0  # restart back-off
    killed_by_us: bool = False
    probes: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.spec.name)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, env: dict[str, str], mounts: list[Mount], default_cwd: Path) -> None:
        command = [expand(a, env) for a in (self.spec.command or [])]
        args = [expand(a, env) for a in (self.spec.args or [])]
        argv = command + args
        if not argv:
            raise ValueError("container has no command: the test node runs commands, not images")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A fresh termination-message file per run, bound at terminationMessagePath.
        term = self.workdir / "termination-log"
        term.write_bytes(b"")
        term_path = self.spec.termination_message_path or "/dev/termination-log"
        all_mounts = [*mounts, Mount(term, term_path, False)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.restart_count and self.log_path.exists():
            self.log_path.replace(self.log_path.with_suffix(".previous.log"))
        cwd = self.spec.working_dir or str(default_cwd)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                launcher(all_mounts, cwd, argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
                start_new_session=True,
            )
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.write_text(str(self.proc.pid))
        self.started_at = now()
        self.waiting = None
        self.killed_by_us = False

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self, grace: float) -> None:
        """SIGTERM, wait up to grace seconds, then SIGKILL, as the runtime's StopContainer does."""
        if not self.running:
            return
        self.killed_by_us = True
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def reap(self) -> Exit | None:
        """The exit, once, when the process has ended."""
        if self.proc is None or self.proc.poll() is None:
            return None
        rc = self.proc.returncode
        code = 128 - rc if rc < 0 else rc
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None
        self.pid_path.unlink(missing_ok=True)
        self.ready = False
        self.previous_exit = self.last_exit
        self.last_exit = Exit(
            code, "Completed" if code == 0 else "Error", self._message(code), self.started_at, now()
        )
        return self.last_exit

    def _message(self, code: int) -> str:
        data = b""
        with contextlib.suppress(OSError), open(self.workdir / "termination-log", "rb") as f:
            data = f.read(MAX_MESSAGE)
        if not data and code != 0 and self.spec.termination_message_policy == "FallbackToLogsOnError":
            with contextlib.suppress(OSError):
                lines = self.log_path.read_bytes().splitlines(keepends=True)[-FALLBACK_LINES:]
                data = b"".join(lines)[-FALLBACK_BYTES:]
        return data.decode(errors="replace")

    def status(self, image_id: str = "") -> dict[str, Any]:
        """containerStatuses[] entry."""
        st: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.image or "",
            "imageID": image_id,
            "restartCount": self.restart_count,
            "ready": self.ready,
            "started": self.running,
            "containerID": f"directstream://{self.workdir.parent.parent.name}-{self.name}-{self.restart_count}",
        }
        if self.running:
            st["state"] = {"running": {"startedAt": self.started_at}}
            if self.last_exit is not None:
                st["lastState"] = {"terminated": _terminated(self.last_exit)}
            return st
        elif self.waiting is not None:
            reason, message = self.waiting
            st["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
            if self.last_exit is not None:
                st["lastState"] = {"terminated": _terminated(self.last_exit)}
            return st
        elif self.last_exit is not None:
            st["state"] = {"terminated": _terminated(self.last_exit)}
        else:
            st["state"] = {"waiting": {"reason": "ContainerCreating"}}
        if self.previous_exit is not None:
            st["lastState"] = {"terminated": _terminated(self.previous_exit)}
        return st


def _terminated(e: Exit) -> dict[str, Any]:
    t: dict[str, Any] = {
        "exitCode": e.code,
        "reason": e.reason,
        "startedAt": e.started_at,
        "finishedAt": e.finished_at,
    }
    if e.message:
        t["message"] = e.message
    return t
