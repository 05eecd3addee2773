"""What an executor pod needs on a real cluster, beyond the work units (pure).

- **Restricted by default.** Pods pass the ``restricted`` Pod Security Standard without any
  securityContext in the stream: non-root with the numeric ids of the executor image
  (``EXECUTOR_UID``), no privilege escalation, every capability dropped, seccomp RuntimeDefault, and a
  read-only root filesystem with an emptyDir at ``/tmp`` (also ``$TMPDIR``) for scratch.
  ``spec.executors.securityContext`` (pod) and ``containerSecurityContext`` override the defaults
  field by field: a field given replaces the default of that name (``capabilities`` as a whole).
- **Durable output.** ``spec.executors.volumes``/``volumeMounts`` reach the pod as written. In
  cluster mode a sink writing files (jsonl, parquet to a directory) must write to a writable
  volume that outlives the pod (``cluster_spec_problems``): the container's own filesystem is
  gone with the pod, and the offsets are committed after it.
- **The default image** is the executor image of the operator's own version (``default_executor_image``).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .spec import FieldProblem, SpecError, StreamSpec, parse_spec
from .spec_pod import SCRATCH_VOLUME

__all__ = [
    "DEFAULT_CONTAINER_SECURITY_CONTEXT",
    "DEFAULT_EXECUTOR_REPOSITORY",
    "DEFAULT_POD_SECURITY_CONTEXT",
    "EXECUTOR_UID",
    "LOCAL_OUTPUT_OPTIONS",
    "SCRATCH_PATH",
    "SCRATCH_SIZE_LIMIT",
    "cluster_spec_problems",
    "container_security_context",
    "default_executor_image",
    "executor_mounts",
    "executor_volumes",
    "parse_cluster_spec",
    "pod_security_context",
    "scratch_env",
]

# The numeric user and group of the executor image (Dockerfile.executor, `make images`): numeric so
# that the kubelet can check runAsNonRoot without the image's /etc/passwd.
EXECUTOR_UID = 10001
# Where release images live; the chart passes its executors.image.repository instead.
DEFAULT_EXECUTOR_REPOSITORY = "directstream/executor"
SCRATCH_PATH = "/tmp"
SCRATCH_SIZE_LIMIT = "1Gi"  # an executor streams records through; it keeps no data of its own

DEFAULT_POD_SECURITY_CONTEXT: Mapping[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": EXECUTOR_UID,
    "runAsGroup": EXECUTOR_UID,
    # Volumes (a PVC for jsonl output) are made writable for the group...
    "fsGroup": EXECUTOR_UID,
    # ...but only re-owned when the volume's root does not match: a new pod per batch would otherwise
    # walk every file of a growing output volume on each mount.
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}
DEFAULT_CONTAINER_SECURITY_CONTEXT: Mapping[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}

# Volume sources that vanish with the pod or cannot be written: no place for results.
_NOT_DURABLE = {
    "emptyDir": "an emptyDir, deleted with each executor pod",
    "ephemeral": "an ephemeral volume, deleted with each executor pod",
    "configMap": "a configMap volume, which is read-only",
    "secret": "a secret volume, which is read-only",
    "downwardAPI": "a downwardAPI volume, which is read-only",
    "projected": "a projected volume, which is read-only",
    "image": "an image volume, which is read-only",
    "gitRepo": "a gitRepo volume, deleted with each executor pod",
}
_TAG_INVALID = re.compile(r"[^A-Za-z0-9_.-]")
# Sinks that may write files into a local directory, and the option naming it (parquet: a url that is
# not s3://).
LOCAL_OUTPUT_OPTIONS = {"jsonl": "directory", "parquet": "url"}


def _merged(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {**{key: _copy(value) for key, value in defaults.items()}, **overrides}


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(item) for item in value]
    return value


def pod_security_context(spec: StreamSpec) -> dict[str, Any]:
    """The executor pods' securityContext: the defaults, overridden by ``spec.executors.securityContext``."""
    return _merged(DEFAULT_POD_SECURITY_CONTEXT, spec.executors.security_context)


def pod_placement(spec: StreamSpec) -> dict[str, Any]:
    """The pod-spec fields ``spec.executors`` sets when given: ServiceAccount, priority class, pull
    secrets, node selector, affinity and tolerations (the same for Job and pool pods)."""
    executors = spec.executors
    fields: dict[str, Any] = {}
    if executors.service_account_name:
        fields["serviceAccountName"] = executors.service_account_name
    if executors.priority_class_name:
        fields["priorityClassName"] = executors.priority_class_name
    if executors.image_pull_secrets:
        fields["imagePullSecrets"] = [{"name": name} for name in executors.image_pull_secrets]
    if executors.node_selector:
        fields["nodeSelector"] = dict(executors.node_selector)
    if executors.affinity:
        fields["affinity"] = dict(executors.affinity)
    if executors.tolerations:
        fields["tolerations"] = [dict(toleration) for toleration in executors.tolerations]
    return fields


def container_security_context(spec: StreamSpec) -> dict[str, Any]:
    """The executor container's: the defaults, overridden by ``spec.executors.containerSecurityContext``."""
    return _merged(DEFAULT_CONTAINER_SECURITY_CONTEXT, spec.executors.container_security_context)


def _user_mounts_scratch(spec: StreamSpec) -> bool:
    """A volume of the user's own at /tmp is the scratch space then (two mounts at one path are invalid)."""
    return any(
        posixpath.normpath(str(mount.get("mountPath", ""))) == SCRATCH_PATH
        for mount in spec.executors.volume_mounts
    )


def executor_volumes(spec: StreamSpec) -> list[dict[str, Any]]:
    """``spec.executors.volumes`` as given, plus the scratch emptyDir."""
    volumes = [_copy(volume) for volume in spec.executors.volumes]
    if not _user_mounts_scratch(spec):
        volumes.append({"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": SCRATCH_SIZE_LIMIT}})
    return volumes


def executor_mounts(spec: StreamSpec) -> list[dict[str, Any]]:
    """``spec.executors.volumeMounts`` as given, plus the scratch mount at /tmp."""
    mounts = [_copy(mount) for mount in spec.executors.volume_mounts]
    if not _user_mounts_scratch(spec):
        mounts.append({"name": SCRATCH_VOLUME, "mountPath": SCRATCH_PATH})
    return mounts


def scratch_env(user_env: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``TMPDIR`` pointing at the scratch mount, unless the stream sets it itself."""
    if any(entry.get("name") == "TMPDIR" for entry in user_env):
        return []
    return [{"name": "TMPDIR", "value": SCRATCH_PATH}]


def default_executor_image(repository: str, version: str) -> str:
    """``<repository>:<version>``: the executor image released with this operator. A local version
    (``0.2.0+g1234``) becomes a valid tag (``0.2.0-g1234``)."""
    tag = _TAG_INVALID.sub("-", version).lstrip(".-")[:128] or "latest"
    return f"{repository}:{tag}"


# --- cluster-mode checks ----------------------------------------------------------------------------------


def _volume_at(spec: StreamSpec, directory: str) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """The mount (and its volume) that holds ``directory``: the deepest mount path above it."""
    best: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None
    depth = -1
    volumes = {volume.get("name"): volume for volume in spec.executors.volumes}
    for mount in spec.executors.volume_mounts:
        path = posixpath.normpath(str(mount.get("mountPath", "")))
        inside = directory == path or directory.startswith(path.rstrip("/") + "/")
        if inside and len(path) > depth and mount.get("name") in volumes:
            best, depth = (mount, volumes[mount.get("name")]), len(path)
    return best


def _output_problem(spec: StreamSpec) -> tuple[str, str] | None:
    """(option, problem) when a sink's output directory would not outlive the executor pod."""
    option = LOCAL_OUTPUT_OPTIONS.get(spec.processor.sink)
    directory = spec.processor.options.get(option) if option else None
    if option is None or not isinstance(directory, str) or directory.startswith("s3://"):
        return None
    problem = _directory_problem(spec, directory)
    return (option, problem) if problem else None


def _directory_problem(spec: StreamSpec, directory: str) -> str | None:
    how = (
        "mount a volume that outlives the pod there, e.g. a PersistentVolumeClaim: "
        "spec.executors.volumes: [{name: output, persistentVolumeClaim: {claimName: <claim>}}] and "
        f"spec.executors.volumeMounts: [{{name: output, mountPath: {directory}}}]"
    )
    if not directory.startswith("/"):
        return f"{directory!r} must be an absolute path on a volume mounted in the executor pods; {how}"
    found = _volume_at(spec, posixpath.normpath(directory))
    if found is None:
        return (
            f"{directory} is not on a volume mounted in the executor pods, so the files would be lost "
            f"with each pod after their offsets are committed; {how}"
        )
    mount, volume = found
    name = mount.get("name")
    source = next((key for key in volume if key != "name"), "")
    if source in _NOT_DURABLE:
        return f"{directory} is on volume {name}, {_NOT_DURABLE[source]}; {how}"
    claim = volume.get("persistentVolumeClaim") or {}
    if mount.get("readOnly") or (isinstance(claim, Mapping) and claim.get("readOnly")):
        return f"{directory} is on volume {name}, mounted read-only: drop readOnly from its mount or claim"
    return None


def _root_problem(spec: StreamSpec) -> str | None:
    pod, container = pod_security_context(spec), container_security_context(spec)
    non_root = container.get("runAsNonRoot", pod.get("runAsNonRoot"))
    user = container.get("runAsUser", pod.get("runAsUser"))
    if non_root is True and user == 0:
        return (
            "runAsUser 0 (root) with runAsNonRoot true (directstream's default): the kubelet would "
            "refuse to start the executors; set runAsNonRoot: false too to run as root"
        )
    return None


def cluster_spec_problems(spec: StreamSpec, pool_endpoint: bool = False) -> list[FieldProblem]:
    """What makes a valid spec unfit to run on a cluster (local mode does not need these).
    ``pool_endpoint``: the operator serves warm executors (``--pool-port``)."""
    problems = []
    output = _output_problem(spec)
    if output is not None:
        option, problem = output
        problems.append(FieldProblem(f"spec.processor.options.{option}", problem))
    root = _root_problem(spec)
    if root is not None:
        where = "containerSecurityContext" if "runAsUser" in spec.executors.container_security_context else ""
        problems.append(FieldProblem(f"spec.executors.{where or 'securityContext'}.runAsUser", root))
    if spec.executors.mode == "pool" and not pool_endpoint:
        problems.append(
            FieldProblem(
                "spec.executors.mode",
                "pool mode on a cluster needs the operator's pool endpoint, which this operator does not "
                "serve (directstream-operator --pool-port PORT; the chart: pool.enabled); use job, or "
                "local mode (directstream run)",
            )
        )
    return problems


def parse_cluster_spec(
    name: str, spec: Mapping[str, Any], namespace: str = "default", pool_endpoint: bool = False
) -> StreamSpec:
    """``parse_spec`` plus ``cluster_spec_problems``: what the operator runs; raises ``SpecError``."""
    stream = parse_spec(name, spec, namespace)
    problems = cluster_spec_problems(stream, pool_endpoint)
    if problems:
        raise SpecError(problems)
    return stream
