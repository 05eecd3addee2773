"""A file that appears under its final name only when complete: the bytes go to a hidden temporary
file beside it (``.<name>.<random>.tmp``), which ``commit`` fsyncs and renames over the final name
before fsyncing the directory. ``discard`` leaves nothing. Temporary files a killed attempt left
for the same name are removed when the next one opens it.

Shared by the file sinks (jsonl, Parquet to a directory), so a retried range replaces its file
instead of duplicating it, and a killed executor never leaves a partial file at the final name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableFile:
    def __init__(self, final: Path) -> None:
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f".{final.name}.*.tmp"):  # left by a killed attempt
            stale.unlink(missing_ok=True)
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        self.temp = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "wb", buffering=1 << 20)
        self.closed = False

    def write(self, data: bytes) -> int:
        if self.closed:  # discarded: a writer's last bytes go nowhere
            return len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.closed = True
        os.replace(self.temp, self.final)
        fsync_directory(self.final.parent)

    def discard(self) -> None:
        self.file.close()
        self.closed = True
        self.temp.unlink(missing_ok=True)
