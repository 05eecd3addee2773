#!/usr/bin/env python3
"""Start or stop the local Kubernetes control plane and the dev node (the real kubelet, hack/node.sh).

    cluster_up.py up   --state DIR --bin DIR    idempotent: reuses what runs, restarts what died
    cluster_up.py down --state DIR --bin DIR    stops every recorded process, removes DIR

Standard library only: it runs under the system python3 before the project's .venv may exist.
Certificates come from the openssl CLI. Every server listens on 127.0.0.1; logs go to DIR/*.log.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import node_config

ROOT = Path(__file__).resolve().parent.parent
NODE_NAME = "directstream-test-node"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"


# Processes started by this invocation, to notice an early exit exactly.
STARTED: dict[str, subprocess.Popen[bytes]] = {}


class ClusterError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-subj",
        "/CN=directstream-ca",
        "-keyout",
        str(pki / "ca.key"),
        "-out",
        str(pki / "ca.crt"),
    )
    # The apiserver is reached as 127.0.0.1 from the host and from pods, and by its in-cluster names.
    sans = ",".join(
        [
            "IP:127.0.0.1",
            f"IP:{SERVICE_IP}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ]
    )
    (pki / "apiserver.ext").write_text(
        f"subjectAltName={sans}\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kube-apiserver",
        "-keyout",
        str(pki / "apiserver.key"),
        "-out",
        str(pki / "apiserver.csr"),
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(pki / "apiserver.csr"),
        "-CA",
        str(pki / "ca.crt"),
        "-CAkey",
        str(pki / "ca.key"),
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        str(pki / "apiserver.ext"),
        "-out",
        str(pki / "apiserver.crt"),
    )
    sign(
        pki,
        "kubelet",
        "/CN=directstream-test-node",
        f"subjectAltName=IP:127.0.0.1,DNS:{NODE_NAME}\nextendedKeyUsage=serverAuth\n",
    )
    # The apiserver's client for logs/exec on the kubelet.
    sign(
        pki,
        "apiserver-kubelet-client",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "extendedKeyUsage=clientAuth\n",
    )
    openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    for f in pki.iterdir():
        f.chmod(0o600)


def sign(pki: Path, name: str, subject: str, ext: str) -> None:
    """A key and a certificate signed by the cluster CA."""
    (pki / f"{name}.ext").write_text(ext)
    openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
        "-keyout", str(pki / f"{name}.key"), "-out", str(pki / f"{name}.csr"),
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", str(pki / f"{name}.csr"), "-CA", str(pki / "ca.crt"),
        "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "3650",
        "-extfile", str(pki / f"{name}.ext"), "-out", str(pki / f"{name}.crt"),
    )  # fmt: skip


def write_kubeconfig(path: Path, server: str, ca: Path, user: str, token: str) -> None:
    ca_data = base64.b64encode(ca.read_bytes()).decode()
    # JSON is valid YAML, so no YAML library is needed.
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "directstream",
        "clusters": [
            {"name": "directstream", "cluster": {"server": server, "certificate-authority-data": ca_data}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "directstream", "context": {"cluster": "directstream", "user": user}}],
    }
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    path.chmod(0o600)


def init_state(state: Path) -> dict[str, Any]:
    """Ports, tokens, certificates and kubeconfigs, created once per state dir."""
    state.mkdir(parents=True, exist_ok=True)
    make_pki(state / "pki")
    cfg: dict[str, Any] = {
        "etcd_client": free_port(),
        "etcd_peer": free_port(),
        "apiserver": free_port(),
        "kcm": free_port(),
        "scheduler": free_port(),
        "kubelet": free_port(),
        "kubelet_healthz": free_port(),
        "tokens": {u: secrets.token_hex(24) for u in ("admin", "kcm", "scheduler", "node")},
    }
    t = cfg["tokens"]
    # token,user,uid,"groups"; the node authenticates as a kubelet (Node authorizer, NodeRestriction).
    (state / "tokens.csv").write_text(
        f'{t["admin"]},admin,admin,"system:masters"\n'
        f"{t['kcm']},system:kube-controller-manager,kcm\n"
        f"{t['scheduler']},system:kube-scheduler,scheduler\n"
        f'{t["node"]},system:node:{NODE_NAME},node,"system:nodes"\n'
    )
    (state / "tokens.csv").chmod(0o600)
    server = f"https://127.0.0.1:{cfg['apiserver']}"
    ca = state / "pki" / "ca.crt"
    write_kubeconfig(state / "kcm.kubeconfig", server, ca, "system:kube-controller-manager", t["kcm"])
    write_kubeconfig(state / "scheduler.kubeconfig", server, ca, "system:kube-scheduler", t["scheduler"])
    write_kubeconfig(state / "node.kubeconfig", server, ca, f"system:node:{NODE_NAME}", t["node"])
    # Written last: its presence means the state dir is complete.
    (state / "config.json").write_text(json.dumps(cfg, indent=2))
    write_kubeconfig(state / "kubeconfig", server, ca, "admin", t["admin"])
    return cfg


def command_for(name: str, state: Path, bin_dir: Path, cfg: dict[str, Any]) -> list[str]:
    pki = state / "pki"
    etcd_url = f"http://127.0.0.1:{cfg['etcd_client']}"
    peer_url = f"http://127.0.0.1:{cfg['etcd_peer']}"
    if name == "etcd":
        return [
            "etcd",
            "--name=directstream",
            f"--data-dir={state / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=directstream={peer_url}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-level=warn",
            "--quota-backend-bytes=2147483648",
            "--snapshot-count=10000",
            # etcd 3.4.23 cannot answer the apiserver's progress requests; periodic progress
            # notifications keep its watch cache fresh, or watches without a resourceVersion time out.
            "--experimental-watch-progress-notify-interval=500ms",
        ]
    if name == "kube-apiserver":
        return [
            str(bin_dir / name),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={cfg['apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={state / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
            "--v=1",
        ]
    if name == "kube-controller-manager":
        kc = state / "kcm.kubeconfig"
        return [
            str(bin_dir / name),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={cfg['kcm']}",
            f"--cert-dir={state / 'kcm-certs'}",
            "--leader-elect=false",
            "--controllers=*",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
            "--v=1",
        ]
    if name == "kube-scheduler":
        kc = state / "scheduler.kubeconfig"
        return [
            str(bin_dir / name),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={cfg['scheduler']}",
            f"--cert-dir={state / 'scheduler-certs'}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]
    if name == "node":
        node_config.write(state, bin_dir, cfg, NODE_NAME)
        return [
            "bash",
            str(ROOT / "hack" / "node.sh"),
            "start",
            str(state / "node"),
            str(bin_dir / "kubelet"),
        ]
    raise ValueError(name)


def pid_of(state: Path, name: str) -> int | None:
    """The recorded pid, if that process still runs the recorded program (pids get reused)."""
    try:
        pid = int((state / f"{name}.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    marker = "hack/node.sh" if name == "node" else name
    return pid if marker.encode() in cmdline else None


def start(name: str, state: Path, bin_dir: Path, cfg: dict[str, Any]) -> None:
    env = dict(os.environ)
    with open(state / f"{name}.log", "ab") as log:
        # Own session: survives the calling shell; `down` stops it by pid.
        proc = subprocess.Popen(
            command_for(name, state, bin_dir, cfg),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
    (state / f"{name}.pid").write_text(str(proc.pid))
    STARTED[name] = proc


def api_get(
    state: Path, cfg: dict[str, Any], path: str, method: str = "GET", patch: Any = None
) -> tuple[int, Any]:
    ctx = ssl.create_default_context(cafile=str(state / "pki" / "ca.crt"))
    headers = {"Authorization": f"Bearer {cfg['tokens']['admin']}"}
    if patch is not None:
        headers["Content-Type"] = "application/merge-patch+json"
    req = urllib.request.Request(
        f"https://127.0.0.1:{cfg['apiserver']}{path}",
        headers=headers,
        method=method,
        data=None if patch is None else json.dumps(patch).encode(),
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            body = resp.read()
            try:
                return resp.status, json.loads(body)
            except ValueError:
                return resp.status, body.decode()
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ssl.SSLError):
        return 0, None


def wait_until(what: str, seconds: float, check: Any, state: Path, logname: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            tail = ""
            log = state / f"{logname}.log"
            if log.exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise ClusterError(f"timed out after {seconds:.0f}s waiting for {what}; {log} ends with:\n{tail}")
        time.sleep(0.25)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def initialize_node(state: Path, cfg: dict[str, Any]) -> None:
    """Play the cloud provider (kubelet runs with --cloud-provider=external, as it refuses 127.0.0.1 for
    --node-ip): the node's address is 127.0.0.1 and the uninitialized taint goes."""
    path = f"/api/v1/nodes/{NODE_NAME}"
    code, node = api_get(state, cfg, path)
    if code != 200:
        raise ClusterError(f"GET {path}: {code}")
    addresses = [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE_NAME}]
    if node.get("status", {}).get("addresses") != addresses:
        code, _ = api_get(state, cfg, path + "/status", "PATCH", {"status": {"addresses": addresses}})
        if code != 200:
            raise ClusterError(f"patching the node's addresses: {code}")
    taints = node.get("spec", {}).get("taints") or []
    kept = [t for t in taints if t.get("key") != "node.cloudprovider.kubernetes.io/uninitialized"]
    if kept != taints:
        code, _ = api_get(state, cfg, path, "PATCH", {"spec": {"taints": kept or None}})
        if code != 200:
            raise ClusterError(f"removing the node's uninitialized taint: {code}")


def node_ready(state: Path, cfg: dict[str, Any]) -> bool:
    code, node = api_get(state, cfg, f"/api/v1/nodes/{NODE_NAME}")
    if code != 200:
        return False
    conds = node.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def ensure_healthy(
    name: str, state: Path, bin_dir: Path, cfg: dict[str, Any], healthy: Any, *, timeout: float
) -> None:
    """Start the component unless it runs; one we did not start that stays unhealthy (stuck in
    shutdown, say) is killed and replaced; one we started that exits is an error."""
    ensure_alive(name, state, bin_dir, cfg)
    deadline = time.monotonic() + timeout
    adopted_until = time.monotonic() + 10
    while not healthy():
        proc = STARTED.get(name)
        if proc is not None and proc.poll() is not None:
            raise ClusterError(f"{name} exited ({proc.returncode}); see {state / (name + '.log')}")
        pid = pid_of(state, name)
        if proc is None and (pid is None or time.monotonic() > adopted_until):
            if pid is not None:
                stop([pid], 0)
            start(name, state, bin_dir, cfg)
        if time.monotonic() > deadline:
            wait_until(name, 0, healthy, state, name)  # raises with the log's tail
        time.sleep(0.25)


def ensure_alive(name: str, state: Path, bin_dir: Path, cfg: dict[str, Any]) -> None:
    if pid_of(state, name) is None:
        start(name, state, bin_dir, cfg)


def up(state: Path, bin_dir: Path) -> None:
    for b in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet"):
        if not (bin_dir / b).is_file():
            raise ClusterError(f"{bin_dir / b} is missing: run hack/cluster.sh build")
    if not (state / "config.json").exists():
        down(state)  # a half-written state dir: start from scratch
        cfg = init_state(state)
    else:
        cfg = json.loads((state / "config.json").read_text())
    ensure_healthy(
        "etcd",
        state,
        bin_dir,
        cfg,
        lambda: http_ok(f"http://127.0.0.1:{cfg['etcd_client']}/health"),
        timeout=60,
    )
    ensure_healthy(
        "kube-apiserver", state, bin_dir, cfg, lambda: api_get(state, cfg, "/readyz")[0] == 200, timeout=120
    )
    for name in ("kube-controller-manager", "kube-scheduler", "node"):
        ensure_alive(name, state, bin_dir, cfg)
    sock = state / "node" / "containerd.sock"
    wait_until("containerd", 30, lambda: node_config.containerd_answers(sock), state, "node/containerd")
    # Pods use the project's images by name (imagePullPolicy IfNotPresent): there is no registry.
    subprocess.run(
        [sys.executable, str(ROOT / "hack" / "images.py"), "load", f"--address={sock}"], check=True
    )
    wait_until(
        f"node {NODE_NAME} registered",
        60,
        lambda: api_get(state, cfg, f"/api/v1/nodes/{NODE_NAME}")[0] == 200,
        state,
        "node/kubelet",
    )
    initialize_node(state, cfg)
    wait_until(
        "the default ServiceAccount",
        120,
        lambda: api_get(state, cfg, "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
        state,
        "kube-controller-manager",
    )
    wait_until(f"node {NODE_NAME} Ready", 60, lambda: node_ready(state, cfg), state, "node/kubelet")


def stop(pids: list[int], grace: float) -> None:
    """TERM all at once, KILL what is left after grace."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _zombie(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def down(state: Path) -> None:
    if not state.exists():
        return
    # The node first (its init stops kubelet, the containers and containerd), then the control plane
    # together, etcd last.
    node = pid_of(state, "node")
    if node is not None:
        stop_node(node)
    if (state / "node").is_dir():
        subprocess.run(["bash", str(ROOT / "hack" / "node.sh"), "cleanup", str(state / "node")], check=False)
    for group in (["kube-scheduler", "kube-controller-manager", "kube-apiserver"], ["etcd"]):
        pids = [p for p in (pid_of(state, n) for n in group) if p is not None]
        stop(pids, 10)
    shutil.rmtree(state, ignore_errors=True)


def stop_node(pid: int) -> None:
    """SIGTERM to the namespace's init (unshare's child; unshare itself ignores TERM), then wait for it."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGTERM)
    stop([pid], 45) if not children else _wait_gone(pid, 45)


def _wait_gone(pid: int, grace: float) -> None:
    deadline = time.monotonic() + grace
    while Path(f"/proc/{pid}").exists() and not _zombie(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop([pid], 0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--state", required=True, type=Path)
    p.add_argument("--bin", required=True, type=Path)
    args = p.parse_args()
    state = args.state.resolve()
    try:
        if args.action == "up":
            up(state, args.bin.resolve())
            print(f"cluster ready: KUBECONFIG={state / 'kubeconfig'}", file=sys.stderr)
        else:
            down(state)
    except (ClusterError, subprocess.CalledProcessError) as e:
        print(f"[cluster_up.py] error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
