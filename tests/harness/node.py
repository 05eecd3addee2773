"""The test node: a small kubelet that runs the pods bound to it as local processes.

    python -m tests.harness.node --kubeconfig FILE --name NODE --state DIR

It registers the Node, renews its Lease, watches the pods with spec.nodeName=NODE and runs each one
in a PodWorker thread. Container logs: DIR/logs/<namespace>/<pod>/<container>.log (see podlogs.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.harness.podworker import PodWorker

log = logging.getLogger("node")
LEASE_SECONDS = 40
RENEW_EVERY = 10
CAPACITY = {"cpu": "16", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TestNode:
    def __init__(self, api: client.ApiClient, name: str, state: Path) -> None:
        self.name = name
        self.state = state
        self.core = client.CoreV1Api(api)
        self.coord = client.CoordinationV1Api(api)
        url = urlparse(api.configuration.host)
        self.api_host, self.api_port = url.hostname or "127.0.0.1", url.port or 443
        self.workers: dict[str, PodWorker] = {}
        self.stopping = threading.Event()

    # -- Node and Lease ----------------------------------------------------------------------------
    def _node_status(self) -> dict[str, Any]:
        t = _now()
        conds = [
            ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID"),
        ]
        return {
            "capacity": CAPACITY,
            "allocatable": CAPACITY,
            "conditions": [
                {
                    "type": c,
                    "status": s,
                    "reason": r,
                    "message": m,
                    "lastHeartbeatTime": t,
                    "lastTransitionTime": t,
                }
                for c, s, r, m in conds
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "directstream",
                "systemUUID": "directstream",
                "bootID": str(os.getpid()),
                "kernelVersion": os.uname().release,
                "osImage": "directstream test node",
                "containerRuntimeVersion": "directstream://local-processes",
                "kubeletVersion": "v1.36.3",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "directstream-test-node",
        }
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": labels}}
        try:
            self.core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
            self.core.patch_node(self.name, {"metadata": {"labels": labels}})
        self.heartbeat()

    def heartbeat(self) -> None:
        self.core.patch_node_status(self.name, {"status": self._node_status()})

    def renew_lease(self) -> None:
        renew = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew}
        try:
            self.coord.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": spec})
        except ApiException as e:
            if e.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                "spec": spec,
            }
            self.coord.create_namespaced_lease("kube-node-lease", body)

    def _heartbeat_loop(self) -> None:
        beats = 0
        while not self.stopping.wait(RENEW_EVERY):
            try:
                self.renew_lease()
                beats += 1
                if beats % 4 == 0:  # the node status itself, less often, as the kubelet does
                    self.heartbeat()
            except Exception as e:  # an API hiccup must not stop the heartbeat
                log.warning("heartbeat: %s", e)

    # -- pods --------------------------------------------------------------------------------------
    def _sync(self, pod: Any) -> None:
        uid = pod.metadata.uid
        w = self.workers.get(uid)
        if w is None or not w.is_alive():
            if w is not None and w.uid == uid and (w.gone or pod.metadata.deletion_timestamp is not None):
                return  # finished with this pod already
            w = PodWorker(self.core, pod, self.state, self.api_host, self.api_port)
            self.workers[uid] = w
            w.start()
        else:
            w.update(pod)

    def _forget(self, uid: str) -> None:
        w = self.workers.get(uid)
        if w is not None:
            w.deleted()

    def watch_pods(self) -> None:
        selector = f"spec.nodeName={self.name}"
        while not self.stopping.is_set():
            try:
                pods = self.core.list_pod_for_all_namespaces(field_selector=selector)
                seen = {p.metadata.uid for p in pods.items}
                for p in pods.items:
                    self._sync(p)
                for uid in list(self.workers):
                    if uid not in seen:
                        self._forget(uid)
                self._reap_workers()
                rv = pods.metadata.resource_version
                while not self.stopping.is_set():
                    w = watch.Watch()
                    for ev in w.stream(
                        self.core.list_pod_for_all_namespaces,
                        field_selector=selector,
                        resource_version=rv,
                        timeout_seconds=30,
                        allow_watch_bookmarks=True,
                    ):
                        obj = ev["object"]
                        if ev["type"] == "BOOKMARK":  # only a resourceVersion, delivered as a plain dict
                            meta = obj.get("metadata", {}) if isinstance(obj, dict) else {}
                            rv = meta.get("resourceVersion") or rv
                            continue
                        rv = obj.metadata.resource_version or rv
                        if ev["type"] in ("ADDED", "MODIFIED"):
                            self._sync(obj)
                        elif ev["type"] == "DELETED":
                            self._forget(obj.metadata.uid)
                        if self.stopping.is_set():
                            w.stop()
                    self._reap_workers()
            except ApiException as e:
                # 410 Gone: our resourceVersion is too old; re-list. Anything else: back off, re-list.
                if e.status != 410:
                    log.warning("pod watch: %s %s", e.status, e.reason)
                    self.stopping.wait(1)
            except Exception as e:
                log.warning("pod watch: %s", e)
                self.stopping.wait(1)

    def _reap_workers(self) -> None:
        for uid, w in list(self.workers.items()):
            if not w.is_alive() and (w.gone or w.shutting_down):
                del self.workers[uid]

    def kill_leftovers(self) -> None:
        """Processes of a previous node process that died without stopping its pods."""
        run = self.state / "run"
        for f in run.glob("*.pid") if run.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                os.killpg(int(f.read_text()), signal.SIGKILL)
            f.unlink(missing_ok=True)

    def stop(self) -> None:
        self.stopping.set()
        for w in list(self.workers.values()):
            w.shutdown()
        for w in list(self.workers.values()):
            w.join(timeout=15)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--state", required=True, type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    args.state.mkdir(parents=True, exist_ok=True)
    api = config.new_client_from_config(config_file=args.kubeconfig)
    api.configuration.connection_pool_maxsize = 64
    node = TestNode(api, args.name, args.state.resolve())
    node.kill_leftovers()
    signal.signal(signal.SIGTERM, lambda *_: node.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: node.stopping.set())
    while True:
        try:
            node.register()
            node.renew_lease()
            break
        except Exception as e:
            log.warning("registering node: %s", e)
            if node.stopping.wait(1):
                return
    threading.Thread(target=node._heartbeat_loop, name="heartbeat", daemon=True).start()
    threading.Thread(target=node.watch_pods, name="pod-watch", daemon=True).start()
    log.info("node %s ready", args.name)
    node.stopping.wait()
    node.stop()
    log.info("node %s stopped", args.name)


if __name__ == "__main__":
    main()
