"""The ``stdout`` sink: one JSON line per record on standard output (jsonl encoding)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from directstream.executor.contract import OffsetRange
from directstream.executor.processors.base import BaseProcessor
from directstream.executor.records import KafkaRecord, json_lines


class StdoutProcessor(BaseProcessor):
    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        sys.stdout.write(json_lines(records))

    def close_range(self, range_: OffsetRange) -> None:
        sys.stdout.flush()
