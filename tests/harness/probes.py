"""Startup, readiness and liveness probes (exec, httpGet, tcpSocket) as the kubelet runs them."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


def _port(spec: Any, port: Any) -> int:
    """A probe port may name one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in spec.ports or []:
        if p.name == port:
            return int(p.container_port)
    raise ValueError(f"no container port named {port!r}")


def run_probe(probe: Any, spec: Any, env: dict[str, str], pid: int) -> bool:
    timeout = float(probe.timeout_seconds or 1)
    try:
        action = getattr(probe, "var_exec", None)  # the client's name for `exec`
        if action is not None:
            # Inside the container's mount namespace, as `kubectl exec` would be.
            argv = ["nsenter", f"--target={pid}", "--mount", "--", *action.command]
            return (
                subprocess.run(argv, check=False, env=env, capture_output=True, timeout=timeout).returncode
                == 0
            )
        if probe.http_get is not None:
            g = probe.http_get
            scheme = (g.scheme or "HTTP").lower()
            url = f"{scheme}://{g.host or '127.0.0.1'}:{_port(spec, g.port)}{g.path or '/'}"
            headers = {h.name: h.value for h in g.http_headers or []}
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
                return bool(200 <= r.status < 400)
        if probe.tcp_socket is not None:
            with socket.create_connection(
                (probe.tcp_socket.host or "127.0.0.1", _port(spec, probe.tcp_socket.port)), timeout=timeout
            ):
                return True
    except (OSError, urllib.error.URLError, subprocess.TimeoutExpired, ValueError):
        return False
    return True


@dataclass
class _Probe:
    spec: Any
    succeeded: bool = False
    failures: int = 0
    successes: int = 0
    next_at: float = 0.0

    def due(self, started: float, now: float) -> bool:
        if now < started + float(self.spec.initial_delay_seconds or 0) or now < self.next_at:
            return False
        self.next_at = now + float(self.spec.period_seconds or 10)
        return True

    def record(self, ok: bool) -> None:
        if ok:
            self.failures, self.successes = 0, self.successes + 1
            if self.successes >= int(self.spec.success_threshold or 1):
                self.succeeded = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= int(self.spec.failure_threshold or 3):
                self.succeeded = False


class ProbeSet:
    """A running container's probes; tick() is called every pod-worker round and returns readiness."""

    def __init__(self, spec: Any, env: dict[str, str], pid: int) -> None:
        self.spec, self.env, self.pid = spec, env, pid
        self.started = time.monotonic()
        self.startup = _Probe(spec.startup_probe) if spec.startup_probe else None
        self.readiness = _Probe(spec.readiness_probe) if spec.readiness_probe else None
        self.liveness = _Probe(spec.liveness_probe) if spec.liveness_probe else None
        self.liveness_failed = False

    def _check(self, p: _Probe, now: float) -> None:
        if p.due(self.started, now):
            p.record(run_probe(p.spec, self.spec, self.env, self.pid))

    def tick(self) -> bool:
        now = time.monotonic()
        if self.startup is not None and not self.startup.succeeded:
            self._check(self.startup, now)
            if self.startup.failures >= int(self.startup.spec.failure_threshold or 3):
                self.liveness_failed = True
            return False
        if self.liveness is not None:
            self._check(self.liveness, now)
            self.liveness_failed = self.liveness.failures >= int(self.liveness.spec.failure_threshold or 3)
        if self.readiness is None:
            return True
        self._check(self.readiness, now)
        return self.readiness.succeeded
