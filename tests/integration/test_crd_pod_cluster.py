"""The CRD's executor pod fields on a real API server: its CEL rules refuse what the parser refuses, a
stream with every pod setting is stored unchanged, and the schemas match core/v1 as this API server
publishes it (so a Kubernetes field is neither missing nor invented)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from directstream.operator.core.spec import SpecError, parse_stream
from tests.crd_support import CRD_PATH, MINIMAL, node_at
from tests.harness.kube_fixtures import Kube, wait_crd_established

pytestmark = pytest.mark.k8s
GROUP, VERSION, PLURAL = "directstream.io", "v1alpha1", "directstreams"
PVC = {"name": "out", "persistentVolumeClaim": {"claimName": "clicks-out"}}
MOUNT = {"name": "out", "mountPath": "/data"}


@pytest.fixture(scope="module")
def crd(kube: Kube) -> str:
    kube.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=directstream-tests",
        "-f",
        str(CRD_PATH),
    )
    wait_crd_established(kube, "directstreams.directstream.io")
    return "directstreams.directstream.io"


@pytest.fixture(scope="module")
def core_v1(kube: Kube) -> dict[str, Any]:
    """core/v1's schemas as this API server publishes them (OpenAPI v3)."""
    schemas: dict[str, Any] = json.loads(kube.kubectl("get", "--raw", "/openapi/v3/api/v1").stdout)[
        "components"
    ]["schemas"]
    return schemas


def with_executors(namespace: str, executors: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(MINIMAL)
    doc["metadata"] = {"name": "pods", "namespace": namespace}
    doc["spec"]["executors"] = executors
    return doc


# (what, spec.executors, the API server's message, the parser's field under spec.executors, its message)
INVALID = [
    (
        "mount of no volume", {"volumeMounts": [MOUNT]},
        "must name one of spec.executors.volumes", "volumeMounts.0.name", "names no volume",
    ),
    (
        "mount of another volume", {"volumes": [PVC], "volumeMounts": [{"name": "other", "mountPath": "/x"}]},
        "must name one of spec.executors.volumes", "volumeMounts.0.name", "names no volume",
    ),
    ("a volume twice", {"volumes": [PVC, PVC]}, "volumes[1]: Duplicate", "volumes.1.name", "listed twice"),
    (
        "a path twice", {"volumes": [PVC], "volumeMounts": [MOUNT, MOUNT]},
        "volumeMounts[1]: Duplicate value", "volumeMounts.1.mountPath", "mounted twice",
    ),
    ("no source", {"volumes": [{"name": "out"}]}, "give exactly one volume source", "volumes.0", "got none"),
    (
        "two sources", {"volumes": [{"name": "out", "emptyDir": {}, "nfs": {"server": "s", "path": "/"}}]},
        "give exactly one volume source", "volumes.0", "got emptyDir, nfs",
    ),
    (
        "a passed-through source and a typed one", {"volumes": [{"name": "out", "emptyDir": {}, "rbd": {}}]},
        "give exactly one volume source", "volumes.0", "got emptyDir, rbd",
    ),
    (
        "the scratch name", {"volumes": [{"name": "directstream-tmp", "emptyDir": {}}]},
        "the scratch volume directstream adds", "volumes.0.name", "the scratch volume directstream adds",
    ),
    (
        "a label of ours", {"podLabels": {"directstream.io/stream": "x"}},
        "a label key set by directstream", "podLabels.directstream.io/stream", "set by directstream",
    ),
    (
        "the Job's label", {"podLabels": {"batch.kubernetes.io/job-name": "x"}},
        "a label key set by directstream", "podLabels.batch.kubernetes.io/job-name", "set by directstream",
    ),
    (
        "an app label of ours", {"podLabels": {"app.kubernetes.io/name": "x"}},
        "a label key set by directstream", "podLabels.app.kubernetes.io/name", "set by directstream",
    ),
    (
        "a bad label key", {"podLabels": {"a b": "x"}},
        "every key must be [prefix/]name", "podLabels.a b", "not a valid key",
    ),
    (
        "an annotation of ours", {"podAnnotations": {"directstream.io/units": "1"}},
        "an annotation key under directstream.io/", "podAnnotations.directstream.io/units",
        "set by directstream",
    ),
    (
        "a container field on the pod", {"securityContext": {"allowPrivilegeEscalation": False}},
        'unknown field "spec.executors.securityContext.allowPrivilegeEscalation"',
        "securityContext.allowPrivilegeEscalation", "a container setting: put it under",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("executors", "server", "path", "parser"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_the_api_server_and_the_parser_refuse_the_same_pod_settings(
    kube: Kube, crd: str, namespace: str, executors: dict[str, Any], server: str, path: str, parser: str
) -> None:
    doc = with_executors(namespace, executors)
    proc = kube.kubectl("create", "--validate=strict", "-f", "-", input=json.dumps(doc), check=False)
    assert proc.returncode != 0, proc.stdout
    assert server in " ".join(proc.stderr.split()), proc.stderr
    with pytest.raises(SpecError) as caught:
        parse_stream(doc)
    found = {p.path: p.message for p in caught.value.problems}
    assert parser in found[f"spec.executors.{path}"], found


FULL = {
    "volumes": [
        PVC,
        {"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        {
            "name": "certs",
            "secret": {"secretName": "ca", "items": [{"key": "ca.pem", "path": "ca.pem", "mode": 292}]},
        },
        {"name": "share", "nfs": {"server": "nas.local", "path": "/exports/clicks"}},
        {"name": "fuse", "csi": {"driver": "s3.csi.example.com", "volumeAttributes": {"bucket": "b"}}},
        {
            "name": "scratch",
            "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}},
        },
    ],
    "volumeMounts": [
        MOUNT,
        {"name": "cache", "mountPath": "/tmp"},
        {"name": "certs", "mountPath": "/etc/kafka", "readOnly": True, "recursiveReadOnly": "IfPossible"},
        {"name": "share", "mountPath": "/share", "subPath": "eu"},
    ],
    "securityContext": {
        "runAsUser": 20000,
        "fsGroupChangePolicy": "Always",
        "supplementalGroups": [5],
        "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}],
        "seccompProfile": {"type": "Localhost", "localhostProfile": "executor.json"},
    },
    "containerSecurityContext": {
        "readOnlyRootFilesystem": False,
        "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
    },
    "podLabels": {"team": "ads", "example.com/tier": "batch"},
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
    "priorityClassName": "batch-low",
    "imagePullPolicy": "IfNotPresent",
    "imagePullSecrets": [{"name": "registry"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
            ]
        }
    },
}  # fmt: skip


@pytest.fixture
def objects(kube: Kube, crd: str) -> Iterator[client.CustomObjectsApi]:
    api = kube.api_client()
    yield client.CustomObjectsApi(api)
    api.close()


def test_every_pod_setting_is_stored_unchanged(
    kube: Kube, namespace: str, objects: client.CustomObjectsApi
) -> None:
    doc = with_executors(namespace, FULL)
    created = kube.kubectl("create", "--validate=strict", "-f", "-", input=json.dumps(doc))
    assert "Warning" not in created.stderr, created.stderr
    stored = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "pods")
    executors = {k: v for k, v in stored["spec"]["executors"].items() if k in FULL}
    assert executors == FULL  # nothing pruned
    assert parse_stream(stored).executors == parse_stream(doc).executors


def resolve(schemas: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref") or next((part["$ref"] for part in node.get("allOf", []) if "$ref" in part), None)
    return resolve(schemas, schemas[ref.rsplit("/", 1)[-1]]) if ref else node


def differences(
    ours: dict[str, Any], theirs: dict[str, Any], schemas: dict[str, Any], path: str
) -> list[str]:
    """Where a typed part of the CRD differs from core/v1: field names, and enums core/v1 declares."""
    theirs = resolve(schemas, theirs)
    found = []
    if "properties" in ours:
        if set(ours["properties"]) != set(theirs.get("properties", {})):
            found.append(f"{path}: {sorted(ours['properties'])} != {sorted(theirs.get('properties', {}))}")
        for key, child in ours["properties"].items():
            if key in theirs.get("properties", {}):
                found += differences(child, theirs["properties"][key], schemas, f"{path}.{key}")
        missing = set(theirs.get("required", [])) - set(ours.get("required", []))
        if missing:
            found.append(f"{path}: core/v1 requires {sorted(missing)}")
    if "items" in ours and "items" in theirs:
        found += differences(ours["items"], theirs["items"], schemas, f"{path}[]")
    if "enum" in theirs and set(theirs["enum"]) != set(ours.get("enum", [])):
        found.append(f"{path}: enum {ours.get('enum')} != {theirs['enum']}")
    return found


@pytest.mark.parametrize(
    ("field", "kind"),
    [
        ("securityContext", "PodSecurityContext"),
        ("containerSecurityContext", "SecurityContext"),
        ("volumes", "Volume"),
        ("volumeMounts", "VolumeMount"),
        ("affinity", "Affinity"),
    ],
)
def test_the_pod_schemas_match_core_v1(core_v1: dict[str, Any], field: str, kind: str) -> None:
    ours = node_at(f"spec.executors.{field}")
    ours = ours.get("items", ours)
    assert differences(ours, core_v1[f"io.k8s.api.core.v1.{kind}"], core_v1, kind) == []
