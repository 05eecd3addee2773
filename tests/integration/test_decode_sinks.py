"""``processor.decode`` reaching the typed sinks, in local mode against the real broker, PostgreSQL
and S3 API server: with ``decode.value: json`` the postgres sink stores ``jsonb`` (queryable with
``->>``) and the parquet sink Parquet's JSON type; a key decoded as ``string`` is ``text`` / string.
The garbage values are poison and skipped; every good record lands once, typed."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest

from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.local_mode import cli, latest_offsets, state_committed, write_stream
from tests.harness.s3_fixtures import S3Server
from tests.integration.test_poison import COUNT, PARTITIONS, is_bad, produce_mixed

pytestmark = pytest.mark.kafka


def decoding_spec(topic: str, sink: dict[str, Any]) -> dict[str, Any]:
    store = {"offsets": {"store": "postgres"}} if sink["sink"] == "postgres" else {}
    return {
        **store,
        "topics": [topic],
        "batchInterval": "200ms",
        "rate": {"maxPerPartition": 2_000},
        "executors": {"max": 2},
        "processor": {**sink, "decode": {"key": "string", "value": "json"}, "onError": "skip"},
    }


def run_until_caught_up(
    manifest: Path, tmp_path: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return cli(
        "run",
        str(manifest),
        "--until-caught-up",
        "--state-dir",
        str(tmp_path / "state"),
        cwd=tmp_path,
        env=env,
    )


def good_values() -> dict[tuple[int, int], dict[str, int]]:
    """(partition, offset) -> the parsed value of every good record ``produce_mixed`` wrote."""
    return {(i % PARTITIONS, i // PARTITIONS): {"n": i} for i in range(COUNT) if not is_bad(i)}


@pytest.mark.postgres
def test_json_values_are_jsonb_in_postgres(
    kafka: KafkaBroker, postgres: str, pg_schema: str, topic_name: str, tmp_path: Path
) -> None:
    produce_mixed(kafka, topic_name)
    table = f"{pg_schema}.clicks"
    sink = {"sink": "postgres", "options": {"table": table, "offsetsTable": f"{pg_schema}.offsets"}}
    manifest = write_stream(tmp_path / "s.yaml", "pgjson", kafka.bootstrap, decoding_spec(topic_name, sink))
    run = run_until_caught_up(manifest, tmp_path, {**os.environ, "DIRECTSTREAM_POSTGRES_DSN": postgres})
    assert run.returncode == 0, run.stderr
    with psycopg.connect(postgres) as conn:
        types = dict(
            conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attname IN ('key', 'value')",
                (table,),
            ).fetchall()
        )
        rows = conn.execute(
            f"SELECT partition, \"offset\", key, value, (value->>'n')::int FROM {table}"
        ).fetchall()
    assert types == {"key": "text", "value": "jsonb"}
    assert {(p, o): v for p, o, _, v, _ in rows} == good_values(), "every good record once, parsed"
    assert all(key == f"k{n}" for _, _, key, _, n in rows), "keys are text"
    assert state_committed(tmp_path / "state") == latest_offsets(kafka.bootstrap, topic_name)


@pytest.mark.postgres
def test_a_bytea_table_is_refused_for_json_values_with_the_statement_that_converts_it(
    kafka: KafkaBroker, postgres: str, pg_schema: str, topic_name: str, tmp_path: Path
) -> None:
    """A table made before decode.value json was set: the batch fails with the fix in its message
    (not PostgreSQL's cast error), and nothing commits."""
    produce_mixed(kafka, topic_name)
    table = f"{pg_schema}.old"
    with psycopg.connect(postgres) as conn:
        conn.execute(
            f"CREATE TABLE {table} (topic text NOT NULL, partition integer NOT NULL,"
            ' "offset" bigint NOT NULL,'
            " key bytea, value bytea, timestamp timestamptz, headers jsonb,"
            ' PRIMARY KEY (topic, partition, "offset"))'
        )
    sink = {"sink": "postgres", "options": {"table": table, "offsetsTable": f"{pg_schema}.offsets"}}
    spec = {**decoding_spec(topic_name, sink), "maxAttempts": 1}
    manifest = write_stream(tmp_path / "s.yaml", "pgold", kafka.bootstrap, spec)
    run = run_until_caught_up(manifest, tmp_path, {**os.environ, "DIRECTSTREAM_POSTGRES_DSN": postgres})
    assert run.returncode != 0
    assert (
        f"the results table {table} has key bytea, but processor.decode.key: string stores text" in run.stderr
    )
    assert f"ALTER TABLE {table} ALTER COLUMN key TYPE text USING convert_from(key, 'UTF8')" in run.stderr
    assert not state_committed(tmp_path / "state"), "nothing committed"


@pytest.mark.s3
def test_json_values_are_parquet_json_on_s3(
    kafka: KafkaBroker, s3: S3Server, s3_prefix: str, topic_name: str, tmp_path: Path
) -> None:
    produce_mixed(kafka, topic_name)
    sink = {"sink": "parquet", "options": {"url": f"s3://{s3.bucket}/{s3_prefix}", "endpoint": s3.endpoint}}
    manifest = write_stream(tmp_path / "s.yaml", "pqjson", kafka.bootstrap, decoding_spec(topic_name, sink))
    run = run_until_caught_up(manifest, tmp_path, s3.process_env())
    assert run.returncode == 0, run.stderr
    keys = s3.keys(s3_prefix)
    assert keys, "objects were written"
    found: dict[tuple[int, int], Any] = {}
    rows = 0
    for key in keys:
        file = pq.ParquetFile(io.BytesIO(s3.get(key)))
        assert str(file.schema.column(5).logical_type) == "JSON"
        assert str(file.schema.column(4).logical_type) == "String"
        table = file.read()
        rows += table.num_rows
        for row in table.to_pylist():
            assert row["key"] == f"k{row['offset'] * PARTITIONS + row['partition']}"
            found[(row["partition"], row["offset"])] = json.loads(row["value"])
    assert found == good_values() and rows == len(found), "every good record once, its value JSON"
    assert state_committed(tmp_path / "state") == latest_offsets(kafka.bootstrap, topic_name)
