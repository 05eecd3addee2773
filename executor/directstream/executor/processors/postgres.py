"""The ``postgres`` sink: results and offsets in one PostgreSQL transaction per range (exactly once).

Options:

- ``dsn``: a libpq connection string **without a password**; or ``dsnEnv``: the environment variable
  holding the DSN (default ``DIRECTSTREAM_POSTGRES_DSN``; fill it from a Secret). Passwords may also
  come from ``PGPASSWORD`` / ``PGPASSFILE``. A ``dsn`` option with a password is refused.
- ``table``: the results table (default ``directstream_records``; ``schema.table`` allowed);
- ``offsetsTable``: the offset chain (default ``directstream_offsets``; see
  :mod:`directstream.executor.offset_store_postgres` for its DDL and the compare-and-set);
- ``transform``: ``"package.module:callable"`` mapping one record to a row (a mapping of column name
  to value) or ``None`` to drop it. Every row has the same columns; dict and list values go into
  json/jsonb columns. With a transform the results table must exist (its columns are yours);
- ``seedMissing`` (default false): start a partition's chain at the range's ``from`` when the
  offsets table has no row for it (normally the driver seeds it, see ``seed_offsets``);
- ``chainWaitSeconds`` (default 60): how long a range waits for an earlier piece of its partition
  without progress (the wait starts again whenever an earlier piece commits).

Without a transform the results table is created if missing::

    CREATE TABLE IF NOT EXISTS directstream_records (
        topic text NOT NULL, partition integer NOT NULL, "offset" bigint NOT NULL,
        key bytea, value bytea, timestamp timestamptz, headers jsonb,
        PRIMARY KEY (topic, partition, "offset"))

``headers`` is a JSON list of ``[name, text-or-null]`` (``[name, null, base64]`` for binary values).
With ``processor.decode``, ``key`` / ``value`` are typed by their format: ``string`` -> ``text``,
``json`` -> ``jsonb`` (queryable: ``value->>'page'``), ``bytes`` -> ``bytea``. An existing table
whose columns do not match is refused with the statement that converts it. A JSON value jsonb
cannot hold (a ``\u0000`` escape) fails the range with PostgreSQL's message.

How a range is applied: its rows are COPYed into a private temporary table while the unit reads
(chunks of different ranges interleave, and a session has one transaction at a time). When the
range is complete, one transaction moves the offset chain ``from -> until`` (compare-and-set) and
moves the staged rows into the results table. A replayed range (committed, then the executor died
before reporting) finds the chain already past it and reports success without writing; a stale
attempt fails naming both offsets.

Split partitions: pieces of one partition in one batch run in different executors and must commit
in offset order. A piece whose predecessor has not committed stays staged while the unit reads on,
and is retried at each later range's completion; once the unit has read everything it waits (up to
``chainWaitSeconds``) for the remaining pieces. Units never block while they still have ranges to
read, so two units holding each other's successors cannot deadlock.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb, set_json_dumps

from directstream.executor.contract import DEFAULT_OFFSETS_TABLE, OffsetRange, PostgresConnection, WorkUnit
from directstream.executor.contract.poison import DecodeFormat
from directstream.executor.contract.sinks import DEFAULT_RESULTS_TABLE
from directstream.executor.errors import ConfigurationError, RangeFailedError
from directstream.executor.offset_store_postgres import (
    ChainStep,
    MissingOffsetError,
    StaleAttemptError,
    apply_range,
    connect,
    ensure_table,
    offsets_ddl,
    read_chain,
    table_identifier,
)
from directstream.executor.processors.base import BaseProcessor
from directstream.executor.processors.python_entry import load_entry_point
from directstream.executor.records import Headers, KafkaRecord

log = logging.getLogger(__name__)
DEFAULT_TABLE = DEFAULT_RESULTS_TABLE
RAW_COLUMNS = ("topic", "partition", "offset", "key", "value", "timestamp", "headers")
# The column type of a key or value by its processor.decode format (None: not decoded).
COLUMN_TYPES: dict[DecodeFormat | None, str] = {
    None: "bytea",
    "bytes": "bytea",
    "string": "text",
    "json": "jsonb",
}
CONVERSIONS = {
    ("bytea", "text"): "convert_from({column}, 'UTF8')",
    ("bytea", "jsonb"): "convert_from({column}, 'UTF8')::jsonb",
    ("text", "jsonb"): "{column}::jsonb",
    ("text", "bytea"): "convert_to({column}, 'UTF8')",
    ("jsonb", "text"): "{column}::text",
    ("jsonb", "bytea"): "convert_to({column}::text, 'UTF8')",
}


def _results_ddl(table: str, key_type: str, value_type: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        ' topic text NOT NULL, partition integer NOT NULL, "offset" bigint NOT NULL,'
        " key {}, value {}, timestamp timestamptz, headers jsonb,"
        ' PRIMARY KEY (topic, partition, "offset"))'
    ).format(table_identifier(table), sql.SQL(key_type), sql.SQL(value_type))


def _json_dumps(obj: Any) -> str | bytes:
    """jsonb values: a decoded record's bytes are already JSON text; anything else is encoded."""
    return obj if isinstance(obj, bytes) else json.dumps(obj)


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8")


def _dsn(options: Mapping[str, Any]) -> str:
    connection = PostgresConnection.from_options(options)
    if connection.dsn is not None:
        try:
            fields = conninfo_to_dict(connection.dsn)
        except psycopg.Error as exc:
            raise ConfigurationError(
                f"postgres sink options.dsn is not a valid connection string: {exc}"
            ) from exc
        if fields.get("password"):
            raise ConfigurationError(
                "postgres sink options.dsn must not carry a password: "
                "use options.dsnEnv (filled from a Secret) or PGPASSWORD"
            )
    return connection.resolve(os.environ.get)


def _headers_json(headers: Headers | None) -> list[list[str | None]]:
    if not headers:
        return []
    pairs = headers.items() if isinstance(headers, dict) else headers
    entries: list[list[str | None]] = []
    for name, data in pairs:
        if data is None or isinstance(data, str):
            entries.append([name, data])
            continue
        try:
            entries.append([name, data.decode("utf-8")])
        except UnicodeDecodeError:
            entries.append([name, None, base64.b64encode(data).decode("ascii")])
    return entries


class PostgresProcessor(BaseProcessor):
    def __init__(self, options: Mapping[str, Any], unit: WorkUnit) -> None:
        self._unit = unit
        self._table = str(options.get("table", DEFAULT_TABLE))
        self._offsets_table = str(options.get("offsetsTable", DEFAULT_OFFSETS_TABLE))
        self._results = table_identifier(self._table)
        table_identifier(self._offsets_table)
        self._seed_missing = bool(options.get("seedMissing", False))
        wait = options.get("chainWaitSeconds", 60)
        if not isinstance(wait, int | float) or wait < 0:
            raise ConfigurationError("postgres sink options.chainWaitSeconds must be a number >= 0")
        self._chain_wait = float(wait)
        transform = options.get("transform")
        self._transform: Callable[[KafkaRecord], Mapping[str, Any] | None] | None = (
            load_entry_point(transform) if transform is not None else None
        )
        self._columns: tuple[str, ...] | None = None if self._transform else RAW_COLUMNS
        decode = unit.processor.poison
        self._decode = {"key": decode.key, "value": decode.value}
        self._key_type, self._value_type = COLUMN_TYPES[decode.key], COLUMN_TYPES[decode.value]
        self._stage_types = ["int8", self._key_type, self._value_type, "int8", "jsonb"]
        self._key_text = _text if self._key_type == "text" else None
        self._value_text = _text if self._value_type == "text" else None
        self._conn = connect(_dsn(options))
        set_json_dumps(_json_dumps, self._conn)
        try:
            self._prepare_tables()
        except BaseException:
            self._conn.close()
            raise
        self._stage_names = {r: f"directstream_stage_{i}" for i, r in enumerate(unit.ranges)}
        self._staged: dict[OffsetRange, int] = {}  # range -> rows staged (its temp table exists)
        self._pending: list[OffsetRange] = []  # complete, waiting for the chain to reach from
        self._skipped: set[OffsetRange] = set()
        self._closed = 0

    def _prepare_tables(self) -> None:
        try:
            ensure_table(self._conn, offsets_ddl(self._offsets_table))
            if self._transform is None:
                ensure_table(self._conn, _results_ddl(self._table, self._key_type, self._value_type))
                found_types = self._conn.execute(
                    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                    " WHERE attrelid = to_regclass(%s) AND attname IN ('key', 'value') AND NOT attisdropped",
                    (self._results.as_string(self._conn),),
                ).fetchall()
            else:
                found = self._conn.execute(
                    "SELECT to_regclass(%s)", (self._results.as_string(self._conn),)
                ).fetchone()
        except psycopg.Error as exc:
            raise ConfigurationError(f"postgres sink cannot prepare its tables: {exc}") from exc
        if self._transform is None:
            self._check_payload_columns(dict(found_types))
            return
        if found is None or found[0] is None:
            raise ConfigurationError(
                f"postgres sink with options.transform needs the results table {self._table} to exist "
                "(its columns are the keys the transform returns)"
            )

    def _check_payload_columns(self, found: Mapping[str, str]) -> None:
        for column, wanted in (("key", self._key_type), ("value", self._value_type)):
            have = found.get(column)
            if have is None or have == wanted:
                continue
            fmt = self._decode[column]
            why = f"processor.decode.{column}: {fmt}" if fmt else f"without processor.decode.{column}"
            convert = CONVERSIONS.get((have, wanted))
            fix = (
                f"ALTER TABLE {self._table} ALTER COLUMN {column} TYPE {wanted}"
                f" USING {convert.format(column=column)}"
                if convert
                else f"a {wanted} column {column}"
            )
            raise ConfigurationError(
                f"postgres sink: the results table {self._table} has {column} {have}, but {why} stores "
                f"{wanted}; use another options.table, or convert the column ({fix})"
            )

    # -- protocol ------------------------------------------------------------------------------

    def open_range(self, range_: OffsetRange) -> None:
        if range_.count == 0:
            return
        # Cheap check first: a replayed range that already committed is neither staged nor written.
        try:
            stored = read_chain(
                self._conn, self._offsets_table, self._unit.stream, range_.topic, range_.partition
            )
        except psycopg.Error as exc:
            raise RangeFailedError(range_, range_.from_offset, f"PostgreSQL: {exc}".strip()) from exc
        if stored is not None and stored.applied(self._unit.batch_id, range_):
            log.info("range %s already applied (offsets table at %d); skipped", range_, stored.next_offset)
            self._skipped.add(range_)

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        if range_ in self._skipped:
            return
        if self._transform is None:
            self._stage_raw(records, range_)
        else:
            self._stage_transformed(records, range_)

    def close_range(self, range_: OffsetRange) -> None:
        self._closed += 1
        if range_.count > 0 and range_ not in self._skipped:
            self._pending.append(range_)
        self._drain(block=self._closed == len(self._unit.ranges))

    def abort_range(self, range_: OffsetRange) -> None:
        self._drop_stage(range_)

    def close(self) -> None:
        self._conn.close()  # temporary tables go with the session

    # -- staging -------------------------------------------------------------------------------

    def _stage(self, range_: OffsetRange, columns: Sequence[str], types: list[str] | None) -> Any:
        name = sql.Identifier(self._stage_names[range_])
        if range_ not in self._staged:
            if types is None:
                ddl = sql.SQL("CREATE TEMP TABLE {} (LIKE {})").format(name, self._results)
            else:
                ddl = sql.SQL(
                    'CREATE TEMP TABLE {} ("offset" bigint, key {}, value {}, ts bigint, headers jsonb)'
                ).format(name, sql.SQL(self._key_type), sql.SQL(self._value_type))
            self._conn.execute(ddl)
            self._staged[range_] = 0
        fmt = sql.SQL(" (FORMAT BINARY)") if types is not None else sql.SQL("")
        statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
            name, sql.SQL(", ").join(map(sql.Identifier, columns)), fmt
        )
        return self._conn.cursor().copy(statement)

    def _stage_raw(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        types = self._stage_types
        key_text, value_text = self._key_text, self._value_text
        with self._stage(range_, ("offset", "key", "value", "ts", "headers"), types) as copy:
            copy.set_types(types)
            write_row = copy.write_row
            for record in records:
                timestamp_type, timestamp = record.timestamp()
                key, value = record.key(), record.value()  # jsonb takes the bytes: they are JSON text
                write_row(
                    (
                        record.offset(),
                        key if key_text is None else key_text(key),
                        value if value_text is None else value_text(value),
                        None if timestamp_type == TIMESTAMP_NOT_AVAILABLE else timestamp,
                        _headers_json(record.headers()),
                    )
                )
        self._staged[range_] += len(records)

    def _stage_transformed(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        assert self._transform is not None
        rows = [row for row in map(self._transform, records) if row is not None]
        if not rows:
            return
        if self._columns is None:
            self._columns = tuple(rows[0])
        columns = self._columns
        with self._stage(range_, columns, None) as copy:
            for row in rows:
                if tuple(row) != columns:
                    raise ConfigurationError(
                        f"transform rows must all have the columns {list(columns)}, got {list(row)}"
                    )
                copy.write_row([Jsonb(v) if isinstance(v, dict | list) else v for v in row.values()])
        self._staged[range_] += len(rows)

    def _drop_stage(self, range_: OffsetRange) -> None:
        if self._staged.pop(range_, None) is None:
            return
        try:
            self._conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self._stage_names[range_]))
            )
        except psycopg.Error as exc:
            log.warning("could not drop the staging table of %s: %s", range_, exc)

    # -- applying ------------------------------------------------------------------------------

    def _write_outputs(self, range_: OffsetRange) -> Callable[[psycopg.Connection[Any]], None]:
        def write(conn: psycopg.Connection[Any]) -> None:
            if range_ not in self._staged:
                return  # no records (gaps only, or all dropped by the transform)
            stage = sql.Identifier(self._stage_names[range_])
            if self._transform is None:
                statement = sql.SQL(
                    'INSERT INTO {} (topic, partition, "offset", key, value, timestamp, headers)'
                    " SELECT %s, %s, \"offset\", key, value, to_timestamp(0) + ts * interval '1 millisecond',"
                    " headers FROM {}"
                ).format(self._results, stage)
                conn.execute(statement, (range_.topic, range_.partition))
            else:
                assert self._columns is not None
                columns = sql.SQL(", ").join(map(sql.Identifier, self._columns))
                conn.execute(
                    sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                        self._results, columns, columns, stage
                    )
                )

        return write

    def _apply(self, range_: OffsetRange) -> tuple[ChainStep, int | None]:
        try:
            return apply_range(
                self._conn,
                self._offsets_table,
                self._unit.stream,
                self._unit.batch_id,
                range_,
                self._write_outputs(range_),
                self._seed_missing,
            )
        except (StaleAttemptError, MissingOffsetError) as exc:
            raise RangeFailedError(range_, range_.from_offset, str(exc)) from exc
        except psycopg.Error as exc:
            raise RangeFailedError(range_, range_.from_offset, f"PostgreSQL: {exc}".strip()) from exc

    def _drain(self, block: bool) -> None:
        """Apply every pending range whose turn has come; with ``block``, wait for all of them.

        The wait is for progress, not in total: each time the chain of a waiting range moves (an
        earlier piece committed), its clock starts again, so a partition split into many pieces
        over busy executors is not failed while its pieces are still landing one after another."""
        deadline = time.monotonic() + self._chain_wait
        delay = 0.02
        seen: dict[OffsetRange, int | None] = {}
        while True:
            waiting: list[tuple[OffsetRange, int | None]] = []
            for range_ in self._pending:
                step, stored = self._apply(range_)
                if step is ChainStep.WAIT:
                    waiting.append((range_, stored))
                    continue
                if step is ChainStep.ALREADY_APPLIED:
                    log.info(
                        "range %s already applied (offsets table at %s); nothing written", range_, stored
                    )
                self._drop_stage(range_)
            self._pending = [r for r, _ in waiting]
            if not waiting or not block:
                return
            if any(range_ in seen and seen[range_] != stored for range_, stored in waiting):
                deadline = time.monotonic() + self._chain_wait  # an earlier piece landed
            seen = dict(waiting)
            if time.monotonic() >= deadline:
                range_, stored = waiting[0]
                raise RangeFailedError(
                    range_,
                    range_.from_offset,
                    f"offsets table says {stored} for {range_.topic}[{range_.partition}], this range "
                    f"starts at {range_.from_offset}: waited {self._chain_wait:g}s without progress for "
                    "the preceding range of the partition (split across executors) to commit; "
                    "nothing was written",
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
