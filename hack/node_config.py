"""The dev node's configuration files (containerd, CNI, kubelet), written into <state>/node before
hack/node.sh starts it. Standard library only. Each setting that differs from a default is here for one of
the machine quirks in ../shared/recipes/real-node.md."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAUSE_IMAGE = "directstream/pause:catatonit"  # built by hack/images.py


def containerd_toml(node: Path) -> str:
    return f"""version = 2
root = "{node / "containerd"}"
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{node / "containerd.sock"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # No CAP_SYS_RESOURCE here: containers keep the node's oom_score_adj floor.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{ROOT / "hack" / "cni"}"
    conf_dir = "{node / "cni"}"
    max_conf_num = 1
"""


def kubelet_config(node: Path, cfg: dict[str, Any], pki: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": cfg["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": cfg["kubelet_healthz"],
        "tlsCertFile": str(pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{node / 'containerd.sock'}",
        # Hybrid cgroups: v1 controllers, runc; kubepods nests in the node's cgroup (its namespace root).
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": True,
        "cgroupRoot": "/",
        "failCgroupV1": False,
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "maxOpenFiles": 20000,
        "resolvConf": "/etc/resolv.conf",
        "podLogsDir": str(node / "pod-logs"),
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "maxPods": 50,
        "serializeImagePulls": False,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }


def write(state: Path, bin_dir: Path, cfg: dict[str, Any], node_name: str) -> None:
    node = state / "node"
    node.mkdir(parents=True, exist_ok=True)
    (node / "containerd.toml").write_text(containerd_toml(node))
    (node / "cni").mkdir(exist_ok=True)
    (node / "cni" / "10-directstream.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "directstream-hostnet",
                "plugins": [{"type": "directstream-hostnet"}],
            }
        )
    )
    (node / "kubelet.json").write_text(json.dumps(kubelet_config(node, cfg, state / "pki"), indent=2))
    args = [
        f"--config={node / 'kubelet.json'}",
        f"--kubeconfig={state / 'node.kubeconfig'}",
        f"--hostname-override={node_name}",
        "--cloud-provider=external",
        "--v=1",
    ]
    (node / "kubelet.args").write_text("\n".join(args) + "\n")
    # kubelet adds KUBE-FIREWALL rules to the host's iptables; here every iptables call fails instead.
    stubs = node / "stub-bin"
    stubs.mkdir(exist_ok=True)
    for tool in ("iptables", "ip6tables"):
        for suffix in ("", "-save", "-restore"):
            f = stubs / f"{tool}{suffix}"
            f.write_text("#!/bin/sh\nexit 1\n")
            f.chmod(0o755)
    (node / "pod-logs").mkdir(exist_ok=True)


def containerd_answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    proc = subprocess.run(["ctr", "--address", str(sock), "version"], capture_output=True, check=False)
    return proc.returncode == 0
