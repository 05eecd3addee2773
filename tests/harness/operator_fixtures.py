"""pytest fixtures for end-to-end tests of the operator: the CRD installed, and the real
``directstream-operator`` process watching the test's namespace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.kube_fixtures import Kube, poll_until, wait_crd_established

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "directstream.yaml"
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def crd(kube: Kube) -> str:
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    wait_crd_established(kube, "directstreams.directstream.io")
    return "directstreams.directstream.io"


class OperatorProcess:
    """``directstream-operator --namespace NS`` with the admin kubeconfig, logs to a file."""

    def __init__(self, kube: Kube, namespaces: list[str], log_path: Path) -> None:
        self.kube = kube
        self.namespaces = namespaces
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0  # /metrics off unless a test asks for it

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": self.kube.kubeconfig, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
        args = [str(VENV_BIN / "directstream-operator"), "--executor-image", "directstream/executor:test"]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        args += ["--liveness-port", "0", "--metrics-port", str(self.metrics_port)]
        args += ["--metrics-host", "127.0.0.1", "--log-format", "plain", "--verbose"]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def operator(kube: Kube, crd: str, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kube, [namespace], tmp_path / "operator.log")
    process.start()
    try:
        yield process
    finally:
        # Streams carry the operator's finalizer (its daemons stop before an object goes), so they
        # are deleted while the operator still runs, or the namespace would hang in Terminating.
        if process.proc is not None and process.proc.poll() is None:
            kube.kubectl("delete", "directstreams", "--all", "-n", namespace, "--timeout=60s", check=False)
        process.stop()


def stream_manifest(name: str, namespace: str, bootstrap: str, spec: dict[str, Any]) -> str:
    doc = {
        "apiVersion": "directstream.io/v1alpha1",
        "kind": "DirectStream",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"kafka": {"bootstrapServers": bootstrap}, **spec},
    }
    return yaml.safe_dump(doc)


def get_stream(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    out = kube.kubectl("get", "directstream", name, "-n", namespace, "-o", "json").stdout
    doc: dict[str, Any] = json.loads(out)
    return doc


def condition(stream: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (stream.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def wait_committed(
    kube: Kube, namespace: str, name: str, want: dict[tuple[str, int], int], timeout: float = 120
) -> dict[str, Any]:
    """Wait until the stream's status.committed equals ``want`` and nothing is pending."""

    def check() -> dict[str, Any] | None:
        stream = get_stream(kube, namespace, name)
        status = stream.get("status") or {}
        committed = {
            (t, int(p)): o for t, ps in (status.get("committed") or {}).items() for p, o in ps.items()
        }
        return stream if committed == want and not status.get("pending") else None

    result: dict[str, Any] = kube.wait_for(f"{namespace}/{name} to commit {want}", check, timeout=timeout)
    return result


def wait_until(what: str, check: Any, timeout: float = 60.0) -> Any:
    return poll_until(what, check, timeout)
