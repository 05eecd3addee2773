"""Pod volumes materialised as host directories, and the mount-namespace launcher that binds them.

Supported: projected (serviceAccountToken, configMap, secret, downwardAPI), configMap, secret,
downwardAPI, emptyDir, hostPath, and persistentVolumeClaim bound to a hostPath PersistentVolume. The
ServiceAccount admission plugin turns the pod's token into a projected volume mounted at
/var/run/secrets/kubernetes.io/serviceaccount, so handling projected volumes is all the token mount needs.

Pods run as host processes without an image, so an emptyDir mounted at /tmp (the scratch space of a
container with a read-only root filesystem) is not bound over the host's /tmp: that would hide the
checkout, the virtualenv and the test's files, which a real container does not see anyway.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.harness.podenv import EnvError, ObjectCache, field_value


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool


def _write_items(dest: Path, data: dict[str, bytes], items: Any, optional: bool | None, what: str) -> None:
    if items:
        for it in items:
            if it.key not in data:
                if optional:
                    continue
                raise EnvError(f"configmap/secret {what}: key {it.key} not found")
            _write(dest / it.path, data[it.key])
    else:
        for k, v in data.items():
            _write(dest / k, v)


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def _service_account_token(core: client.CoreV1Api, pod: Any, src: Any) -> bytes:
    spec = client.V1TokenRequestSpec(
        audiences=[src.audience] if src.audience else [],
        expiration_seconds=src.expiration_seconds or 3607,
        bound_object_ref=client.V1BoundObjectReference(
            kind="Pod", api_version="v1", name=pod.metadata.name, uid=pod.metadata.uid
        ),
    )
    resp = core.create_namespaced_service_account_token(
        pod.spec.service_account_name or "default",
        pod.metadata.namespace,
        client.AuthenticationV1TokenRequest(spec=spec),
    )
    return str(resp.status.token).encode()


def _downward(dest: Path, pod: Any, items: Any) -> None:
    for it in items or []:
        if it.field_ref is not None:
            _write(dest / it.path, field_value(pod, it.field_ref.field_path).encode())


def _source(objects: ObjectCache, kind: str, name: str, optional: bool | None) -> dict[str, bytes]:
    data = objects.raw(kind, name)
    if data is None:
        if optional:
            return {}
        raise EnvError(f'{kind} "{name}" not found')
    return data


def _claimed_host_path(core: client.CoreV1Api, namespace: str, claim_name: str) -> Path:
    """The host directory of the hostPath PersistentVolume bound to the claim, as the kubelet mounts it."""
    claim = core.read_namespaced_persistent_volume_claim(claim_name, namespace)
    if not claim.spec.volume_name or (claim.status and claim.status.phase != "Bound"):
        raise EnvError(f'persistentvolumeclaim "{claim_name}" is not bound')
    volume = core.read_persistent_volume(claim.spec.volume_name)
    if volume.spec.host_path is None:
        raise EnvError(f"persistentvolume {volume.metadata.name}: only hostPath volumes are supported here")
    return Path(volume.spec.host_path.path)


def materialise(core: client.CoreV1Api, pod: Any, objects: ObjectCache, root: Path) -> dict[str, Path]:
    """Each volume's host directory (or host path), by volume name."""
    paths: dict[str, Path] = {}
    for vol in pod.spec.volumes or []:
        dest = root / vol.name
        dest.mkdir(parents=True, exist_ok=True)
        if vol.projected is not None:
            for src in vol.projected.sources or []:
                if src.service_account_token is not None:
                    sat = src.service_account_token
                    _write(dest / sat.path, _service_account_token(core, pod, sat))
                elif src.config_map is not None:
                    cm = src.config_map
                    data = _source(objects, "configmap", cm.name, cm.optional)
                    _write_items(dest, data, cm.items, cm.optional, cm.name)
                elif src.secret is not None:
                    s = src.secret
                    _write_items(
                        dest, _source(objects, "secret", s.name, s.optional), s.items, s.optional, s.name
                    )
                elif src.downward_api is not None:
                    _downward(dest, pod, src.downward_api.items)
        elif vol.config_map is not None:
            cm = vol.config_map
            _write_items(
                dest, _source(objects, "configmap", cm.name, cm.optional), cm.items, cm.optional, cm.name
            )
        elif vol.secret is not None:
            s = vol.secret
            data = _source(objects, "secret", s.secret_name, s.optional)
            _write_items(dest, data, s.items, s.optional, s.secret_name)
        elif vol.downward_api is not None:
            _downward(dest, pod, vol.downward_api.items)
        elif vol.persistent_volume_claim is not None:
            dest = _claimed_host_path(core, pod.metadata.namespace, vol.persistent_volume_claim.claim_name)
        elif vol.host_path is not None:
            host = Path(vol.host_path.path)
            if vol.host_path.type in ("DirectoryOrCreate", None, "") and not host.exists():
                host.mkdir(parents=True, exist_ok=True)
            dest = host
        # emptyDir and anything unsupported: an empty directory private to the pod.
        paths[vol.name] = dest
    return paths


def container_mounts(container: Any, volumes: dict[str, Path]) -> list[Mount]:
    mounts = []
    for vm in container.volume_mounts or []:
        if vm.name not in volumes:
            raise EnvError(f"volumeMount {vm.name!r} names no volume of the pod")
        if vm.mount_path.rstrip("/") == "/tmp":
            continue  # see the module docstring: the host's /tmp stays
        src = volumes[vm.name] / vm.sub_path if vm.sub_path else volumes[vm.name]
        if vm.sub_path and not src.exists():
            src.mkdir(parents=True)
        mounts.append(Mount(src, vm.mount_path, bool(vm.read_only)))
    return mounts


# Sources are first bound here, in a namespace-private tmpfs: a mount target may shadow the host path of
# another mount's source (an emptyDir at /work hides a node state dir under /work).
STAGE = "/run/directstream-stage"


def launcher(mounts: list[Mount], workdir: str, argv: list[str]) -> list[str]:
    """argv run in a private mount namespace with the mounts bound in, as a container runtime would."""
    stage = shlex.quote(STAGE)
    lines = ["set -e", f"mkdir -p {stage}", f"mount -t tmpfs directstream-stage {stage}"]
    for i, m in enumerate(mounts):
        lines.append(f"mkdir {stage}/{i}" if m.source.is_dir() else f": > {stage}/{i}")
        lines.append(f"mount --bind {shlex.quote(str(m.source))} {stage}/{i}")
    # Parents before children, so /a is mounted before /a/b.
    for i, m in sorted(enumerate(mounts), key=lambda im: len(Path(im[1].target).parts)):
        t = shlex.quote(m.target)
        if m.source.is_dir():
            lines.append(f"mkdir -p {t}")
        else:
            # Placeholder in the host's tree when missing; the bind itself exists only in this namespace.
            lines.append(f"[ -e {t} ] || {{ mkdir -p {shlex.quote(str(Path(m.target).parent))}; : > {t}; }}")
        lines.append(f"mount --bind {stage}/{i} {t}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {t}")
    lines.append(f"umount -l {stage}")
    lines.append(f"mkdir -p {shlex.quote(workdir)} && cd {shlex.quote(workdir)}")
    lines.append('exec "$@"')
    script = "\n".join(lines)
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", *argv]
