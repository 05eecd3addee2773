"""The ``jsonl`` sink: one JSON-lines file per range, replaced atomically.

Layout: ``<directory>/<topic>/<partition>/<from:020d>-<until:020d>.jsonl``, one JSON object per
record (encoding in :mod:`directstream.executor.records`; each chunk is encoded in one call and
written as one block of UTF-8 bytes). The file appears only when
complete (:mod:`directstream.executor.processors.durable_file`): a retried range replaces its file
instead of duplicating it, and a killed executor never leaves a partial file at the final name.

A range with no records (empty, or only gaps) still gets its (empty) file: the file's existence
says the range was processed.

Every ``WRITEBACK_BYTES`` written, the sink asks the kernel to start writing the file back and to
drop its cached pages (``POSIX_FADV_DONTNEED``, where the platform has it): the fsync at the end
then has little left to wait for, and the page cache, which counts against a pod's memory limit,
does not fill with output nobody reads back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from directstream.executor.contract import OffsetRange
from directstream.executor.errors import ConfigurationError
from directstream.executor.processors.base import BaseProcessor
from directstream.executor.processors.durable_file import DurableFile
from directstream.executor.records import KafkaRecord, encode_json_lines


def range_path(directory: Path, range_: OffsetRange) -> Path:
    """Where the jsonl file of ``range_`` lives (the public layout)."""
    name = f"{range_.from_offset:020d}-{range_.until_offset:020d}.jsonl"
    return directory / range_.topic / str(range_.partition) / name


WRITEBACK_BYTES = 32 << 20
_fadvise = getattr(os, "posix_fadvise", None)


class _RangeFile(DurableFile):
    def __init__(self, final: Path) -> None:
        super().__init__(final)
        self._unsynced = 0

    def write(self, data: bytes) -> int:
        written = super().write(data)
        self._unsynced += len(data)
        if self._unsynced >= WRITEBACK_BYTES and _fadvise is not None:
            self._unsynced = 0
            self.file.flush()
            _fadvise(self.file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return written


class JsonlProcessor(BaseProcessor):
    def __init__(self, options: Mapping[str, Any]) -> None:
        directory = options.get("directory")
        if not isinstance(directory, str) or not directory:
            raise ConfigurationError("jsonl sink needs options.directory (a path)")
        self.directory = Path(directory)
        self._files: dict[OffsetRange, _RangeFile] = {}

    def _file(self, range_: OffsetRange) -> _RangeFile:
        # Created on first use so that a unit of many ranges does not hold many idle descriptors.
        open_file = self._files.get(range_)
        if open_file is None:
            open_file = self._files[range_] = _RangeFile(range_path(self.directory, range_))
        return open_file

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        self._file(range_).write(encode_json_lines(records, range_))

    def close_range(self, range_: OffsetRange) -> None:
        self._file(range_).commit()
        del self._files[range_]

    def abort_range(self, range_: OffsetRange) -> None:
        open_file = self._files.pop(range_, None)
        if open_file is not None:
            open_file.discard()

    def close(self) -> None:
        for range_ in list(self._files):
            self.abort_range(range_)
