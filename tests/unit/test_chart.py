"""The Helm chart (charts/directstream) against the rest of the project: no drift.

Pure file checks. Rendering, linting and the API server's verdict on the rendered objects are in
tests/integration/test_helm.py.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from directstream.operator.core.durations import parse_duration
from directstream.operator.core.executor_pod import DEFAULT_EXECUTOR_REPOSITORY
from directstream.operator.core.leadership import ElectionSettings
from directstream.operator.operator_main import build_parser, election_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "directstream"


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return _resolve(schema, target)


def _undeclared(schema: dict[str, Any], node: dict[str, Any], values: Any, path: str) -> list[str]:
    """Paths in ``values`` that the schema node does not declare (free-form maps are fine)."""
    node = _resolve(schema, node)
    if not isinstance(values, dict) or "properties" not in node:
        return []
    missing = []
    for key, value in values.items():
        child = node["properties"].get(key)
        if child is None:
            missing.append(f"{path}.{key}")
        else:
            missing += _undeclared(schema, child, value, f"{path}.{key}")
    return missing


def test_the_chart_crd_is_byte_identical_to_crds_directstream_yaml():
    chart_copy = CHART / "crds" / "directstream.yaml"
    source = ROOT / "crds" / "directstream.yaml"
    assert chart_copy.read_bytes() == source.read_bytes(), (
        f"{chart_copy.relative_to(ROOT)} drifted from {source.relative_to(ROOT)}: "
        f"cp {source.relative_to(ROOT)} {chart_copy.relative_to(ROOT)}"
    )
    assert [p.name for p in (CHART / "crds").iterdir()] == ["directstream.yaml"]


def test_app_version_is_the_project_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


def test_every_default_value_is_declared_in_the_schema():
    schema = _schema()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert _undeclared(schema, schema, values, "") == []


def test_schema_enums_follow_the_operator_cli():
    schema = _schema()
    operator = schema["properties"]["operator"]["properties"]
    log_format = next(a for a in build_parser()._actions if "--log-format" in a.option_strings)
    assert operator["logFormat"]["enum"] == list(log_format.choices or [])
    assert operator["logLevel"]["enum"] == ["info", "debug"]  # debug is --verbose


def test_every_flag_the_deployment_passes_exists_in_the_operator_cli():
    template = (CHART / "templates" / "deployment.yaml").read_text()
    passed = set(re.findall(r"^\s*- (--[a-z-]+)", template, flags=re.MULTILINE))
    known = {option for action in build_parser()._actions for option in action.option_strings}
    assert {"--namespace", "--all-namespaces", "--executor-image", "--liveness-port"} <= passed
    assert passed - known == set()


def test_the_charts_executor_repository_is_the_operators_default():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["executors"]["image"]["repository"] == DEFAULT_EXECUTOR_REPOSITORY


def test_the_chart_election_defaults_are_the_operators_and_valid():
    values = yaml.safe_load((CHART / "values.yaml").read_text())["leaderElection"]
    defaults = ElectionSettings()
    assert parse_duration(values["leaseDuration"]) == defaults.lease_duration_s
    assert parse_duration(values["renewDeadline"]) == defaults.renew_deadline_s
    assert parse_duration(values["retryPeriod"]) == defaults.retry_period_s
    args = build_parser().parse_args(
        [
            "--namespace=x",
            f"--leader-elect-lease-duration={values['leaseDuration']}",
            f"--leader-elect-renew-deadline={values['renewDeadline']}",
            f"--leader-elect-retry-period={values['retryPeriod']}",
        ]
    )
    assert election_config(args).settings == defaults
