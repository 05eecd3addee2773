"""Committed offsets kept in the user's PostgreSQL (``spec.offsets.store: postgres``).

The ``postgres`` sink advances the offset chain in the same transaction as the results; the
driver reads the chain to know where the stream stands (Spark's ``fromOffsets``), starts the
chain of partitions it has not seen, and moves it for the two deliberate jumps: a data-loss
skip and a rewind. Every move is a compare-and-set, so replaying it after a crash is harmless.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence

from psycopg import sql

from directstream.executor.contract import ConfigurationError, PostgresConnection
from directstream.executor.offset_store_postgres import (
    connect,
    ensure_table,
    offsets_ddl,
    read_stored_offsets,
    table_identifier,
)

from ..core.errors import OffsetStoreUnavailable
from ..core.planning import TopicPartition
from ..core.spec import StreamSpec


class OffsetStoreError(OffsetStoreUnavailable):
    """The offsets table cannot be reached or a move did not apply."""


def dsn_for(spec: StreamSpec, environ: Mapping[str, str] | None = None) -> str:
    """The sink's connection string as the driver sees it (local mode): ``options.dsn``, else the
    variable named by ``options.dsnEnv`` in the driver's own environment."""
    env = environ if environ is not None else os.environ
    try:
        return PostgresConnection.from_options(spec.processor.options).resolve(env.get, "the driver's")
    except ConfigurationError as exc:
        raise OffsetStoreError(f"offsets.store postgres: the driver needs the database too: {exc}") from exc


class PostgresOffsetStore:
    def __init__(self, dsn: str, table: str, stream: str) -> None:
        self._dsn = dsn
        self._table = table
        self._stream = stream

    @classmethod
    def for_spec(cls, spec: StreamSpec, dsn: str) -> PostgresOffsetStore:
        return cls(dsn, PostgresConnection.from_options(spec.processor.options).offsets_table, spec.name)

    def read(self) -> dict[TopicPartition, int]:
        try:
            return read_stored_offsets(self._dsn, self._table, self._stream)
        except Exception as exc:  # psycopg's errors: one message for the condition or the CLI
            raise OffsetStoreError(f"reading offsets table {self._table}: {exc}") from exc

    def move(self, moves: Mapping[TopicPartition, tuple[int | None, int]]) -> None:
        """Start or move chains: ``{tp: (expected, new)}``. A chain still at ``expected`` (or
        missing) is set to ``new``; a chain anywhere else is left alone, so the same moves can
        be replayed after a crash without undoing work the sink has since committed."""
        if not moves:
            return
        table = table_identifier(self._table)
        upsert = sql.SQL(
            "INSERT INTO {t} (stream, topic, partition, next_offset) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (stream, topic, partition) DO UPDATE"
            " SET next_offset = EXCLUDED.next_offset, batch_id = NULL, batch_from = NULL, updated_at = now()"
            " WHERE {t}.next_offset = %s"
        ).format(t=table)
        insert = sql.SQL(
            "INSERT INTO {t} (stream, topic, partition, next_offset) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING"
        ).format(t=table)
        try:
            with connect(self._dsn) as conn:
                ensure_table(conn, offsets_ddl(self._table))
                with conn.transaction(), conn.cursor() as cur:
                    for (topic, partition), (expected, new) in sorted(moves.items()):
                        if expected is None or expected == new:
                            cur.execute(insert, (self._stream, topic, partition, new))
                        else:
                            cur.execute(upsert, (self._stream, topic, partition, new, expected))
        except Exception as exc:
            raise OffsetStoreError(f"moving offsets in table {self._table}: {exc}") from exc

    def forget(self, tps: Sequence[TopicPartition]) -> None:
        """Delete the chains of partitions the stream no longer reads (a deleted topic, one no
        longer matched): a topic of that name read later starts a new chain."""
        if not tps:
            return
        delete = sql.SQL("DELETE FROM {} WHERE stream = %s AND topic = %s AND partition = %s").format(
            table_identifier(self._table)
        )
        try:
            with connect(self._dsn) as conn:
                ensure_table(conn, offsets_ddl(self._table))
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(delete, [(self._stream, t, p) for t, p in sorted(tps)])
        except Exception as exc:
            raise OffsetStoreError(f"deleting offsets from table {self._table}: {exc}") from exc

    def force(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Set chains unconditionally: a rewind the user asked for."""
        self.move({tp: (None, off) for tp, off in offsets.items()})
        current = self.read()
        self.move({tp: (current[tp], off) for tp, off in offsets.items() if current.get(tp) != off})


class AsyncOffsetStore:
    """The store for the event loop: each call in a worker thread."""

    def __init__(self, store: PostgresOffsetStore) -> None:
        self.sync = store

    async def read(self) -> dict[TopicPartition, int]:
        return await asyncio.to_thread(self.sync.read)

    async def move(self, moves: Mapping[TopicPartition, tuple[int | None, int]]) -> None:
        await asyncio.to_thread(self.sync.move, moves)

    async def force(self, offsets: Mapping[TopicPartition, int]) -> None:
        await asyncio.to_thread(self.sync.force, offsets)

    async def forget(self, tps: Sequence[TopicPartition]) -> None:
        await asyncio.to_thread(self.sync.forget, tps)
