"""pytest fixtures for end-to-end tests of the operator: the CRD installed, and the real
``directstream-operator`` process watching the test's namespace."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from directstream.operator.core.status import state_from_status
from tests.harness.kube_fixtures import Kube, enforce_restricted, poll_until, wait_crd_established

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "directstream.yaml"
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def crd(kube: Kube) -> str:
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    wait_crd_established(kube, "directstreams.directstream.io")
    return "directstreams.directstream.io"


class OperatorProcess:
    """``directstream-operator --namespace NS`` with the admin kubeconfig, logs to a file.

    Without ``executor_image`` it runs as users start it: streams get the executor image of the
    operator's own version (``default_executor_image``).

    Its leader Lease lives in the first watched namespace (each test has its own), and its
    identity stays the same across ``kill()`` and ``start()``, as a pod's does across container
    restarts, so a restarted operator takes its own Lease back at once."""

    def __init__(
        self,
        kube: Kube,
        namespaces: list[str],
        log_path: Path,
        extra_args: list[str] | None = None,
        identity: str | None = None,
    ) -> None:
        self.kube = kube
        self.namespaces = namespaces
        self.log_path = log_path
        self.extra_args = list(extra_args or [])
        self.identity = identity or f"test-{log_path.stem}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0  # /metrics off unless a test asks for it
        self.executor_image: str | None = None  # --executor-image, when a test sets it

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": self.kube.kubeconfig, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
        env.pop("DIRECTSTREAM_EXECUTOR_IMAGE", None)
        env.pop("DIRECTSTREAM_EXECUTOR_REPOSITORY", None)
        args = [str(VENV_BIN / "directstream-operator")]
        if self.executor_image is not None:
            args += ["--executor-image", self.executor_image]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        args += ["--liveness-port", "0", "--metrics-port", str(self.metrics_port)]
        args += ["--metrics-host", "127.0.0.1", "--log-format", "plain", "--verbose"]
        args += ["--leader-elect-resource-namespace", self.namespaces[0]]
        args += ["--leader-elect-identity", self.identity, *self.extra_args]
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

    def pause(self) -> None:
        """SIGSTOP: the process holds what it held but does nothing (a long GC pause, a frozen node)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def lease_holder(kube: Kube, namespace: str, name: str = "directstream-operator") -> str:
    """The leader Lease's holderIdentity ("" when there is none or it is released)."""
    out = kube.kubectl(
        "get", "lease", name, "-n", namespace, "-o", "jsonpath={.spec.holderIdentity}", check=False
    )
    return out.stdout.strip() if out.returncode == 0 else ""


@pytest.fixture
def operator(kube: Kube, crd: str, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    # Streams run as a user's would in a namespace that enforces the `restricted` Pod Security
    # Standard, without any securityContext of their own: the executors' defaults must pass it.
    enforce_restricted(kube, namespace)
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def pool_operator(kube: Kube, crd: str, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The ``operator`` fixture's operator serving warm executors (``--pool-port``) on 127.0.0.1: the
    dev node's pods share the host's network, so executor pods reach it there."""
    enforce_restricted(kube, namespace)
    port = free_port()
    pool_args = ["--pool-host", "127.0.0.1", "--pool-port", str(port)]
    process = OperatorProcess(kube, [namespace], tmp_path / "operator.log", pool_args)
    process.start()
    try:
        yield process
    finally:
        if process.proc is not None and process.proc.poll() is None:
            kube.kubectl("delete", "directstreams", "--all", "-n", namespace, "--timeout=60s", check=False)
        process.stop()


# Shorter than the defaults (15 s / 10 s / 2 s) so that failover tests take seconds, with the same
# margins: a renewal may take up to 5 s on a loaded machine before the leader steps down.
FAST_ELECTION = {"lease_duration_s": 8, "renew_deadline_s": 6.0, "retry_period_s": 1.0}
FAST_ELECTION_ARGS = [
    "--leader-elect-lease-duration=8s",
    "--leader-elect-renew-deadline=6s",
    "--leader-elect-retry-period=1s",
]


@pytest.fixture
def operator_pair(
    kube: Kube, crd: str, namespace: str, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    """Two operators watching the same namespace, sharing its Lease (``FAST_ELECTION``): the first
    holds the Lease before the second starts, so ``(leader, standby)``."""
    leader = OperatorProcess(kube, [namespace], tmp_path / "operator-a.log", FAST_ELECTION_ARGS)
    standby = OperatorProcess(kube, [namespace], tmp_path / "operator-b.log", FAST_ELECTION_ARGS)
    leader.start()
    poll_until(
        f"{leader.identity} to hold the Lease", lambda: lease_holder(kube, namespace) == leader.identity
    )
    standby.start()
    poll_until(f"{standby.identity} to say it is a standby", lambda: "standby (" in standby.log())
    try:
        yield leader, standby
    finally:
        if any(p.proc is not None and p.proc.poll() is None for p in (leader, standby)):
            for p in (leader, standby):
                p.resume()
            kube.kubectl("delete", "directstreams", "--all", "-n", namespace, "--timeout=60s", check=False)
        leader.stop()
        standby.stop()


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


def committed_of(status: dict[str, Any] | None) -> dict[tuple[str, int], int]:
    """The committed offsets a status holds, whatever its encoding ({} before the first commit)."""
    return dict(state_from_status(status).committed)


def condition(stream: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (stream.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def wait_committed(
    kube: Kube, namespace: str, name: str, want: dict[tuple[str, int], int], timeout: float = 120
) -> dict[str, Any]:
    """Wait until the stream's committed offsets equal ``want`` and nothing is pending."""

    def check() -> dict[str, Any] | None:
        stream = get_stream(kube, namespace, name)
        status = stream.get("status") or {}
        committed = dict(state_from_status(status).committed)
        return stream if committed == want and not status.get("pending") else None

    result: dict[str, Any] = kube.wait_for(f"{namespace}/{name} to commit {want}", check, timeout=timeout)
    return result


def wait_until(what: str, check: Any, timeout: float = 60.0) -> Any:
    return poll_until(what, check, timeout)
