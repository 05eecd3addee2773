"""Offsets kept in the user's PostgreSQL database, next to the results (exactly-once outputs).

The offsets table (created if missing)::

    CREATE TABLE IF NOT EXISTS directstream_offsets (
        stream      text    NOT NULL,
        topic       text    NOT NULL,
        partition   integer NOT NULL,
        next_offset bigint  NOT NULL,    -- the next input offset to output: everything below is in
        batch_id    bigint,              -- the batch of the last range applied (NULL when only seeded)
        batch_from  bigint,              -- where that batch's chain started for this partition
        updated_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (stream, topic, partition))

One row per input partition forms a **chain**: a range ``[from, until)`` of batch ``N`` applies
only by a compare-and-set ``next_offset: from -> until`` in the same transaction as its results
(:func:`apply_range`). The outcome when the set does not match:

- stored ``next_offset < from``: an earlier piece of the same partition (split across executors)
  has not committed yet; the caller waits and tries again (:attr:`ChainStep.WAIT`);
- stored ``batch_id = N``, ``batch_from <= from`` and ``until <= next_offset``: this range already
  committed (a replay after "committed, then died before reporting"); nothing is written
  (:attr:`ChainStep.ALREADY_APPLIED`);
- anything else: a stale attempt (another driver, or a plan that does not start where the
  database says): :class:`StaleAttemptError` naming both offsets.

A missing row is the driver's to create (:func:`seed_offsets`, from the offsets it plans with);
see ``seed_missing`` for the sink-side alternative. The driver reads the chain back with
:func:`read_stored_offsets` to start from the database's offsets (Spark's ``fromOffsets``).

This module imports psycopg 3; the sink registry imports it only for the ``postgres`` sink, so
executors of other sinks do not need psycopg.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from directstream.executor.contract import OffsetRange
from directstream.executor.errors import ConfigurationError

_DDL_LOCK = 0x6473_6464_6C  # advisory lock key: concurrent CREATE TABLE IF NOT EXISTS can collide


class StaleAttemptError(Exception):
    """The offsets table is past (or beside) this range: applying it would duplicate or skip."""


class MissingOffsetError(Exception):
    """No chain row for the partition, and the caller may not start one."""


class StoredChain(NamedTuple):
    next_offset: int
    batch_id: int | None
    batch_from: int | None

    def applied(self, batch_id: int, range_: OffsetRange) -> bool:
        """This batch's chain already covers ``range_`` (pieces of a batch commit in order)."""
        return (
            self.batch_id == batch_id
            and self.batch_from is not None
            and self.batch_from <= range_.from_offset
            and range_.until_offset <= self.next_offset
        )


def _select_chain(table: str) -> sql.Composed:
    return sql.SQL(
        "SELECT next_offset, batch_id, batch_from FROM {} WHERE stream = %s AND topic = %s AND partition = %s"
    ).format(table_identifier(table))


def read_chain(
    conn: psycopg.Connection[Any], table: str, stream: str, topic: str, partition: int
) -> StoredChain | None:
    row = conn.execute(_select_chain(table), (stream, topic, partition)).fetchone()
    return None if row is None else StoredChain(*row)


class ChainStep(enum.Enum):
    COMMITTED = "committed"
    ALREADY_APPLIED = "already applied"
    WAIT = "wait"


def table_identifier(name: str) -> sql.Identifier:
    """``table`` or ``schema.table`` as a quoted identifier (never pasted into SQL as text)."""
    parts = name.split(".")
    if not name or len(parts) > 2 or not all(parts):
        raise ConfigurationError(f"table name must be 'table' or 'schema.table', got {name!r}")
    return sql.Identifier(*parts)


def connect(dsn: str) -> psycopg.Connection[Any]:
    """An autocommit connection: transactions are explicit (``conn.transaction()``)."""
    try:
        return psycopg.connect(dsn, autocommit=True, application_name="directstream")
    except psycopg.Error as exc:
        raise ConfigurationError(f"cannot connect to PostgreSQL: {exc}".strip()) from exc


def ensure_table(conn: psycopg.Connection[Any], ddl: sql.Composed) -> None:
    """Run ``CREATE TABLE IF NOT EXISTS``, serialised: concurrent ones may fail on the catalog."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        conn.execute(ddl)


def offsets_ddl(table: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        " stream text NOT NULL, topic text NOT NULL, partition integer NOT NULL,"
        " next_offset bigint NOT NULL, batch_id bigint, batch_from bigint,"
        " updated_at timestamptz NOT NULL DEFAULT now(),"
        " PRIMARY KEY (stream, topic, partition))"
    ).format(table_identifier(table))


def read_stored_offsets(dsn: str, offsets_table: str, stream: str) -> dict[tuple[str, int], int]:
    """``{(topic, partition): next_offset}`` of ``stream``; empty if the table does not exist."""
    with connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (_regclass_name(offsets_table),)).fetchone()
        if exists is None or exists[0] is None:
            return {}
        rows = conn.execute(
            sql.SQL("SELECT topic, partition, next_offset FROM {} WHERE stream = %s").format(
                table_identifier(offsets_table)
            ),
            (stream,),
        ).fetchall()
    return {(str(topic), int(partition)): int(offset) for topic, partition, offset in rows}


def seed_offsets(dsn: str, table: str, stream: str, offsets: Mapping[tuple[str, int], int]) -> int:
    """Start the chain of every partition in ``offsets`` that has none (insert-if-missing; rows
    that exist keep their offset). Creates the table if needed; returns the rows inserted."""
    rows = [(stream, topic, partition, offset) for (topic, partition), offset in sorted(offsets.items())]
    with connect(dsn) as conn:
        ensure_table(conn, offsets_ddl(table))
        if not rows:
            return 0
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (stream, topic, partition, next_offset) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING"
                ).format(table_identifier(table)),
                rows,
            )
            return max(cur.rowcount, 0)


def _regclass_name(table: str) -> str:
    return ".".join(sql.Identifier(part).as_string(None) for part in table.split("."))


def apply_range(  # noqa: PLR0917 (internal helper; one call site per sink)
    conn: psycopg.Connection[Any],
    table: str,
    stream: str,
    batch_id: int,
    range_: OffsetRange,
    write_outputs: Callable[[psycopg.Connection[Any]], None],
    seed_missing: bool = False,
) -> tuple[ChainStep, int | None]:
    """Try to apply ``range_``: in one transaction, move the chain ``from -> until`` and run
    ``write_outputs``. Returns the step taken and the stored ``next_offset`` seen (for WAIT
    messages). Raises :class:`StaleAttemptError` or :class:`MissingOffsetError`.

    ``seed_missing`` starts a missing chain at ``from``. Only safe when the partition's first
    range is not split across executors: a later piece could otherwise start the chain past an
    earlier one (that earlier piece then fails as stale rather than being lost)."""
    ident = table_identifier(table)
    key = (stream, range_.topic, range_.partition)
    cas = sql.SQL(
        "UPDATE {} SET next_offset = %s, batch_id = %s,"
        " batch_from = CASE WHEN batch_id IS NOT DISTINCT FROM %s THEN batch_from ELSE %s END,"
        " updated_at = now()"
        " WHERE stream = %s AND topic = %s AND partition = %s AND next_offset = %s RETURNING 1"
    ).format(ident)
    for _ in range(2):  # a second round only after seeding a missing row
        with conn.transaction():
            # The UPDATE takes the row lock: a concurrent attempt on this partition waits here,
            # then re-checks next_offset against the winner's committed value.
            params = (range_.until_offset, batch_id, batch_id, range_.from_offset, *key, range_.from_offset)
            if conn.execute(cas, params).fetchone() is not None:
                write_outputs(conn)
                return ChainStep.COMMITTED, range_.from_offset
            row = conn.execute(_select_chain(table), key).fetchone()
            stored = None if row is None else StoredChain(*row)
        if stored is None:
            if not seed_missing:
                raise MissingOffsetError(
                    f"the offsets table {table} has no offset for stream {stream!r} {range_.topic}"
                    f"[{range_.partition}]: with spec.offsets.store: postgres the driver seeds it before "
                    "the first batch; with the offsets kept in Kafka set the sink's options.seedMissing: "
                    "true to start the chain at this range's from"
                )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (stream, topic, partition, next_offset) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING"
                ).format(ident),
                (*key, range_.from_offset),
            )
            continue
        if stored.applied(batch_id, range_):
            return ChainStep.ALREADY_APPLIED, stored.next_offset
        if stored.next_offset < range_.from_offset:
            return ChainStep.WAIT, stored.next_offset
        raise StaleAttemptError(
            f"stale attempt: offsets table says {stored.next_offset} for stream {stream!r} {range_.topic}"
            f"[{range_.partition}] (batch {stored.batch_id}), this range starts at {range_.from_offset} "
            f"(batch {batch_id}); nothing was written"
        )
    raise MissingOffsetError(f"could not start the offset chain of {range_.topic}[{range_.partition}]")
