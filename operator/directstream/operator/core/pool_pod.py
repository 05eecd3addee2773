"""A cluster pool's objects (``executors.mode: pool``; pure builders): executor pods and their token Secret.

Bare pods, each one executor the driver starts and stops itself (not a Deployment): the lease
book must know at once which executor died to lease its unit again in the same attempt, a hung
executor's very pod must be stopped before its unit moves, and a replaced pool must be gone
before the next one takes units — a ReplicaSet's own replacements and rolling updates would race
all three. The pool's size is what the driver's ``PoolLauncher`` keeps, in local mode and here.

- The pods run ``python -m directstream.executor.pool_worker`` with the stream's endpoint URL;
  the token comes from the stream's Secret by ``secretKeyRef`` (never in the pod spec itself).
- ``restartPolicy: Never``: a dead executor is a dead pod, never the same pod restarted while
  the driver still counts its lease.
- The same restrictions as the Job's pods (``executor_pod``): restricted profile defaults, no API
  token mounted, the stream's ServiceAccount (which needs no permissions), volumes, env.
- Both are owned by the stream (gone with it) and carry the stream's labels plus ``LABEL_POOL``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from directstream.executor.contract import WorkUnit
from directstream.executor.contract.pool import ENV_POOL_TOKEN

from .executor_pod import (
    container_security_context,
    executor_mounts,
    executor_volumes,
    pod_placement,
    pod_security_context,
    scratch_env,
)
from .manifests import (
    _DNS_LABEL,
    ANNOTATION_STREAM,
    EXECUTOR_CONTAINER,
    ManifestError,
    _check_owner,
    _shortened,
    _sink_env,
    _user_env,
    stream_labels,
    stream_selector,
)
from .spec import StreamSpec

LABEL_POOL = "directstream.io/pool"  # the pool's run: a new one for every driver run
LABEL_EXECUTOR = "directstream.io/executor"
POOL_TOKEN_KEY = "token"
POOL_COMMAND = ["python", "-m", "directstream.executor.pool_worker"]
_STREAM_BUDGET = 40  # "<stream>-pool-<run>-<executor>" stays a short DNS label
_RUN = re.compile(r"[a-z0-9]{1,10}")


def pool_selector(stream_name: str) -> str:
    """Every pool pod of a stream, of any run."""
    return f"{stream_selector(stream_name)},{LABEL_POOL}"


def pool_token_secret_name(stream_name: str) -> str:
    return _shortened(stream_name, _DNS_LABEL, r"[^a-z0-9-]+", _STREAM_BUDGET) + "-pool-token"


def pool_pod_name(stream_name: str, run: str, executor_id: str) -> str:
    if not _RUN.fullmatch(run) or not re.fullmatch(r"[0-9]+-[0-9]+", executor_id):
        raise ValueError(f"no pool pod name for run {run!r} executor {executor_id!r}")
    return _shortened(stream_name, _DNS_LABEL, r"[^a-z0-9-]+", _STREAM_BUDGET) + f"-pool-{run}-{executor_id}"


def pool_labels(stream_name: str, run: str) -> dict[str, str]:
    return {**stream_labels(stream_name), LABEL_POOL: run}


def build_pool_token_secret(
    stream_name: str, *, namespace: str, owner: Mapping[str, Any], run: str, token: str
) -> dict[str, Any]:
    """The Secret holding the stream's pool token (this driver run's), owned by the stream."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": pool_token_secret_name(stream_name),
            "namespace": namespace,
            "labels": pool_labels(stream_name, run),
            "annotations": {ANNOTATION_STREAM: stream_name},
            "ownerReferences": [_check_owner(owner)],
        },
        "type": "Opaque",
        "stringData": {POOL_TOKEN_KEY: token},
    }


def build_pool_executor_pod(
    spec: StreamSpec,
    template: WorkUnit,
    *,
    namespace: str,
    owner: Mapping[str, Any],
    image: str,
    run: str,
    executor_id: str,
    url: str,
    kafka_secret: str | None,
) -> dict[str, Any]:
    """One warm executor of ``spec``'s pinned executor settings. ``template`` is a unit of the
    attempt the pool is built for: its Kafka secret variables and sink credentials become the
    pod's env (``PoolLauncher`` replaces the pool when they change). Raises ``ManifestError``."""
    executors = spec.executors
    chosen_image = executors.image or image
    if not chosen_image:
        raise ManifestError(
            "no executor image: set spec.executors.image or start the operator with --executor-image"
        )
    if template.kafka.secret_env and not kafka_secret:
        raise ManifestError("the units read Kafka secrets, but no spec.kafka.configFrom Secret is given")
    env: list[dict[str, Any]] = [
        {
            "name": ENV_POOL_TOKEN,
            "valueFrom": {"secretKeyRef": {"name": pool_token_secret_name(spec.name), "key": POOL_TOKEN_KEY}},
        }
    ]
    for key, variable in sorted(template.kafka.secret_env.items()):
        env.append({"name": variable, "valueFrom": {"secretKeyRef": {"name": kafka_secret, "key": key}}})
    env += _sink_env(spec, template) + _user_env(executors.env)
    container: dict[str, Any] = {
        "name": EXECUTOR_CONTAINER,
        "image": chosen_image,
        "command": list(POOL_COMMAND),
        "args": ["--url", url, "--executor-id", executor_id, "--stream", spec.name],
        "env": env + scratch_env(executors.env),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(spec),
        "volumeMounts": executor_mounts(spec),
    }
    if executors.image_pull_policy:
        container["imagePullPolicy"] = executors.image_pull_policy
    if executors.resources:
        container["resources"] = dict(executors.resources)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # executors talk to Kafka and the driver only
        "enableServiceLinks": False,
        "securityContext": pod_security_context(spec),
        "containers": [container],
        "volumes": executor_volumes(spec),
    }
    pod_spec.update(pod_placement(spec))
    labels = {**executors.pod_labels, **pool_labels(spec.name, run), LABEL_EXECUTOR: executor_id}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pool_pod_name(spec.name, run, executor_id),
            "namespace": namespace,
            "labels": labels,
            "annotations": {**executors.pod_annotations, ANNOTATION_STREAM: spec.name},
            "ownerReferences": [_check_owner(owner)],
        },
        "spec": pod_spec,
    }


def pool_layout(spec: StreamSpec, template: WorkUnit, kafka_secret: str | None) -> tuple[Any, ...]:
    """What a pool pod's env is built from besides the pinned executor settings: the pool is
    replaced when it changes (a Kafka Secret with other keys, other sink credentials)."""
    sink_env = json.dumps(_sink_env(spec, template), sort_keys=True)
    return (kafka_secret, tuple(sorted(template.kafka.secret_env.items())), sink_env)
