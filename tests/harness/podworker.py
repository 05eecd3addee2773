"""The kubelet's per-pod loop on the test node: start containers, watch them, report status, tear down."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness.containers import ContainerRun, Exit, now
from tests.harness.podenv import EnvError, ObjectCache, container_env
from tests.harness.podvolumes import container_mounts, materialise
from tests.harness.probes import ProbeSet

log = logging.getLogger("node.pod")
TICK = 0.2
BACKOFF_START, BACKOFF_MAX = 1.0, 30.0
# The conditions the kubelet owns; any other condition in status (PodScheduled, DisruptionTarget...) is kept.
OWN_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


class PodWorker(threading.Thread):
    def __init__(self, core: client.CoreV1Api, pod: Any, state: Path, api_host: str, api_port: int) -> None:
        super().__init__(name=f"pod-{pod.metadata.namespace}/{pod.metadata.name}", daemon=True)
        self.core = core
        self.uid = str(pod.metadata.uid)
        self.ns = str(pod.metadata.namespace)
        self.pod_name = str(pod.metadata.name)
        self.state = state
        self.api = (api_host, api_port)
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.gone = False  # the object was deleted from the API
        self.shutting_down = False  # the node stops: kill, report nothing
        self.pod_dir = state / "pods" / self.uid
        self.start_time = ""
        self.phase = "Pending"
        self.reason = ""
        self.message = ""
        self.initialized = False
        self.init_runs = [self._run_for(c) for c in pod.spec.init_containers or []]
        self.runs = [self._run_for(c) for c in pod.spec.containers]
        self._last_report: dict[str, Any] | None = None
        self.frozen = False  # never report status again

    def _run_for(self, spec: Any) -> ContainerRun:
        return ContainerRun(
            spec=spec,
            workdir=self.pod_dir / "containers" / spec.name,
            log_path=self.state / "logs" / self.ns / self.pod_name / f"{spec.name}.log",
            pid_path=self.state / "run" / f"{self.uid}_{spec.name}.pid",
        )

    # -- called from the watch thread ---------------------------------------------------------------
    def update(self, pod: Any) -> None:
        with self._lock:
            self._pod = pod
        self._wake.set()

    def deleted(self) -> None:
        self.gone = True
        self._wake.set()

    def shutdown(self) -> None:
        self.shutting_down = True
        self._wake.set()

    @property
    def pod(self) -> Any:
        with self._lock:
            return self._pod

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("pod worker %s/%s failed", self.ns, self.pod_name)
        finally:
            for r in self.init_runs + self.runs:
                r.kill(0)
            shutil.rmtree(self.pod_dir, ignore_errors=True)

    def _loop(self) -> None:
        pod = self.pod
        st = pod.status
        self.start_time = _ts(st.start_time) if st and st.start_time else now()
        if st and st.phase in ("Succeeded", "Failed"):
            # Finished under an earlier node process: its final status stands; only deletion is left.
            self.phase = st.phase
            self.frozen = True
        elif st and (st.container_statuses or st.init_container_statuses):
            self._lost_containers(st)
        prepared: tuple[ObjectCache, dict[str, Path]] | None = None
        while True:
            # A finished pod only waits for its deletion, which arrives as a watch event (wake).
            self._wake.wait(TICK if self.phase not in ("Succeeded", "Failed") else 5.0)
            self._wake.clear()
            pod = self.pod
            if self.shutting_down:
                return
            if self.gone:
                self._kill_all(0)
                return
            if pod.metadata.deletion_timestamp is not None:
                self._terminate(pod)
                return
            if self.phase in ("Succeeded", "Failed"):
                self._report(pod)
                continue
            if self._deadline_exceeded(pod):
                self._kill_all(float(pod.spec.termination_grace_period_seconds or 30))
                self._settle_exits()
                self.phase, self.reason = "Failed", "DeadlineExceeded"
                self.message = "Pod was active on the node longer than the specified deadline"
                self._report(pod)
                continue
            if prepared is None:
                try:
                    objects = ObjectCache(self.core, self.ns)
                    prepared = (objects, materialise(self.core, pod, objects, self.pod_dir / "volumes"))
                except (EnvError, ApiException) as e:
                    # Forbidden right after binding: the Node authorizer's graph may lag; retry as kubelet.
                    for r in self.init_runs + self.runs:
                        r.waiting = ("ContainerCreating", _short(e))
                    self._report(pod)
                    continue
            self._step(pod, *prepared)
            self._report(pod)

    def _step(self, pod: Any, objects: ObjectCache, volumes: dict[str, Path]) -> None:
        policy = pod.spec.restart_policy or "Always"
        grace = float(pod.spec.termination_grace_period_seconds or 30)
        if not self.initialized:
            for r in self.init_runs:
                exit_ = r.reap()
                if r.last_exit is not None and r.last_exit.code == 0 and not r.running:
                    r.waiting = None
                    continue
                if r.running:
                    return
                if exit_ is not None:
                    if policy == "Never":
                        r.waiting, self.phase = None, "Failed"
                        return
                    self._back_off(r)
                if time.monotonic() >= r.not_before:
                    r.restart_count += 1 if r.last_exit is not None else 0
                    self._start(pod, r, objects, volumes)
                return  # init containers run one at a time, in order
            self.initialized = True
        for r in self.runs:
            exit_ = r.reap()
            if exit_ is not None:
                if policy == "Always" or (policy == "OnFailure" and exit_.code != 0):
                    self._back_off(r)
                else:
                    r.waiting = None  # terminated for good
            if r.running:
                probes = r.probes.get("set")
                r.ready = probes.tick() if probes is not None else True
                if probes is not None and probes.liveness_failed:
                    log.info("liveness probe of %s/%s %s failed: restarting", self.ns, self.pod_name, r.name)
                    r.kill(grace)
                continue
            if r.waiting is None or time.monotonic() < r.not_before:
                continue
            r.restart_count += 1 if r.last_exit is not None else 0
            self._start(pod, r, objects, volumes)
        if self.phase == "Pending" and any(r.running or r.last_exit for r in self.runs):
            self.phase = "Running"
        if all(r.proc is None and r.last_exit is not None and r.waiting is None for r in self.runs):
            codes = [r.last_exit.code for r in self.runs if r.last_exit is not None]
            self.phase = "Succeeded" if all(c == 0 for c in codes) else "Failed"

    @staticmethod
    def _back_off(r: ContainerRun) -> None:
        delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** min(r.restart_count, 8))
        r.not_before = time.monotonic() + delay
        r.waiting = ("CrashLoopBackOff", f"back-off {delay:.0f}s restarting failed container={r.name}")

    def _start(self, pod: Any, r: ContainerRun, objects: ObjectCache, volumes: dict[str, Path]) -> None:
        try:
            env = container_env(pod, r.spec, objects, self._base_env(pod))
            mounts = container_mounts(r.spec, volumes)
            r.start(env, mounts, self.pod_dir / "cwd")
            r.probes["set"] = ProbeSet(r.spec, env, r.proc.pid if r.proc else 0)
        except (EnvError, ApiException, ValueError, OSError) as e:
            r.waiting = ("CreateContainerConfigError", _short(e))
            r.not_before = time.monotonic() + 2

    def _base_env(self, pod: Any) -> dict[str, str]:
        """What an image and the kubelet's service-link variables would provide."""
        host, port = self.api
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": "/root",
            "HOSTNAME": pod.spec.hostname or pod.metadata.name,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            "KUBERNETES_PORT_443_TCP": f"tcp://{host}:{port}",
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_PORT": str(port),
            "KUBERNETES_PORT_443_TCP_ADDR": host,
        }

    def _lost_containers(self, st: Any) -> None:
        """A previous node process started these containers; their processes are gone."""
        lost = Exit(
            137,
            "ContainerStatusUnknown",
            "The container could not be located when the pod was terminated",
            self.start_time,
            now(),
        )
        for r in self.init_runs + self.runs:
            prev = next(
                (
                    c
                    for c in (st.container_statuses or []) + (st.init_container_statuses or [])
                    if c.name == r.name
                ),
                None,
            )
            if prev is not None and prev.state is not None and prev.state.waiting is None:
                r.last_exit, r.restart_count = lost, prev.restart_count or 0
                r.waiting = (
                    ("ContainerStatusUnknown", "") if self.pod.spec.restart_policy != "Never" else None
                )

    def _deadline_exceeded(self, pod: Any) -> bool:
        ads = pod.spec.active_deadline_seconds
        if ads is None or not self.start_time:
            return False
        started = datetime.strptime(self.start_time, "%Y-%m-%dT%H:%M:%SZ").timestamp()
        return bool(time.time() - started >= ads)

    def _kill_all(self, grace: float) -> None:
        runs = [r for r in self.init_runs + self.runs if r.running]
        threads = [threading.Thread(target=r.kill, args=(grace,)) for r in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _settle_exits(self) -> None:
        for r in self.init_runs + self.runs:
            r.reap()
            r.waiting = None if r.last_exit is not None else r.waiting

    def _terminate(self, pod: Any) -> None:
        """Graceful deletion: stop containers, report the final status, then remove the object."""
        grace = pod.metadata.deletion_grace_period_seconds
        self._kill_all(float(grace if grace is not None else pod.spec.termination_grace_period_seconds or 30))
        self._settle_exits()
        if self.phase not in ("Succeeded", "Failed"):
            codes = [r.last_exit.code for r in self.runs if r.last_exit is not None]
            ok = codes and all(c == 0 for c in codes) and len(codes) == len(self.runs)
            self.phase = "Succeeded" if ok and pod.spec.restart_policy != "Always" else "Failed"
            self._report(pod)
        try:
            self.core.delete_namespaced_pod(
                self.pod_name,
                self.ns,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=self.uid)
                ),
            )
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("deleting %s/%s: %s", self.ns, self.pod_name, _short(e))

    # -- status ----------------------------------------------------------------------------------------
    def _report(self, pod: Any) -> None:
        if self.frozen:
            return
        status = self._status(pod)
        if status == self._last_report:
            return
        for _ in range(5):
            body = {"metadata": {"resourceVersion": pod.metadata.resource_version}, "status": status}
            try:
                updated = self.core.patch_namespaced_pod_status(
                    self.pod_name, self.ns, body, _content_type="application/merge-patch+json"
                )
                self._last_report = status
                with self._lock:  # the next patch needs the new resourceVersion, unless a newer event came
                    if self._pod.metadata.resource_version == pod.metadata.resource_version:
                        self._pod = updated
                return
            except ApiException as e:
                if e.status == 404:
                    self.gone = True
                    return
                if e.status != 409:
                    log.warning("status of %s/%s: %s", self.ns, self.pod_name, _short(e))
                    self._last_report = status  # retry only once something changes
                    return
                pod = self.core.read_namespaced_pod(self.pod_name, self.ns)
                self.update(pod)
                status = self._status(pod)

    def _status(self, pod: Any) -> dict[str, Any]:
        t = now()
        running_or_done = self.phase != "Pending" or any(r.running for r in self.runs)
        ready = self.phase == "Running" and all(r.ready and r.running for r in self.runs)
        own = {
            "PodReadyToStartContainers": True,
            "Initialized": self.initialized or not self.init_runs,
            "ContainersReady": ready,
            "Ready": ready,
        }
        old = {c.type: c for c in (pod.status.conditions if pod.status else None) or []}
        conditions: list[dict[str, Any]] = []
        for c in old.values():
            if c.type not in OWN_CONDITIONS:
                conditions.append(client.ApiClient().sanitize_for_serialization(c))
        for typ, val in own.items():
            prev = old.get(typ)
            s = "True" if val else "False"
            since = (
                _ts(prev.last_transition_time)
                if prev and prev.status == s and prev.last_transition_time
                else t
            )
            cond = {"type": typ, "status": s, "lastProbeTime": None, "lastTransitionTime": since}
            if not val and typ in ("ContainersReady", "Ready"):
                cond["reason"] = (
                    "PodCompleted" if self.phase in ("Succeeded", "Failed") else "ContainersNotReady"
                )
            conditions.append(cond)
        st: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": conditions,
            "containerStatuses": [r.status() for r in self.runs],
            "reason": self.reason or None,
            "message": self.message or None,
        }
        if self.init_runs:
            st["initContainerStatuses"] = [r.status() for r in self.init_runs]
        if not running_or_done:
            st.pop("podIP"), st.pop("podIPs")
        return st


def _ts(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _short(e: Exception) -> str:
    if isinstance(e, ApiException):
        return f"{e.status} {e.reason}: {(e.body or '')[:300]!s}"
    return str(e)[:300]
