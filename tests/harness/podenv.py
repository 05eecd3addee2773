"""Container environment as the kubelet resolves it: env, envFrom, fieldRef, $(VAR) expansion."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

# kubelet syntax: $(VAR) is replaced when VAR is defined, $$ escapes a literal $, anything else stays.
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


class EnvError(Exception):
    """A required ConfigMap/Secret/key is missing: the kubelet reports CreateContainerConfigError."""


def expand(value: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _REF.sub(sub, value)


def field_value(pod: Any, path: str) -> str:
    """fieldRef.fieldPath as the downward API resolves it."""
    meta = pod.metadata
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        table = (meta.labels if m.group(1) == "labels" else meta.annotations) or {}
        return str(table.get(m.group(2), ""))
    simple: dict[str, Callable[[], Any]] = {
        "metadata.name": lambda: meta.name,
        "metadata.namespace": lambda: meta.namespace,
        "metadata.uid": lambda: meta.uid,
        "metadata.labels": lambda: _kv_lines(meta.labels),
        "metadata.annotations": lambda: _kv_lines(meta.annotations),
        "spec.nodeName": lambda: pod.spec.node_name,
        "spec.serviceAccountName": lambda: pod.spec.service_account_name,
        "status.hostIP": lambda: "127.0.0.1",
        "status.hostIPs": lambda: "127.0.0.1",
        "status.podIP": lambda: "127.0.0.1",
        "status.podIPs": lambda: "127.0.0.1",
    }
    if path not in simple:
        raise EnvError(f"unsupported fieldPath {path!r}")
    return str(simple[path]() or "")


def _kv_lines(table: Mapping[str, str] | None) -> str:
    return "\n".join(f'{k}="{v}"' for k, v in sorted((table or {}).items()))


class ObjectCache:
    """ConfigMaps and Secrets read once per pod start (the Node authorizer allows only referenced ones)."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self.core = core
        self.namespace = namespace
        self._cache: dict[tuple[str, str], dict[str, str] | None] = {}

    def data(self, kind: str, name: str) -> dict[str, str] | None:
        """The object's data as text, or None when it does not exist."""
        key = (kind, name)
        if key not in self._cache:
            try:
                if kind == "configmap":
                    cm = self.core.read_namespaced_config_map(name, self.namespace)
                    data = dict(cm.data or {})
                    for k, v in (cm.binary_data or {}).items():
                        data[k] = base64.b64decode(v).decode(errors="replace")
                else:
                    sec = self.core.read_namespaced_secret(name, self.namespace)
                    data = {
                        k: base64.b64decode(v).decode(errors="replace") for k, v in (sec.data or {}).items()
                    }
                self._cache[key] = data
            except ApiException as e:
                if e.status != 404:
                    raise
                self._cache[key] = None
        return self._cache[key]

    def raw(self, kind: str, name: str) -> dict[str, bytes] | None:
        """Bytes per key, for volumes (Secrets may hold binary data)."""
        try:
            if kind == "configmap":
                cm = self.core.read_namespaced_config_map(name, self.namespace)
                out = {k: v.encode() for k, v in (cm.data or {}).items()}
                out.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
                return out
            sec = self.core.read_namespaced_secret(name, self.namespace)
            return {k: base64.b64decode(v) for k, v in (sec.data or {}).items()}
        except ApiException as e:
            if e.status == 404:
                return None
            raise


def _key_ref(objects: ObjectCache, kind: str, ref: Any) -> str | None:
    data = objects.data(kind, ref.name)
    if data is None or ref.key not in data:
        if ref.optional:
            return None
        what = "configmap" if kind == "configmap" else "secret"
        missing = (
            f'{what} "{ref.name}" not found' if data is None else f"couldn't find key {ref.key} in {what}"
        )
        raise EnvError(missing)
    return data[ref.key]


def container_env(pod: Any, container: Any, objects: ObjectCache, base: Mapping[str, str]) -> dict[str, str]:
    """base (image-like defaults and service variables) overlaid with envFrom, then env, in kubelet order."""
    env: dict[str, str] = dict(base)
    for src in container.env_from or []:
        ref = src.config_map_ref or src.secret_ref
        kind = "configmap" if src.config_map_ref else "secret"
        data = objects.data(kind, ref.name)
        if data is None:
            if ref.optional:
                continue
            raise EnvError(f'{kind} "{ref.name}" not found')
        for k, v in data.items():
            env[f"{src.prefix or ''}{k}"] = v
    for var in container.env or []:
        value: str | None
        if var.value_from is None:
            value = expand(var.value or "", env)
        elif var.value_from.field_ref is not None:
            value = field_value(pod, var.value_from.field_ref.field_path)
        elif var.value_from.config_map_key_ref is not None:
            value = _key_ref(objects, "configmap", var.value_from.config_map_key_ref)
        elif var.value_from.secret_key_ref is not None:
            value = _key_ref(objects, "secret", var.value_from.secret_key_ref)
        elif var.value_from.resource_field_ref is not None:
            value = _resource_value(container, var.value_from.resource_field_ref)
        else:
            value = None
        if value is not None:
            env[var.name] = value
    return env


def _resource_value(container: Any, ref: Any) -> str:
    kind, _, res = ref.resource.partition(".")
    table = getattr(container.resources, kind, None) if container.resources else None
    value = (table or {}).get(res)
    # Without a limit the kubelet reports node allocatable; any large number serves here.
    return str(value) if value is not None else ("16" if res == "cpu" else str(32 * 1024**3))
