"""Readers for the Kubernetes-shaped fields of ``spec.executors`` (cluster only; local mode ignores them).

They check what the operator relies on and what would otherwise only fail when the Job is created:
field names (with a hint when a container setting is written at pod level or the other way round),
volume names and sources, that every mount names a volume, label and annotation keys, and the keys
directstream sets itself. Deeper Kubernetes types (a PVC's fields, affinity terms) are checked by the
CRD's schema and the API server. The field sets below equal the CRD's (``tests/unit/test_crd.py``) and
core/v1's (``tests/integration/test_crd_cluster.py`` against the API server's OpenAPI).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any, Literal

from directstream.operator.core.spec_fields import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    Section,
    check_int,
    closest_name,
    describe,
    join,
)

__all__ = [
    "AFFINITY_FIELDS",
    "CONTAINER_SECURITY_FIELDS",
    "IMAGE_PULL_POLICIES",
    "MAX_ID",
    "MAX_POD_METADATA",
    "MAX_VOLUMES",
    "POD_SECURITY_FIELDS",
    "RESERVED_ANNOTATION_PREFIXES",
    "RESERVED_LABEL_KEYS",
    "RESERVED_LABEL_PREFIXES",
    "SCRATCH_VOLUME",
    "VOLUME_MOUNT_FIELDS",
    "VOLUME_SOURCES",
    "WORK_UNITS_VOLUME",
    "ImagePullPolicy",
    "read_affinity",
    "read_image_pull_secrets",
    "read_pod_metadata",
    "read_priority_class",
    "read_pull_policy",
    "read_security_context",
    "read_volume_mounts",
    "read_volumes",
]

ImagePullPolicy = Literal["Always", "IfNotPresent", "Never"]
IMAGE_PULL_POLICIES: tuple[ImagePullPolicy, ...] = ("Always", "IfNotPresent", "Never")

# The emptyDir directstream mounts for scratch (read-only root filesystem); no user volume may take its name.
SCRATCH_VOLUME = "directstream-tmp"
WORK_UNITS_VOLUME = "directstream-work-units"  # the attempt's units ConfigMap (core/manifests.py)
MAX_VOLUMES = 64  # per list; bounds the cost of the CRD's CEL rules
MAX_POD_METADATA = 64  # labels / annotations each

# core/v1 PodSecurityContext and SecurityContext (Kubernetes 1.36), with the kind of value each holds.
_INT, _BOOL, _STR, _MAP, _LIST = "int", "bool", "str", "map", "list"
_SHARED_SECURITY = {
    "appArmorProfile": _MAP,
    "runAsGroup": _INT,
    "runAsNonRoot": _BOOL,
    "runAsUser": _INT,
    "seLinuxOptions": _MAP,
    "seccompProfile": _MAP,
    "windowsOptions": _MAP,
}
_POD_SECURITY = {
    **_SHARED_SECURITY,
    "fsGroup": _INT,
    "fsGroupChangePolicy": _STR,
    "seLinuxChangePolicy": _STR,
    "supplementalGroups": _LIST,
    "supplementalGroupsPolicy": _STR,
    "sysctls": _LIST,
}
_CONTAINER_SECURITY = {
    **_SHARED_SECURITY,
    "allowPrivilegeEscalation": _BOOL,
    "capabilities": _MAP,
    "privileged": _BOOL,
    "procMount": _STR,
    "readOnlyRootFilesystem": _BOOL,
}
POD_SECURITY_FIELDS = frozenset(_POD_SECURITY)
CONTAINER_SECURITY_FIELDS = frozenset(_CONTAINER_SECURITY)
MAX_ID = 2**31 - 1  # Kubernetes' bound for user and group ids
_KIND_NAMES = {_INT: "an integer", _BOOL: "a boolean", _STR: "a string", _MAP: "a mapping", _LIST: "a list"}

# Every source a core/v1 Volume may have (exactly one per volume).
VOLUME_SOURCES = frozenset(
    {
        "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "configMap", "csi",
        "downwardAPI", "emptyDir", "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk",
        "gitRepo", "glusterfs", "hostPath", "image", "iscsi", "nfs", "persistentVolumeClaim",
        "photonPersistentDisk", "portworxVolume", "projected", "quobyte", "rbd", "scaleIO", "secret",
        "storageos", "vsphereVolume",
    }
)  # fmt: skip
VOLUME_MOUNT_FIELDS = frozenset(
    {"name", "mountPath", "subPath", "subPathExpr", "readOnly", "recursiveReadOnly", "mountPropagation"}
)
AFFINITY_FIELDS: tuple[str, ...] = ("nodeAffinity", "podAffinity", "podAntiAffinity")

# Labels directstream puts on executor pods (their selectors find the pods by them) and the Job
# controller's own; a user value would hide the pods from the operator or from their Job.
RESERVED_LABEL_KEYS = frozenset(
    {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "app.kubernetes.io/managed-by",
        "controller-uid",
        "job-name",
    }
)
RESERVED_LABEL_PREFIXES = ("directstream.io/", "batch.kubernetes.io/")
RESERVED_ANNOTATION_PREFIXES = ("directstream.io/", "batch.kubernetes.io/")

_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


def _unknown(s: Section, path: str, key: str, known: list[str], hint: str = "") -> None:
    guess = closest_name(key, known)
    suggestion = hint or (f"did you mean {guess!r}?" if guess else f"known fields: {', '.join(known)}")
    s.problems.add(path, f"unknown field {key!r}; {suggestion}")


def _kind_ok(value: object, kind: str) -> bool:
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if kind == _MAP:
        return isinstance(value, Mapping)
    return isinstance(value, list | tuple)


def read_security_context(s: Section, key: str, *, pod: bool) -> dict[str, Any]:
    """``securityContext`` (a PodSecurityContext, ``pod``) or ``containerSecurityContext``."""
    fields, other = (_POD_SECURITY, _CONTAINER_SECURITY) if pod else (_CONTAINER_SECURITY, _POD_SECURITY)
    other_key = "containerSecurityContext" if pod else "securityContext"
    other_kind = "a container setting" if pod else "a pod setting"
    context = s.mapping(key)
    path = s.at(key)
    checked: dict[str, Any] = {}
    for name, value in context.items():
        field_path = join(path, name)
        if name not in fields:
            hint = f"{name} is {other_kind}: put it under spec.executors.{other_key}" if name in other else ""
            _unknown(s, field_path, name, sorted(fields), hint)
        elif not _kind_ok(value, fields[name]):
            s.problems.add(field_path, f"expected {_KIND_NAMES[fields[name]]}, got {describe(value)}")
        elif (
            fields[name] != _INT
            or check_int(value, field_path, s.problems, minimum=0, maximum=MAX_ID) is not None
        ):
            checked[name] = value
    return checked


def read_volumes(s: Section) -> tuple[dict[str, Any], ...]:
    """``volumes``: core/v1 Volumes, each a ``name`` and exactly one source."""
    volumes = s.mapping_list("volumes")
    path = s.at("volumes")
    if len(volumes) > MAX_VOLUMES:
        s.problems.add(path, f"at most {MAX_VOLUMES} volumes, got {len(volumes)}")
    seen: set[str] = set()
    for index, volume in enumerate(volumes):
        item = join(path, index)
        name = volume.get("name")
        if not isinstance(name, str) or not DNS_LABEL.fullmatch(name):
            s.problems.add(
                join(item, "name"),
                f"every volume needs a name of at most 63 of a-z 0-9 '-', got {describe(name)}",
            )
        elif name in seen:
            s.problems.add(join(item, "name"), f"volume {name!r} is listed twice")
        elif name == SCRATCH_VOLUME:
            s.problems.add(join(item, "name"), f"{SCRATCH_VOLUME!r} is the scratch volume directstream adds")
        elif name == WORK_UNITS_VOLUME:
            s.problems.add(
                join(item, "name"), f"{WORK_UNITS_VOLUME!r} is the work units volume directstream adds"
            )
        else:
            seen.add(name)
        sources = [key for key in volume if key != "name"]
        for key in sources:
            if key not in VOLUME_SOURCES:
                _unknown(s, join(item, key), key, sorted(VOLUME_SOURCES))
            elif not isinstance(volume[key], Mapping):
                s.problems.add(join(item, key), f"expected a mapping, got {describe(volume[key])}")
        known = [key for key in sources if key in VOLUME_SOURCES]
        if len(known) != 1:
            s.problems.add(
                item,
                "give exactly one volume source (persistentVolumeClaim, emptyDir, nfs, csi, ...), got "
                + (", ".join(known) if known else "none"),
            )
        claim = volume.get("persistentVolumeClaim")
        if isinstance(claim, Mapping):
            claim_name = claim.get("claimName")
            if not isinstance(claim_name, str) or not DNS_SUBDOMAIN.fullmatch(claim_name):
                s.problems.add(
                    join(join(item, "persistentVolumeClaim"), "claimName"),
                    f"required: the name of a PersistentVolumeClaim in the stream's namespace, "
                    f"got {describe(claim_name)}",
                )
    return volumes


def read_volume_mounts(s: Section, volumes: tuple[Mapping[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    """``volumeMounts`` of the executor: each names one of ``volumes``, at a distinct absolute path."""
    mounts = s.mapping_list("volumeMounts")
    path = s.at("volumeMounts")
    if len(mounts) > MAX_VOLUMES:
        s.problems.add(path, f"at most {MAX_VOLUMES} volume mounts, got {len(mounts)}")
    names = {volume["name"] for volume in volumes if isinstance(volume.get("name"), str)}
    seen: set[str] = set()
    for index, mount in enumerate(mounts):
        item = join(path, index)
        for key in mount:
            if key not in VOLUME_MOUNT_FIELDS:
                _unknown(s, join(item, key), key, sorted(VOLUME_MOUNT_FIELDS))
        name, mount_path = mount.get("name"), mount.get("mountPath")
        if not isinstance(name, str) or not name:
            s.problems.add(join(item, "name"), f"required: the name of a volume, got {describe(name)}")
        elif name not in names:
            s.problems.add(
                join(item, "name"),
                f"names no volume: add {{name: {name}, ...}} to spec.executors.volumes",
            )
        if not isinstance(mount_path, str) or not mount_path.startswith("/"):
            s.problems.add(join(item, "mountPath"), f"expected an absolute path, got {describe(mount_path)}")
        elif posixpath.normpath(mount_path) in seen:
            s.problems.add(join(item, "mountPath"), f"{mount_path} is mounted twice")
        else:
            seen.add(posixpath.normpath(mount_path))
        if "readOnly" in mount and not isinstance(mount["readOnly"], bool):
            s.problems.add(join(item, "readOnly"), f"expected a boolean, got {describe(mount['readOnly'])}")
    return mounts


def _reserved(key: str, exact: frozenset[str], prefixes: tuple[str, ...]) -> bool:
    return key in exact or key.startswith(prefixes)


def read_pod_metadata(s: Section, key: str, *, labels: bool) -> dict[str, str]:
    """``podLabels`` / ``podAnnotations``: string maps, none of the keys directstream sets."""
    values = s.mapping(key, string_values=True)
    path = s.at(key)
    if len(values) > MAX_POD_METADATA:
        s.problems.add(path, f"at most {MAX_POD_METADATA} entries, got {len(values)}")
    exact = RESERVED_LABEL_KEYS if labels else frozenset()
    prefixes = RESERVED_LABEL_PREFIXES if labels else RESERVED_ANNOTATION_PREFIXES
    checked: dict[str, str] = {}
    for name, value in values.items():
        entry = join(path, name)
        prefix, slash, last = name.rpartition("/")
        if not _QUALIFIED_NAME.fullmatch(last) or (slash and not DNS_SUBDOMAIN.fullmatch(prefix)):
            s.problems.add(
                entry, f"{name!r} is not a valid key: [prefix/]name, name at most 63 of A-Z a-z 0-9 - _ ."
            )
        elif _reserved(name, exact, prefixes):
            s.problems.add(
                entry,
                f"{name} is set by directstream or the Job controller "
                f"(reserved: {', '.join(sorted(exact)) + ', ' if exact else ''}{', '.join(prefixes)}*)",
            )
        elif labels and not _LABEL_VALUE.fullmatch(value):
            s.problems.add(entry, f"{value!r} is not a valid label value (at most 63 of A-Z a-z 0-9 - _ .)")
        else:
            checked[name] = value
    return checked


def read_image_pull_secrets(s: Section) -> tuple[str, ...]:
    """``imagePullSecrets``: ``[{name: ...}]``, the Secrets' names."""
    names: list[str] = []
    for index, entry in enumerate(s.mapping_list("imagePullSecrets")):
        item = join(s.at("imagePullSecrets"), index)
        for key in entry:
            if key != "name":
                _unknown(s, join(item, key), key, ["name"])
        name = entry.get("name")
        if isinstance(name, str) and DNS_SUBDOMAIN.fullmatch(name):
            names.append(name)
        else:
            s.problems.add(join(item, "name"), f"required: a Secret's name, got {describe(name)}")
    return tuple(names)


def read_affinity(s: Section) -> dict[str, Any]:
    """``affinity``: a core/v1 Affinity (its terms are checked by the CRD and the API server)."""
    affinity = s.mapping("affinity")
    checked: dict[str, Any] = {}
    for key, value in affinity.items():
        if key not in AFFINITY_FIELDS:
            _unknown(s, join(s.at("affinity"), key), key, list(AFFINITY_FIELDS))
        elif not isinstance(value, Mapping):
            s.problems.add(join(s.at("affinity"), key), f"expected a mapping, got {describe(value)}")
        else:
            checked[key] = value
    return checked


def read_pull_policy(s: Section) -> ImagePullPolicy | None:
    """``imagePullPolicy``; ``None`` leaves it to Kubernetes (Always for ``:latest``, else IfNotPresent)."""
    if not s.has("imagePullPolicy"):
        return None
    return s.choice("imagePullPolicy", "IfNotPresent", IMAGE_PULL_POLICIES)


def read_priority_class(s: Section) -> str:
    """``priorityClassName``: a PriorityClass's name, or empty for the cluster's default priority."""
    name = s.string("priorityClassName", "")
    if name and not DNS_SUBDOMAIN.fullmatch(name):
        s.problems.add(s.at("priorityClassName"), f"{name!r} is not a valid PriorityClass name")
        return ""
    return name
