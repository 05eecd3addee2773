"""Whether a pod is one the attempt's Job made, so its termination message may count (pure).

Pods are found by the ``job-name`` label, and anyone who may create pods in the namespace may
set labels, annotations and ownerReferences, ``controller: true`` and the Job's uid included.
What such a pod cannot do and still report a result is run the Job's executor on the Job's
units: a termination message is written by the container itself. So a pod counts only when
the Job is its controller and its executor container is the Job template's: the same image,
command and arguments, the template's environment (admission may add variables, not change
them), and the template's volumes mounted where the template mounts them, with nothing else
mounted over or under them (the units ConfigMap, the sink's volumes).

A pod that passes runs the real executor over the real units: what it reports was done. The
pod's status is another matter: whoever may patch ``pods/status`` can write any pod's result,
the real executors' included. That permission is the kubelet's and the controllers'; it is
trusted, not fenced (docs/exactly-once.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .manifests import EXECUTOR_CONTAINER

__all__ = ["why_not_from_job"]


def _executor(pod_spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for container in pod_spec.get("containers") or []:
        if container.get("name") == EXECUTOR_CONTAINER:
            return dict(container)
    return None


def _missing(wanted: Sequence[Any], present: Sequence[Any]) -> list[Any]:
    return [item for item in wanted if item not in present]


def _within(path: str, mount: str) -> bool:
    """Whether ``path`` is ``mount`` or lies under it (or over it: a parent hides it too)."""
    a, b = path.rstrip("/") + "/", mount.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def _mounts_problem(template: Mapping[str, Any], container: Mapping[str, Any]) -> str | None:
    wanted = list(template.get("volumeMounts") or [])
    present = list(container.get("volumeMounts") or [])
    missing = _missing(wanted, present)
    if missing:
        return f"its executor container does not mount {missing[0].get('name')!r} as the Job does"
    for mount in _missing(present, wanted):
        path = str(mount.get("mountPath", ""))
        if any(_within(path, str(theirs.get("mountPath", ""))) for theirs in wanted):
            return f"it mounts {mount.get('name')!r} at {path}, over the Job's own volumes"
    return None


def why_not_from_job(pod: Mapping[str, Any], job: Mapping[str, Any]) -> str | None:
    """Why ``pod``'s result may not count for ``job`` (``None`` when it may)."""
    job_uid = (job.get("metadata") or {}).get("uid")
    references = (pod.get("metadata") or {}).get("ownerReferences") or []
    controllers = [ref.get("uid") for ref in references if ref.get("controller")]
    if not job_uid or job_uid not in controllers:
        owner = f"controlled by {controllers[0]}" if controllers else "controlled by nothing"
        return f"it is {owner}, not by the Job ({job_uid})"
    template_spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    pod_spec = pod.get("spec") or {}
    template, container = _executor(template_spec), _executor(pod_spec)
    if template is None or container is None:
        return "it has no executor container"
    for field in ("image", "command", "args"):
        if container.get(field) != template.get(field):
            return f"its executor container's {field} is not the Job's"
    env = _missing(list(template.get("env") or []), list(container.get("env") or []))
    if env:
        return f"its executor container does not set {env[0].get('name')} as the Job does"
    volumes = _missing(list(template_spec.get("volumes") or []), list(pod_spec.get("volumes") or []))
    if volumes:
        return f"its volume {volumes[0].get('name')!r} is not the Job's"
    return _mounts_problem(template, container)
