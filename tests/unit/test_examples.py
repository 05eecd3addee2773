"""Every manifest in ``examples/`` parses with the operator's own parser (no cluster needed).

``tests/integration/test_examples.py`` also has the API server accept them and runs one for real;
this file is the fast check, so a broken example fails in the unit run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from directstream.operator.core.spec import API_VERSION, KIND, StreamSpec, parse_stream

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))
# Kinds an example may carry besides DirectStream (what a user applies alongside it).
COMPANION_KINDS = {("v1", "Secret")}


def example_params() -> list[Any]:
    return [pytest.param(path, id=path.name) for path in EXAMPLES]


def load_documents(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{path.name} holds no YAML documents"
    for doc in docs:
        assert isinstance(doc, dict), f"{path.name}: every document must be a mapping"
    return docs


def parse_example(path: Path) -> list[StreamSpec]:
    """The example's DirectStreams as the operator parses them; other documents must be companions."""
    streams = []
    for doc in load_documents(path):
        if (doc.get("apiVersion"), doc.get("kind")) == (API_VERSION, KIND):
            streams.append(parse_stream(doc))
        else:
            assert (doc.get("apiVersion"), doc.get("kind")) in COMPANION_KINDS, (
                f"{path.name}: unexpected {doc.get('apiVersion')}/{doc.get('kind')}"
            )
    assert streams, f"{path.name} holds no DirectStream"
    return streams


def test_the_examples_are_there() -> None:
    names = {path.name for path in EXAMPLES}
    wanted = {"jsonl.yaml", "kafka-to-kafka.yaml", "from-timestamp.yaml", "topic-pattern.yaml"}
    assert wanted | {"postgres.yaml", "with-secret.yaml", "parquet-s3.yaml"} <= names


@pytest.mark.parametrize("path", example_params())
def test_example_parses(path: Path) -> None:
    streams = parse_example(path)
    # Examples are read by people: each explains itself.
    assert path.read_text().lstrip().startswith("#"), f"{path.name} should open with a comment"
    for stream in streams:
        assert stream.kafka.bootstrap_servers


def test_the_examples_show_what_their_names_promise() -> None:
    by_name = {path.name: parse_example(path)[0] for path in EXAMPLES}
    assert by_name["jsonl.yaml"].processor.sink == "jsonl"
    kafka = by_name["kafka-to-kafka.yaml"].processor
    assert kafka.sink == "kafka" and kafka.options.get("transactional") is True
    assert by_name["from-timestamp.yaml"].starting_offsets.kind == "timestamp"
    assert by_name["topic-pattern.yaml"].topic_pattern
    secret_ref = by_name["with-secret.yaml"].kafka.config_from_secret
    secret = next(d for d in load_documents(EXAMPLES_DIR / "with-secret.yaml") if d["kind"] == "Secret")
    assert secret_ref == secret["metadata"]["name"]
    assert {"sasl.username", "sasl.password"} <= set(secret["stringData"])
    # The Secret holds the credentials, not the manifest's plain config.
    assert not any(key.startswith("sasl.password") for key in by_name["with-secret.yaml"].kafka.config)

    parquet = by_name["parquet-s3.yaml"].processor
    assert parquet.sink == "parquet" and str(parquet.options["url"]).startswith("s3://")
    lake_secret = next(d for d in load_documents(EXAMPLES_DIR / "parquet-s3.yaml") if d["kind"] == "Secret")
    assert parquet.options["credentialsSecret"] == lake_secret["metadata"]["name"]
    assert set(lake_secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}

    postgres = by_name["postgres.yaml"]
    assert postgres.processor.sink == "postgres" and postgres.offset_store == "postgres"
    # The DSN with its password comes from a Secret through the executors' env, never inline.
    options = postgres.processor.options
    assert "dsn" not in options
    env = {entry["name"]: entry for entry in postgres.executors.env}
    assert env[options["dsnEnv"]]["valueFrom"]["secretKeyRef"]["key"]
