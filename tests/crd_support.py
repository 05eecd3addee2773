"""The DirectStream CRD as data, for the tests: its schema, a structural-schema validator for the subset of
OpenAPI v3 it uses, the API server's defaulting, and a status with every field the operator writes."""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from directstream.executor.contract import OffsetRange
from directstream.operator.core.pinning import pin
from directstream.operator.core.planning import BatchPlan, DataLoss, TopicRecreated
from directstream.operator.core.rate import RateState
from directstream.operator.core.scaling import ScaleState
from directstream.operator.core.spec import parse_spec
from directstream.operator.core.state import LEDGER_LIMIT, LedgerEntry, StreamState
from directstream.operator.core.topic_lifecycle import TopicRecord

CRD_PATH = Path(__file__).resolve().parents[1] / "crds" / "directstream.yaml"

MINIMAL: dict[str, Any] = {
    "apiVersion": "directstream.io/v1alpha1",
    "kind": "DirectStream",
    "metadata": {"name": "clicks"},
    "spec": {
        "kafka": {"bootstrapServers": "127.0.0.1:9092"},
        "topics": ["clicks"],
        "processor": {"options": {"directory": "/data/out"}},
    },
}


@functools.cache
def load_crd() -> dict[str, Any]:
    doc = yaml.safe_load(CRD_PATH.read_text())
    assert isinstance(doc, dict)
    return doc


def version_of(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    assert isinstance(version, dict)
    return version


def root_schema() -> dict[str, Any]:
    schema = version_of(load_crd())["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def node_at(path: str) -> dict[str, Any]:
    """The schema of ``spec.rate.maxPerPartition`` (dotted path of properties from the root)."""
    node = root_schema()
    for key in path.split("."):
        node = node["properties"][key]
    return node


def property_paths(node: dict[str, Any], path: str) -> Iterator[str]:
    """Dotted paths of the properties below ``node`` (not into array items or map values)."""
    for key, child in node.get("properties", {}).items():
        yield f"{path}.{key}"
        if f"{path}.{key}" != "spec.kafka.config":  # its keys have dots; a free-form leaf for the parser
            yield from property_paths(child, f"{path}.{key}")


def declared_properties(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property below ``node``, through array items and map values too."""
    for key, child in node.get("properties", {}).items():
        yield f"{path}.{key}", child
        yield from declared_properties(child, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from declared_properties(node[key], f"{path}[]")


# --- a structural-schema validator for the subset of OpenAPI v3 the CRD uses --------------------------------


def schema_errors(value: Any, node: dict[str, Any], path: str = "") -> list[str]:
    """What the API server would reject or prune in ``value`` (CEL rules aside)."""
    errors: list[str] = []
    if value is None:
        return [] if node.get("nullable") else [f"{path}: null (would be pruned)"]
    for name in ("anyOf", "oneOf"):
        if node.get(name):
            passing = sum(
                not schema_errors(value, {**node, **branch, name: None}, path) for branch in node[name]
            )
            if (name == "anyOf" and passing == 0) or (name == "oneOf" and passing != 1):
                errors.append(f"{path}: {passing} {name} branches match")
    if node.get("enum") is not None and value not in node["enum"]:
        errors.append(f"{path}: {value!r} not in {node['enum']}")
    if isinstance(value, dict):
        errors += _object_errors(value, node, path)
    elif isinstance(value, list):
        if node.get("type") != "array":
            return [f"{path}: unexpected list"]
        if len(value) > node.get("maxItems", math.inf) or len(value) < node.get("minItems", 0):
            errors.append(f"{path}: {len(value)} items")
        for index, item in enumerate(value):
            errors += schema_errors(item, node["items"], f"{path}[{index}]")
    else:
        errors += _scalar_errors(value, node, path)
    return errors


def _object_errors(value: dict[str, Any], node: dict[str, Any], path: str) -> list[str]:
    if node.get("type", "object") != "object" or node.get("x-kubernetes-int-or-string"):
        return [f"{path}: unexpected mapping"]
    errors = [f"{path}.{key}: required" for key in node.get("required", []) if key not in value]
    if not node.get("minProperties", 0) <= len(value) <= node.get("maxProperties", math.inf):
        errors.append(f"{path}: {len(value)} properties")
    for key, item in value.items():
        if key in node.get("properties", {}):
            errors += schema_errors(item, node["properties"][key], f"{path}.{key}")
        elif "additionalProperties" in node:
            errors += schema_errors(item, node["additionalProperties"], f"{path}.{key}")
        elif not node.get("x-kubernetes-preserve-unknown-fields"):
            errors.append(f"{path}.{key}: not declared (would be pruned)")
    return errors


def _scalar_errors(value: Any, node: dict[str, Any], path: str) -> list[str]:
    kind = node.get("type")
    if node.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    elif kind is None:
        ok = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    else:
        ok = {
            "string": isinstance(value, str),
            "boolean": isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
        }.get(kind, False)
    if not ok:
        return [f"{path}: {value!r} is not of type {kind or 'int-or-string'}"]
    errors = []
    if isinstance(value, str):
        if "pattern" in node and not re.search(node["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {node['pattern']}")
        if not node.get("minLength", 0) <= len(value) <= node.get("maxLength", math.inf):
            errors.append(f"{path}: length {len(value)}")
        if node.get("format") == "date-time":
            datetime.fromisoformat(value)
    elif not isinstance(value, bool):
        low = node.get("minimum", -math.inf)
        if value < low or (node.get("exclusiveMinimum") and value == low):
            errors.append(f"{path}: {value} below minimum")
        if value > node.get("maximum", math.inf):
            errors.append(f"{path}: {value} above maximum")
    return errors


def apply_defaults(value: Any, node: dict[str, Any]) -> Any:
    """The object with the schema's defaults filled in, as the API server does before validating."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for key, child in node.get("properties", {}).items():
        if key not in out and "default" in child:
            out[key] = copy.deepcopy(child["default"])
        if key in out:
            out[key] = apply_defaults(out[key], child)
    return out


# --- status -------------------------------------------------------------------------------------------------


def full_state() -> StreamState:
    """Everything ``to_json`` can write: a retried plan with data loss (when planned and in the
    recorded range), a recreated topic and new partitions, topic records, a full history."""
    plan = BatchPlan(
        batch_id=LEDGER_LIMIT + 5,
        ranges=(
            OffsetRange("clicks", 0, 100, 180),
            OffsetRange("clicks", 1, 70, 90),
            OffsetRange("clicks", 2, 0, 12),
        ),
        data_loss=(
            DataLoss("clicks", 1, 50, 70, "deleted"),
            DataLoss("clicks", 0, 100, 120, "deleted", OffsetRange("clicks", 0, 100, 180)),
        ),
        new_partitions=(("clicks", 2),),
        rate_capped=True,
        recreated=(TopicRecreated("views", "frzguCiNQsyBg0GWQ3NtTQ", "p3e3c4Q5RjWxJqYk2y6lBg", {0: 7}, 3),),
    )
    state = StreamState(
        committed={("clicks", 0): 100, ("clicks", 1): 50},
        ledger=tuple(
            LedgerEntry(
                batch,
                1,
                3,
                10,
                2048,
                0.125,
                1793491200.5 + batch,
                note="reset r1" if batch == 5 else "",
                skipped=batch % 2,
                dead_lettered=batch % 3,
                executors=2,
            )
            for batch in range(5, LEDGER_LIMIT + 5)
        ),
        rate=RateState(rate=1234.5, updated_at=1793491200.25, error=-3.5),
        records_total=4711,
        skipped_total=12,
        dead_lettered_total=7,
        applied_reset="r1",
        topics={"clicks": TopicRecord("frzguCiNQsyBg0GWQ3NtTQ", 190), "views": TopicRecord("", 0)},
        # Times with a fraction: the API server gives 1.0 back as 1, which the string comparison would flag.
        scale=ScaleState(
            2, "lag 9k records, ~4 s at the measured rate: 1 -> 2", 1793491200.5, 1793491201.25, 2
        ),
    )
    stream = parse_spec(
        "clicks",
        {
            "kafka": {"bootstrapServers": "k:9092"},
            "topics": ["clicks"],
            "executors": {"max": 2, "maxRecords": 40, "env": [{"name": "A", "value": "b"}]},
            "processor": {
                "sink": "jsonl",
                "options": {"directory": "/out"},
                "decode": {"value": "json"},
                "onError": "deadLetter",
                "deadLetter": {"topic": "clicks-dlq"},
            },
        },
    )
    recorded = state.with_plan(plan, now=1793491201.75, pinned=pin(stream, plan))
    failed = recorded.with_retry("executor 1 exited with 3: boom").with_exhausted("boom", "0123456789abcdef")
    assert failed.pending is not None
    return replace(failed, pending=replace(failed.pending, budget_from=2))


def full_status() -> dict[str, Any]:
    """``StreamState.to_json()`` plus every field the operator adds."""
    status = full_state().to_json()
    status["pending"]["job"] = "clicks-b8-a2"
    status.update(
        observedGeneration=3,
        phase="Running",
        conditions=[
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": f"{kind} message",
                "lastTransitionTime": "2026-11-01T00:00:00Z",
                "observedGeneration": 3,
            }
            for kind, value, reason in (
                ("Ready", "True", "Committing"),
                ("Progressing", "True", "BatchRunning"),
                ("Degraded", "False", "AsExpected"),
            )
        ],
        batch=7,
        lag={
            "total": 123,
            "partitions": [{"topic": "clicks", "partition": p, "lag": 41 - p} for p in range(3)],
            "updatedAt": "2026-11-01T00:00:05Z",
        },
        executors={"active": 2, "succeeded": 1, "failed": 1},
    )
    return status
