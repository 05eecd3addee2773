"""pytest fixtures for the real Kubernetes control plane and the dev node (the real kubelet).

`kube` (session): reuses a cluster that answers at $KUBECONFIG or <dev dir>/cluster/kubeconfig, otherwise
starts one with `hack/cluster.sh up` (building it if needed) and stops it at the end of the session.
Infrastructure that cannot start is an error, never a skip.
`namespace` (function): a fresh namespace per test, deleted afterwards.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[2]
# The images `hack/cluster.sh up` builds and loads into the dev node (hack/images.py): no registry, so
# pods name exactly these (imagePullPolicy IfNotPresent, the default for a tag other than latest).
VERSION = importlib.metadata.version("directstream")
EXECUTOR_IMAGE = f"directstream/executor:{VERSION}"
OPERATOR_IMAGE = f"directstream/operator:{VERSION}"
CLUSTER_SH = ROOT / "hack" / "cluster.sh"


@dataclass
class Kube:
    kubeconfig: str
    bin_dir: Path

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def api_client(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=self.kubeconfig)

    def api_server_env(self) -> list[dict[str, str]]:
        """Container env that points in-cluster clients at the API server: the kubelet sets
        KUBERNETES_SERVICE_HOST to the Service IP, which nothing routes without kube-proxy here."""
        api = self.api_client()
        server = urlparse(api.configuration.host)
        api.close()
        return [
            {"name": "KUBERNETES_SERVICE_HOST", "value": server.hostname or "127.0.0.1"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(server.port or 443)},
        ]

    def pod_logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """The container's log as `kubectl logs` shows it ("" when there is none yet)."""
        args = ["logs", "-n", namespace, pod, *(["-c", container] if container else [])]
        proc = self.kubectl(*args, check=False)
        return proc.stdout if proc.returncode == 0 else ""

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 60, every: float = 0.25) -> Any:
        return poll_until(what, check, timeout, every)


def poll_until(what: str, check: Callable[[], Any], timeout: float = 60, every: float = 0.25) -> Any:
    """Poll check() until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def wait_crd_established(kube: Kube, crd: str, timeout: float = 60) -> None:
    """Until the API server serves the CRD. (``kubectl wait --for=condition=Established`` fails at once
    instead of waiting when it finds the new CRD's status without conditions yet.)"""
    jsonpath = '{.status.conditions[?(@.type=="Established")].status}'

    def established() -> bool:
        proc = kube.kubectl("get", f"crd/{crd}", "-o", f"jsonpath={jsonpath}", check=False)
        return proc.returncode == 0 and proc.stdout.strip() == "True"

    poll_until(f"CRD {crd} to be established", established, timeout=timeout)


def _cluster_env() -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(CLUSTER_SH), "env"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    env = {}
    for line in out.splitlines():
        m = re.match(r"export (\w+)=(.*)$", line)
        if m:
            env[m.group(1)] = m.group(2)
    return env


def _answers(kubeconfig: str, kubectl: Path) -> bool:
    if not Path(kubeconfig).is_file() or not kubectl.exists():
        return False
    proc = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", "get", "--raw=/readyz"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return proc.returncode == 0


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    env = _cluster_env()
    bin_dir = Path(env["PATH"].split(":")[0])
    candidates = [os.environ.get("KUBECONFIG", ""), env["KUBECONFIG"]]
    reuse = next((c for c in candidates if c and _answers(c, bin_dir / "kubectl")), None)
    if reuse is not None:
        yield Kube(reuse, bin_dir)
        return
    up = subprocess.run(
        ["bash", str(CLUSTER_SH), "up"], capture_output=True, text=True, check=False, timeout=900
    )
    if up.returncode != 0:
        raise RuntimeError(
            f"hack/cluster.sh up failed ({up.returncode}):\n{up.stderr[-4000:]}{up.stdout[-2000:]}"
        )
    try:
        yield Kube(env["KUBECONFIG"], bin_dir)
    finally:
        subprocess.run(["bash", str(CLUSTER_SH), "down"], capture_output=True, check=False, timeout=300)


def enforce_restricted(kube: Kube, namespace: str) -> None:
    """The `restricted` Pod Security Standard in ``namespace``: violating pods are refused, and a
    workload (a Job) whose pod template violates it gets a warning when it is created."""
    labels = [f"pod-security.kubernetes.io/{mode}=restricted" for mode in ("enforce", "warn")]
    kube.kubectl("label", "namespace", namespace, "--overwrite", *labels)


def _namespace_name(test_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:50].strip("-") or "test"
    return f"{base}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    name = _namespace_name(request.node.name)
    api = kube.api_client()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name, "labels": {"directstream.io/test": "true"}}})
    # Pods need the namespace's default ServiceAccount, which the controller-manager creates.
    kube.wait_for(
        f"ServiceAccount default in {name}",
        lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items),
        timeout=30,
    )
    try:
        yield name
    finally:
        # The namespace controller deletes what the test left; the node stops its pods.
        core.delete_namespace(name, propagation_policy="Background")
        api.close()
