"""pytest fixtures for the real PostgreSQL server started by ``hack/postgres.sh``.

``postgres`` reuses a running server ($DIRECTSTREAM_POSTGRES_DSN or this checkout's .dev/postgres)
and otherwise starts one for the session and stops it afterwards. It never skips: a server that
cannot start is a test error with the script's message. ``pg_schema`` is a fresh schema per test,
so tables of different tests never meet.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_SH = ROOT / "hack" / "postgres.sh"


def _answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _script_env() -> str | None:
    out = subprocess.run(
        ["bash", str(POSTGRES_SH), "env"], capture_output=True, text=True, check=False, timeout=60
    )
    match = re.search(r"DIRECTSTREAM_POSTGRES_DSN=(\S+)", out.stdout)
    return match.group(1) if match else None


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The DSN of a running PostgreSQL with database ``directstream``."""
    dsn = os.environ.get("DIRECTSTREAM_POSTGRES_DSN") or _script_env()
    if dsn and _answers(dsn):
        yield dsn
        return
    started = subprocess.run(
        ["bash", str(POSTGRES_SH), "up"], capture_output=True, text=True, check=False, timeout=300
    )
    if started.returncode != 0:
        pytest.fail(f"could not start PostgreSQL with hack/postgres.sh up:\n{started.stderr}", pytrace=False)
    dsn = _script_env()
    assert dsn, "hack/postgres.sh up succeeded but printed no DIRECTSTREAM_POSTGRES_DSN"
    try:
        yield dsn
    finally:
        subprocess.run(["bash", str(POSTGRES_SH), "down"], capture_output=True, check=False, timeout=300)


@pytest.fixture
def pg_schema(postgres: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh schema for one test (dropped afterwards); qualify table names with it."""
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:30].strip("_")
    name = f"t_{base}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
