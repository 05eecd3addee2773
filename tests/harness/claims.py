"""Durable volumes for executor pods in the tests: a hostPath PersistentVolume per claim, pre-bound to the
claim, as a cluster admin provides storage (the pods only ever see the PersistentVolumeClaim, which the
`restricted` Pod Security Standard allows; hostPath volumes it does not).

`host_volumes` (function): ``host_volumes.provide(namespace, claim, directory)`` creates the volume for a
claim the test creates (or ``claim=...`` manifests, e.g. an example's), waits until it is bound, and deletes
the PersistentVolumes (cluster-scoped, so the namespace does not take them along) at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from directstream.operator.core.executor_pod import EXECUTOR_UID
from tests.harness.kube_fixtures import Kube

SIZE = "1Gi"


def claim_manifest(
    namespace: str, name: str, access_modes: tuple[str, ...] = ("ReadWriteMany",)
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"accessModes": list(access_modes), "resources": {"requests": {"storage": SIZE}}},
    }


@dataclass
class HostVolumes:
    kube: Kube
    created: list[str] = field(default_factory=list)

    def provide(
        self, namespace: str, claim: str, directory: Path, *, create_claim: bool = True, size: str = SIZE
    ) -> dict[str, Any]:
        """A PersistentVolume of ``size`` on ``directory`` bound to ``namespace/claim`` (a claim asking for
        more is never bound to it); the claim's manifest, created unless ``create_claim`` is false."""
        directory.mkdir(parents=True, exist_ok=True)
        # The executors run as the image's user (10001): the storage is theirs, as an admin would set it up.
        os.chown(directory, EXECUTOR_UID, EXECUTOR_UID)
        directory.chmod(0o775)
        manifest = claim_manifest(namespace, claim)
        name = f"{namespace}-{claim}"[:253]
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"directstream.io/test": "true"}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": manifest["spec"]["accessModes"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
        self.kube.kubectl("create", "-f", "-", input=json.dumps(volume))
        self.created.append(name)
        if create_claim:
            self.kube.kubectl("create", "-f", "-", input=json.dumps(manifest))
        return manifest

    def code(self, namespace: str, directory: Path) -> dict[str, Any]:
        """spec.executors fields that give executor pods the test's own modules (and files) in
        ``directory``, at the same path as on the host: a claim on it, mounted there, and PYTHONPATH."""
        self.provide(namespace, "test-code", directory)
        return {
            "env": [{"name": "PYTHONPATH", "value": str(directory)}],
            "volumes": [{"name": "test-code", "persistentVolumeClaim": {"claimName": "test-code"}}],
            "volumeMounts": [{"name": "test-code", "mountPath": str(directory)}],
        }

    def wait_bound(self, namespace: str, claim: str) -> None:
        def phase() -> bool:
            out = self.kube.kubectl(
                "get", "pvc", claim, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False
            )
            return out.stdout == "Bound"

        self.kube.wait_for(f"claim {namespace}/{claim} bound", phase, timeout=60)

    def cleanup(self) -> None:
        for name in self.created:
            self.kube.kubectl("delete", "pv", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def host_volumes(kube: Kube) -> Iterator[HostVolumes]:
    volumes = HostVolumes(kube)
    try:
        yield volumes
    finally:
        volumes.cleanup()
