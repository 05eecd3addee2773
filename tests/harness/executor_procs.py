"""Find the executor processes of a test's pods from the host, to SIGKILL them mid-batch.

Containers on the dev node run in their own PID namespaces, which the host's /proc still lists.
An executor pod's work units are in the file its ``DIRECTSTREAM_WORK_UNITS_FILE`` names (a mounted
ConfigMap), read here through the process's own root (``/proc/PID/root``); local-mode executors
carry them in ``DIRECTSTREAM_WORK_UNITS``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from directstream.executor.contract.wire import ENV_WORK_UNITS, ENV_WORK_UNITS_FILE


def _environ(proc: Path) -> dict[bytes, bytes]:
    pairs = (item.partition(b"=") for item in (proc / "environ").read_bytes().split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def executor_pids(marker: str) -> list[int]:
    """Processes whose work units name ``marker`` (a test's unique topic): the executors of that
    test's pods and nothing else on the machine."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = _environ(entry)
            units = environ.get(ENV_WORK_UNITS.encode(), b"")
            units_file = environ.get(ENV_WORK_UNITS_FILE.encode())
            if units_file:
                units = (entry / "root" / units_file.decode().lstrip("/")).read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if needle in units:
            found.append(int(entry.name))
    return found


class ExecutorKiller:
    """A thread that SIGKILLs a random executor of the test's pods (found by ``marker``, or ``find``) every
    0.2 to 1.5 s, up to ``most`` times, while the ``with`` block runs; ``kills`` says how many it did."""

    def __init__(
        self, marker: str, most: int, seed: int, find: Callable[[], list[int]] | None = None
    ) -> None:
        self.marker, self.most, self.rng = marker, most, random.Random(seed)
        self.find = find or (lambda: executor_pids(marker))  # e.g. a pool's warm executors
        self.kills = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.kills < self.most:
            time.sleep(self.rng.uniform(0.2, 1.5))
            pids = self.find()
            if pids:
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    os.kill(self.rng.choice(pids), signal.SIGKILL)
                    self.kills += 1

    def __enter__(self) -> ExecutorKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
