"""The ``parquet`` sink: one Parquet object per range, on S3 (or any S3-compatible server) or in a
directory, invisible until complete (see :mod:`.parquet_store`).

Layout: ``<prefix>/<topic>/<partition>/<from:020d>-<until:020d>.parquet`` (options in
:mod:`directstream.executor.contract.parquet`). A range with no records (empty, or only gaps) still
gets its object, with the schema and no rows: the object's existence says the range was processed.

Columns, one row per record (statistics only where they let readers skip row groups):

- ``topic`` string (dictionary-encoded), ``partition`` int32, ``offset`` int64;
- ``timestamp`` timestamp[ms, UTC], null when the record has none;
- ``key``, ``value`` binary: the exact bytes, null when absent;
- ``headers`` list<struct<key: string, value: binary>> in record order, [] when none.

Determinism: a replayed range must produce the same object, so row groups are cut by the records
alone (``rowGroupRecords`` records, or once keys and values reach ``rowGroupBytes``), never by how
the reader happened to chunk them, and nothing time- or host-dependent goes into the file. Memory:
each open range holds at most one row group of records plus one upload part.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from confluent_kafka import Message

from directstream.executor.contract import OffsetRange, WorkUnit
from directstream.executor.contract.parquet import ParquetOptions, parse_parquet_options
from directstream.executor.processors.base import BaseProcessor
from directstream.executor.processors.parquet_store import Store, Target, open_store
from directstream.executor.records import KafkaRecord

HEADER = pa.struct([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.binary())])
SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("headers", pa.list_(HEADER), nullable=False),
    ]
)
# Statistics where they let readers skip row groups; a key/value min/max would only bloat the footer.
STATISTICS_COLUMNS = ["topic", "partition", "offset", "timestamp"]
DICTIONARY_COLUMNS = ["topic", "headers.list.element.key"]

# Unbound C methods: map() over them keeps per-record work out of the interpreter (records are Messages).
_timestamp, _offset, _key, _value, _headers = (
    Message.timestamp,
    Message.offset,
    Message.key,
    Message.value,
    Message.headers,
)


def _header_pairs(headers: Any) -> Any:
    if not headers:
        return ()
    return list(headers.items()) if isinstance(headers, dict) else headers


def record_batch(records: Sequence[KafkaRecord], range_: OffsetRange) -> pa.RecordBatch:
    """The records of one chunk (all of ``range_``) as a batch of :data:`SCHEMA`."""
    messages: Any = records
    count = len(records)
    return pa.RecordBatch.from_arrays(
        [
            pa.repeat(pa.scalar(range_.topic, pa.string()), count),
            pa.repeat(pa.scalar(range_.partition, pa.int32()), count),
            pa.array(list(map(_offset, messages)), pa.int64()),
            # Timestamp type 0 is TIMESTAMP_NOT_AVAILABLE.
            pa.array([stamp if kind else None for kind, stamp in map(_timestamp, messages)], SCHEMA[3].type),
            pa.array(list(map(_key, messages)), pa.binary()),
            pa.array(list(map(_value, messages)), pa.binary()),
            pa.array(list(map(_header_pairs, map(_headers, messages))), SCHEMA[6].type),
        ],
        schema=SCHEMA,
    )


def _payload_sizes(batch: pa.RecordBatch) -> pa.Array:
    """Key plus value bytes of each record."""
    return pc.add(
        pc.fill_null(pc.binary_length(batch.column(4)), 0), pc.fill_null(pc.binary_length(batch.column(5)), 0)
    )


class RangeWriter:
    """One range's Parquet file: records buffered into row groups cut at record-determined points."""

    def __init__(self, target: Target, options: ParquetOptions) -> None:
        self.target = target
        self.max_records = options.row_group_records
        self.max_bytes = options.row_group_bytes
        self.writer = pq.ParquetWriter(
            target,
            SCHEMA,
            compression=options.compression,
            compression_level=options.compression_level,
            use_dictionary=DICTIONARY_COLUMNS,
            write_statistics=STATISTICS_COLUMNS,
        )
        self.pending: list[pa.RecordBatch] = []
        self.pending_records = 0
        self.pending_bytes = 0

    def add(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            sizes = _payload_sizes(batch)
            total = pc.sum(sizes).as_py() or 0
            room = self.max_records - self.pending_records
            if batch.num_rows < room and self.pending_bytes + total < self.max_bytes:
                self._keep(batch, total)
                return
            # This batch completes a row group: cut after the record that reaches a limit.
            cut = min(room, batch.num_rows)
            if self.pending_bytes + total >= self.max_bytes:
                cumulative = pc.cumulative_sum(sizes).to_pylist()
                cut = min(cut, bisect_left(cumulative, self.max_bytes - self.pending_bytes) + 1)
            head = batch.slice(0, cut)
            self._keep(head, pc.sum(sizes.slice(0, cut)).as_py() or 0)
            if self.pending_records >= self.max_records or self.pending_bytes >= self.max_bytes:
                self._write_row_group()
            batch = batch.slice(cut)

    def _keep(self, batch: pa.RecordBatch, size: int) -> None:
        self.pending.append(batch)
        self.pending_records += batch.num_rows
        self.pending_bytes += size

    def _write_row_group(self) -> None:
        if self.pending_records:
            # One contiguous chunk per column: the writer's page boundaries follow the chunk layout,
            # which depends on how the reader chunked the records; combined, they follow the data.
            table = pa.Table.from_batches(self.pending, SCHEMA).combine_chunks()
            self.writer.write_table(table, row_group_size=self.pending_records)
        self.pending, self.pending_records, self.pending_bytes = [], 0, 0

    def commit(self) -> None:
        self._write_row_group()
        self.writer.close()  # the footer; the target itself is not closed by pyarrow
        self.target.commit()

    def discard(self) -> None:
        self.pending = []
        self.target.discard()  # first: the footer that close() writes goes nowhere
        self.writer.close()


class ParquetProcessor(BaseProcessor):
    def __init__(self, options: Mapping[str, Any], unit: WorkUnit, store: Store | None = None) -> None:
        self.options = parse_parquet_options(options)
        self.store = store if store is not None else open_store(self.options)
        self._writers: dict[OffsetRange, RangeWriter] = {}

    def _writer(self, range_: OffsetRange) -> RangeWriter:
        # Created on first use so that a unit of many ranges does not hold many idle uploads.
        writer = self._writers.get(range_)
        if writer is None:
            target = self.store.target(self.options.key(range_))
            writer = self._writers[range_] = RangeWriter(target, self.options)
        return writer

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        self._writer(range_).add(record_batch(records, range_))

    def close_range(self, range_: OffsetRange) -> None:
        self._writer(range_).commit()
        del self._writers[range_]

    def abort_range(self, range_: OffsetRange) -> None:
        writer = self._writers.pop(range_, None)
        if writer is not None:
            writer.discard()

    def close(self) -> None:
        try:
            for range_ in list(self._writers):
                self.abort_range(range_)
        finally:
            self.store.close()
