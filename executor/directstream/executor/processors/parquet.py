"""The ``parquet`` sink: one Parquet object per range, on S3 (or any S3-compatible server) or in a
directory, invisible until complete (see :mod:`.parquet_store`).

Layout: ``<prefix>/<topic>/<partition>/<from:020d>-<until:020d>.parquet`` (options in
:mod:`directstream.executor.contract.parquet`). A range with no records (empty, or only gaps) still
gets its object, with the schema and no rows: the object's existence says the range was processed.

Columns, one row per record (statistics only where they let readers skip row groups):

- ``topic`` string (dictionary-encoded), ``partition`` int32, ``offset`` int64;
- ``timestamp`` timestamp[ms, UTC], null when the record has none;
- ``key``, ``value``: by ``processor.decode`` (null when absent): binary, the exact bytes (unset or
  ``bytes``); string (``string``); or the JSON text under the ``arrow.json`` extension type, which
  Parquet stores as its JSON logical type (``json``). Records that do not decode never get here
  (they are poison, see :mod:`directstream.executor.poison`);
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
from directstream.executor.contract.poison import DecodeFormat
from directstream.executor.processors.base import BaseProcessor
from directstream.executor.processors.parquet_store import Store, Target, open_store
from directstream.executor.records import KafkaRecord

HEADER = pa.struct([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.binary())])


def payload_type(decoded_as: DecodeFormat | None) -> pa.DataType:
    """The column type of a key or value decoded as ``decoded_as`` (None: not decoded)."""
    if decoded_as == "json":
        return pa.json_(pa.string())
    if decoded_as == "string":
        return pa.string()
    return pa.binary()


def schema_for(key: DecodeFormat | None = None, value: DecodeFormat | None = None) -> pa.Schema:
    return pa.schema(
        [
            pa.field("topic", pa.string(), nullable=False),
            pa.field("partition", pa.int32(), nullable=False),
            pa.field("offset", pa.int64(), nullable=False),
            pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
            pa.field("key", payload_type(key)),
            pa.field("value", payload_type(value)),
            pa.field("headers", pa.list_(HEADER), nullable=False),
        ]
    )


SCHEMA = schema_for()  # records as they are, without processor.decode
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


def _payload_array(values: list[bytes | None], type_: pa.DataType) -> pa.Array:
    if isinstance(type_, pa.ExtensionType):  # JSON: its text, already checked by the decoder
        return pa.ExtensionArray.from_storage(type_, pa.array(values, type_.storage_type))
    return pa.array(values, type_)


def record_batch(
    records: Sequence[KafkaRecord], range_: OffsetRange, schema: pa.Schema = SCHEMA
) -> pa.RecordBatch:
    """The records of one chunk (all of ``range_``) as a batch of ``schema`` (see :func:`schema_for`)."""
    messages: Any = records
    count = len(records)
    return pa.RecordBatch.from_arrays(
        [
            pa.repeat(pa.scalar(range_.topic, pa.string()), count),
            pa.repeat(pa.scalar(range_.partition, pa.int32()), count),
            pa.array(list(map(_offset, messages)), pa.int64()),
            # Timestamp type 0 is TIMESTAMP_NOT_AVAILABLE.
            pa.array([stamp if kind else None for kind, stamp in map(_timestamp, messages)], schema[3].type),
            _payload_array(list(map(_key, messages)), schema[4].type),
            _payload_array(list(map(_value, messages)), schema[5].type),
            pa.array(list(map(_header_pairs, map(_headers, messages))), schema[6].type),
        ],
        schema=schema,
    )


def _byte_length(column: pa.Array) -> pa.Array:
    storage = column.storage if isinstance(column, pa.ExtensionArray) else column
    return pc.fill_null(pc.binary_length(storage), 0)


def _payload_sizes(batch: pa.RecordBatch) -> pa.Array:
    """Key plus value bytes of each record."""
    return pc.add(_byte_length(batch.column(4)), _byte_length(batch.column(5)))


class RangeWriter:
    """One range's Parquet file: records buffered into row groups cut at record-determined points."""

    def __init__(self, target: Target, options: ParquetOptions, schema: pa.Schema = SCHEMA) -> None:
        self.target = target
        self.schema = schema
        self.max_records = options.row_group_records
        self.max_bytes = options.row_group_bytes
        self.writer = pq.ParquetWriter(
            target,
            schema,
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
            table = pa.Table.from_batches(self.pending, self.schema).combine_chunks()
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
        decode = unit.processor.poison
        self.schema = schema_for(decode.key, decode.value)
        self._writers: dict[OffsetRange, RangeWriter] = {}

    def _writer(self, range_: OffsetRange) -> RangeWriter:
        # Created on first use so that a unit of many ranges does not hold many idle uploads.
        writer = self._writers.get(range_)
        if writer is None:
            target = self.store.target(self.options.key(range_))
            writer = self._writers[range_] = RangeWriter(target, self.options, self.schema)
        return writer

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        self._writer(range_).add(record_batch(records, range_, self.schema))

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
