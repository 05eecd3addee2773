"""The CRD's executor pod fields (volumes, mounts, security contexts, pod metadata) against the parser.

Both directions: the parser knows exactly the fields the CRD declares, its limits equal the CRD's, and a
value one of them refuses the other refuses too. The CEL rules are evaluated by the real API server in
tests/integration/test_crd_pod_cluster.py, which also compares these schemas with core/v1's.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from directstream.operator.core.spec import SpecError, parse_stream
from directstream.operator.core.spec_pod import (
    AFFINITY_FIELDS,
    CONTAINER_SECURITY_FIELDS,
    IMAGE_PULL_POLICIES,
    MAX_ID,
    MAX_POD_METADATA,
    MAX_VOLUMES,
    POD_SECURITY_FIELDS,
    RESERVED_ANNOTATION_PREFIXES,
    RESERVED_LABEL_KEYS,
    RESERVED_LABEL_PREFIXES,
    SCRATCH_VOLUME,
    VOLUME_MOUNT_FIELDS,
    VOLUME_SOURCES,
)
from tests.crd_support import MINIMAL, node_at, schema_errors

EXECUTORS = "spec.executors"


def executors_node(name: str) -> dict[str, Any]:
    return node_at(f"{EXECUTORS}.{name}")


def rules(node: dict[str, Any]) -> list[str]:
    return [" ".join(rule["rule"].split()) for rule in node.get("x-kubernetes-validations", [])]


def test_the_parser_knows_the_fields_the_crd_declares() -> None:
    assert set(executors_node("securityContext")["properties"]) == POD_SECURITY_FIELDS
    assert set(executors_node("containerSecurityContext")["properties"]) == CONTAINER_SECURITY_FIELDS
    volume = executors_node("volumes")["items"]
    assert set(volume["properties"]) == VOLUME_SOURCES | {"name"}
    assert volume["required"] == ["name"]
    mount = executors_node("volumeMounts")["items"]
    assert set(mount["properties"]) == VOLUME_MOUNT_FIELDS
    assert mount["required"] == ["name", "mountPath"]
    assert tuple(executors_node("affinity")["properties"]) == AFFINITY_FIELDS
    assert tuple(executors_node("imagePullPolicy")["enum"]) == IMAGE_PULL_POLICIES
    assert set(executors_node("imagePullSecrets")["items"]["properties"]) == {"name"}


def test_the_limits_are_the_same() -> None:
    assert executors_node("volumes")["maxItems"] == executors_node("volumeMounts")["maxItems"] == MAX_VOLUMES
    assert executors_node("podLabels")["maxProperties"] == MAX_POD_METADATA
    assert executors_node("podAnnotations")["maxProperties"] == MAX_POD_METADATA
    for context in ("securityContext", "containerSecurityContext"):
        for field in ("runAsUser", "runAsGroup"):
            node = executors_node(f"{context}.{field}")
            assert (node["minimum"], node["maximum"]) == (0, MAX_ID)
    # Volume names and mount paths are unique: list maps keyed by them.
    assert executors_node("volumes")["x-kubernetes-list-map-keys"] == ["name"]
    assert executors_node("volumeMounts")["x-kubernetes-list-map-keys"] == ["mountPath"]


def test_the_cel_rules_name_what_the_parser_checks() -> None:
    (one_source,) = rules(executors_node("volumes")["items"])
    assert set(re.findall(r"has\(self\.(\w+)\)", one_source)) == VOLUME_SOURCES
    assert one_source.endswith(".filter(x, x).size() == 1")
    (scratch,) = rules(executors_node("volumes")["items"]["properties"]["name"])
    assert scratch == f"self != '{SCRATCH_VOLUME}'"
    mounts, min_max = rules(node_at(EXECUTORS))
    assert "self.volumes.exists(v, v.name == m.name)" in mounts
    # The rule also runs against the default {} (nested defaults not applied yet), so absent
    # fields stand for their defaults (min 1, max 4) as in the parser.
    assert min_max == "(has(self.min) ? self.min : 1) <= (has(self.max) ? self.max : 4)"
    assert not parses({"min": 3, "max": 2})
    assert not parses({"min": 5})
    assert parses({"min": 2, "max": 2, "mode": "pool"})
    _, label_keys = rules(executors_node("podLabels"))
    assert set(re.findall(r"'([^']+)'", label_keys.split("]")[0])) == RESERVED_LABEL_KEYS
    assert set(re.findall(r"startsWith\('([^']+)'\)", label_keys)) == set(RESERVED_LABEL_PREFIXES)
    _, annotation_keys = rules(executors_node("podAnnotations"))
    assert set(re.findall(r"startsWith\('([^']+)'\)", annotation_keys)) == set(RESERVED_ANNOTATION_PREFIXES)
    # Both key-format rules are one regex; the parser's check of keys is tested against it below.
    assert rules(executors_node("podLabels"))[0] == rules(executors_node("podAnnotations"))[0]


def key_pattern() -> str:
    (pattern,) = re.findall(r"k\.matches\('([^']+)'\)", rules(executors_node("podLabels"))[0])
    return pattern


def parses(executors: dict[str, Any]) -> bool:
    doc = copy.deepcopy(MINIMAL)
    doc["spec"]["executors"] = executors
    try:
        parse_stream(doc)
    except SpecError:
        return False
    return True


def crd_accepts(executors: dict[str, Any]) -> bool:
    return not schema_errors(executors, node_at(EXECUTORS), EXECUTORS)


PVC = {"name": "out", "persistentVolumeClaim": {"claimName": "out"}}
MOUNT = {"name": "out", "mountPath": "/data"}


@pytest.mark.parametrize(
    "executors",
    [
        {"securityContext": {"runAsUser": 10001, "fsGroup": 0, "seccompProfile": {"type": "RuntimeDefault"}}},
        {"securityContext": {"runAsUser": -1}},
        {"securityContext": {"runAsUser": MAX_ID + 1}},
        {"securityContext": {"runAsUser": "1000"}},
        {"securityContext": {"runAsNonRoot": "yes"}},
        {"securityContext": {"readOnlyRootFilesystem": True}},
        {"securityContext": {"fsGroupChangePolicy": "Always", "supplementalGroups": [5]}},
        {"containerSecurityContext": {"runAsGroup": MAX_ID, "privileged": False}},
        {"containerSecurityContext": {"fsGroup": 1}},
        {"containerSecurityContext": {"capabilities": {"drop": ["ALL"]}, "procMount": "Default"}},
        {"containerSecurityContext": {"readOnlyRootFilesystem": 1}},
        {"volumes": [PVC], "volumeMounts": [MOUNT]},
        {"volumes": [{"name": "Out", "emptyDir": {}}]},
        {"volumes": [{"name": "x" * 64, "emptyDir": {}}]},
        {"volumes": [{"emptyDir": {}}]},
        {"volumes": [{"name": "out", "emptyDir": {}, "surprise": {}}]},
        {"volumes": [{"name": "out", "persistentVolumeClaim": {}}]},
        {"volumes": [{"name": "out", "persistentVolumeClaim": {"claimName": "Bad_Name"}}]},
        {"volumes": [{"name": f"v{i}", "emptyDir": {}} for i in range(MAX_VOLUMES + 1)]},
        {"volumes": [PVC], "volumeMounts": [{"name": "out", "mountPath": "data"}]},
        {"volumes": [PVC], "volumeMounts": [{"name": "out"}]},
        {"volumes": [PVC], "volumeMounts": [{**MOUNT, "readOnly": "no"}]},
        {"volumes": [PVC], "volumeMounts": [{**MOUNT, "subPth": "x"}]},
        {"podLabels": {"team": "ads", "example.com/tier": "a.b-c_d"}},
        {"podLabels": {"team": "x" * 64}},
        {"podLabels": {"team": "-ads"}},
        {"podLabels": {"team": 5}},
        {"podLabels": {f"k{i}": "v" for i in range(MAX_POD_METADATA + 1)}},
        {"podAnnotations": {"note": "any text at all: {}"}},
        {"priorityClassName": "batch-low"},
        {"priorityClassName": "Batch"},
        {"imagePullPolicy": "Never"},
        {"imagePullPolicy": "never"},
        {"imagePullSecrets": [{"name": "registry"}]},
        {"imagePullSecrets": [{}]},
        {"imagePullSecrets": [{"name": "registry", "namespace": "x"}]},
        {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}},
        {"affinity": {"nodeAfinity": {}}},
    ],
)
def test_the_crd_and_the_parser_refuse_the_same_values(executors: dict[str, Any]) -> None:
    assert crd_accepts(executors) == parses(executors), schema_errors(executors, node_at(EXECUTORS))


@pytest.mark.parametrize(
    "key",
    [
        "team", "example.com/team", "a.b-c/d_e.f", "x" * 63, "x" * 64, "/team", "team/", "Example.com/team",
        "a/b/c", "-team", "team-", "te am", "example..com/team", f"{'a' * 253}/team", f"{'a' * 254}/team",
    ],
)  # fmt: skip
def test_label_keys_follow_the_crds_rule(key: str) -> None:
    assert (re.search(key_pattern(), key) is not None) == parses({"podLabels": {key: "v"}}), key
    assert parses({"podLabels": {key: "v"}}) == parses({"podAnnotations": {key: "v"}}), key
