"""The Kubernetes Job that runs one batch attempt's executors (pure builders).

One Job per attempt, ``completionMode: Indexed``, one pod per work unit. The attempt's units live
in a ConfigMap of their own (``build_work_units_configmap``), owned by the Job, mounted read-only in
every pod at ``$DIRECTSTREAM_WORK_UNITS_FILE``; each pod picks its unit with ``$JOB_COMPLETION_INDEX``.
The Job is created suspended, the ConfigMap after it (its ownerReference needs the Job's uid), then
the Job is resumed (``adapters/kube/jobs.py``). Reading the pods back into results lives in
``job_results``.

Decisions worth knowing:

- Names: ``<stream>-b<batch>-a<attempt>``, at most 52 characters so the pods' names
  (``<job>-<index>-<5 random>``) stay within 63. A stream name that does not fit, or is not a
  valid DNS label as is, is cut and given an 8-hex-digit hash of the full name, so names stay
  unique and the same inputs always give the same name (the operator adopts a Job by its name).
- Size: the units' JSON must fit in one ConfigMap (1 MiB, etcd's object limit, minus room for the
  metadata), about 25,000 ranges of short topic names; ``WorkUnitsTooLarge`` says so. (It used to
  travel in one env var, where Linux's 128 KiB ``MAX_ARG_STRLEN`` was a wall at ~2,900 partitions.)
- Pod settings (securityContext defaults, volumes and the scratch emptyDir, the default image)
  come from ``executor_pod``; user pod labels and annotations never replace directstream's.
- User env may not set ``DIRECTSTREAM_*`` (our channel to the executor; ``USER_SETTABLE_ENV``
  excepted) nor ``JOB_COMPLETION_INDEX``: ``ManifestError``.
- The parquet sink's ``options.credentialsSecret``: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``
  (and optionally ``AWS_SESSION_TOKEN``) by ``secretKeyRef`` to that Secret's keys of the same names;
  ``spec.executors.env`` may not set them too.
- Kafka secrets: one env var per key of the Secret, ``DIRECTSTREAM_KAFKA_SECRET_<n>`` with a
  ``secretKeyRef``; the units' ``kafka.secret_env`` maps the librdkafka setting to that variable
  (``secret_env_for``). Secret values never appear in the Job.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from directstream.executor.contract import WorkUnit, wire
from directstream.executor.contract.parquet import (
    ParquetOptionsError,
    credential_env,
    credential_env_names,
    parse_parquet_options,
)

from .errors import PermanentError
from .executor_pod import (
    container_security_context,
    executor_mounts,
    executor_volumes,
    pod_placement,
    pod_security_context,
    scratch_env,
)
from .spec import FORBIDDEN_KAFKA_CONFIG, StreamSpec
from .spec_pod import WORK_UNITS_VOLUME

__all__ = [
    "ANNOTATION_ATTEMPT",
    "ANNOTATION_BATCH",
    "ANNOTATION_DIGEST",
    "ANNOTATION_STREAM",
    "EXECUTOR_CONTAINER",
    "JOB_TTL_SECONDS",
    "LABEL_ATTEMPT",
    "LABEL_BATCH",
    "LABEL_STREAM",
    "MANAGED_BY",
    "MAX_JOB_NAME_LENGTH",
    "MAX_WORK_UNITS_BYTES",
    "WORK_UNITS_FILE",
    "ManifestError",
    "WorkUnitsTooLarge",
    "build_executor_job",
    "build_work_units_configmap",
    "job_labels",
    "job_name",
    "job_selector",
    "label_value",
    "secret_env_for",
    "stream_labels",
    "stream_selector",
    "units_configmap_name",
]

LABEL_STREAM = "directstream.io/stream"
LABEL_BATCH = "directstream.io/batch"
LABEL_ATTEMPT = "directstream.io/attempt"
MANAGED_BY = "directstream-operator"  # app.kubernetes.io/managed-by of everything the operator creates
ANNOTATION_STREAM = "directstream.io/stream"  # the full name, when the label had to be shortened
ANNOTATION_BATCH = "directstream.io/batch"
ANNOTATION_ATTEMPT = "directstream.io/attempt"
ANNOTATION_UNITS = "directstream.io/units"
ANNOTATION_DIGEST = "directstream.io/digest"  # the pinned attempt's fingerprint (core/pinning.py)

EXECUTOR_CONTAINER = "executor"
EXECUTOR_COMMAND = "directstream-executor"
WORK_UNITS_FILE_ENV = wire.ENV_WORK_UNITS_FILE
WORK_UNITS_DIR = "/var/run/directstream/units"
WORK_UNITS_KEY = "units.json"
WORK_UNITS_FILE = f"{WORK_UNITS_DIR}/{WORK_UNITS_KEY}"
SECRET_ENV_PREFIX = wire.ENV_KAFKA_SECRET_PREFIX
COMPLETION_INDEX_ENV = wire.ENV_COMPLETION_INDEX
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
TERMINATION_MESSAGE_PATH = str(wire.TERMINATION_LOG)
USER_SETTABLE_ENV = wire.USER_SETTABLE_ENV

# Finished Jobs linger this long so the driver can read their pods' results, then Kubernetes
# deletes them (the driver also deletes a Job once it has read it).
JOB_TTL_SECONDS = 600
DEFAULT_TIMEOUT_SECONDS = 600.0
# Pod names are "<job>-<index>-<5 chars>"; index < 1000 (MAX_EXECUTORS) keeps them within 63.
MAX_JOB_NAME_LENGTH = 52
MAX_LABEL_VALUE_LENGTH = 63
# A ConfigMap is at most 1 MiB (data and metadata together); the metadata we write is small.
MAX_CONFIGMAP_BYTES = 1024 * 1024
MAX_WORK_UNITS_BYTES = MAX_CONFIGMAP_BYTES - 16 * 1024

_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_HASH_LENGTH = 8


class ManifestError(PermanentError, ValueError):
    """A Job cannot be built from this spec and these units; the message says what to change."""


class WorkUnitsTooLarge(ManifestError):
    """The work units of one batch do not fit in one ConfigMap."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LENGTH]


def _shortened(text: str, allowed: re.Pattern[str], invalid: str, budget: int) -> str:
    """``text`` itself when it is valid and fits, else its valid characters cut to ``budget``
    with a hash of the whole text appended (different inputs stay different)."""
    if allowed.fullmatch(text) and len(text) <= budget:
        return text
    clean = re.sub(invalid, "-", text.lower()).strip("-._")
    head = clean[: budget - _HASH_LENGTH - 1].rstrip("-._")
    return f"{head}-{_digest(text)}" if head else _digest(text)


def job_name(stream_name: str, batch_id: int, attempt: int) -> str:
    """The Job of one batch attempt: ``<stream>-b<batch>-a<attempt>``, a DNS-1123 label of at
    most 52 characters, the same for the same inputs."""
    if batch_id < 0 or attempt < 1:
        raise ValueError(f"no Job for batch {batch_id} attempt {attempt}")
    suffix = f"-b{batch_id}-a{attempt}"
    budget = MAX_JOB_NAME_LENGTH - len(suffix)
    if budget < 2 * _HASH_LENGTH:
        raise ValueError(f"batch {batch_id} attempt {attempt} leaves no room for the stream in a Job name")
    return _shortened(stream_name, _DNS_LABEL, r"[^a-z0-9-]+", budget) + suffix


def label_value(text: str) -> str:
    """``text`` as a valid label value (at most 63 characters; shortened with a hash if needed)."""
    return _shortened(text, _LABEL_VALUE, r"[^a-z0-9_.-]+", MAX_LABEL_VALUE_LENGTH)


def stream_labels(stream_name: str) -> dict[str, str]:
    """Labels of everything the operator creates for a stream."""
    value = label_value(stream_name)
    return {
        "app.kubernetes.io/name": "directstream",
        "app.kubernetes.io/instance": value,
        "app.kubernetes.io/component": "executor",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_STREAM: value,
    }


def job_labels(stream_name: str, batch_id: int, attempt: int) -> dict[str, str]:
    """Labels of one attempt's Job and of its pods."""
    return {**stream_labels(stream_name), LABEL_BATCH: str(batch_id), LABEL_ATTEMPT: str(attempt)}


def stream_selector(stream_name: str) -> str:
    """A label selector for every Job (and executor pod) of a stream."""
    return f"{LABEL_STREAM}={label_value(stream_name)}"


def job_selector(stream_name: str, batch_id: int, attempt: int) -> str:
    """A label selector for the pods of one attempt's Job."""
    return f"{stream_selector(stream_name)},{LABEL_BATCH}={batch_id},{LABEL_ATTEMPT}={attempt}"


def secret_env_for(secret_keys: Iterable[str]) -> dict[str, str]:
    """librdkafka setting (the Secret's key) -> the env var carrying its value in executor pods.

    Numbered rather than derived from the key: keys contain dots (``sasl.password``) and a derived
    name could collide; sorting makes the numbers independent of the Secret's key order. This is
    the mapping to put in ``KafkaClientSettings.secret_env`` of the units given to
    ``build_executor_job``.
    """
    keys = sorted(set(secret_keys))
    bad = [key for key in keys if not _SECRET_KEY.fullmatch(key)]
    if bad:
        raise ManifestError(f"spec.kafka.configFrom Secret has invalid keys: {', '.join(map(repr, bad))}")
    managed = [key for key in keys if key in FORBIDDEN_KAFKA_CONFIG]
    if managed:
        hints = "; ".join(f"{key!r}: {FORBIDDEN_KAFKA_CONFIG[key]}" for key in managed)
        raise ManifestError(f"spec.kafka.configFrom Secret sets settings managed by directstream: {hints}")
    return {key: f"{SECRET_ENV_PREFIX}{n}" for n, key in enumerate(keys)}


def _check_units(spec: StreamSpec, units: Sequence[WorkUnit]) -> tuple[int, int]:
    """The batch id and attempt shared by ``units``, which must be indexed 0..n-1 in order."""
    if not units:
        raise ManifestError("a Job needs at least one work unit")
    batch_id, attempt = units[0].batch_id, units[0].attempt
    for position, unit in enumerate(units):
        if unit.index != position:
            raise ManifestError(f"work unit at position {position} has index {unit.index}")
        if (unit.stream, unit.batch_id, unit.attempt) != (spec.name, batch_id, attempt):
            raise ManifestError(
                f"work unit {position} is for stream {unit.stream!r} batch {unit.batch_id} attempt "
                f"{unit.attempt}, expected {spec.name!r} batch {batch_id} attempt {attempt}"
            )
    return batch_id, attempt


def _check_owner(owner: Mapping[str, Any]) -> dict[str, Any]:
    missing = [key for key in ("apiVersion", "kind", "name", "uid") if not owner.get(key)]
    if missing:
        raise ManifestError(f"the Job's owner reference lacks {', '.join(missing)}")
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["name"],
        "uid": owner["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _user_env(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``spec.executors.env`` as given, refusing names that would override the executor's input."""
    checked: list[dict[str, Any]] = []
    for position, entry in enumerate(entries):
        name = entry.get("name")
        path = f"spec.executors.env[{position}]"
        if not isinstance(name, str) or not name:
            raise ManifestError(f"{path}: every env entry needs a name")
        if wire.is_reserved_env(name):
            raise ManifestError(
                f"{path}: {name} is set by directstream and cannot be overridden "
                f"(reserved: DIRECTSTREAM_* except {', '.join(sorted(USER_SETTABLE_ENV))}, "
                f"and {COMPLETION_INDEX_ENV})"
            )
        checked.append(dict(entry))
    return checked


def _work_units_json(units: Sequence[WorkUnit], batch_id: int) -> str:
    text = json.dumps([unit.to_json() for unit in units], separators=(",", ":"), sort_keys=True)
    size = len(text.encode())
    if size > MAX_WORK_UNITS_BYTES:
        ranges = sum(len(unit.ranges) for unit in units)
        raise WorkUnitsTooLarge(
            f"batch {batch_id}: the work units ({len(units)} units, {ranges} ranges) are {size} bytes of "
            f"JSON, above the {MAX_WORK_UNITS_BYTES} bytes one ConfigMap can carry (1 MiB). The size "
            f"grows with the partitions read per batch: split the topics over several DirectStreams, "
            f"avoid splitting ranges (spec.executors.maxRecords: 0), or shorten spec.kafka.config and "
            f"spec.processor.options, which every unit repeats"
        )
    return text


def units_configmap_name(job: str) -> str:
    """The ConfigMap holding the work units of the attempt whose Job is ``job``."""
    return f"{job}-units"


def build_work_units_configmap(
    units: Sequence[WorkUnit], *, job: Mapping[str, Any], digest: str
) -> dict[str, Any]:
    """The ConfigMap with ``units`` for the (created, suspended) ``job``, which owns it, so it goes
    with the Job. It carries the attempt's digest (the units do too): one from another attempt is
    never used. Raises ``WorkUnitsTooLarge``."""
    metadata = job.get("metadata") or {}
    if not units or not metadata.get("uid"):
        raise ManifestError("the work units' ConfigMap needs units and a created Job (its uid)")
    batch_id, attempt = units[0].batch_id, units[0].attempt
    annotations = {
        ANNOTATION_STREAM: units[0].stream,
        ANNOTATION_BATCH: str(batch_id),
        ANNOTATION_ATTEMPT: str(attempt),
        ANNOTATION_UNITS: str(len(units)),
        ANNOTATION_DIGEST: digest,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": units_configmap_name(str(metadata["name"])),
            "namespace": metadata.get("namespace"),
            "labels": job_labels(units[0].stream, batch_id, attempt),
            "annotations": annotations,
            # No blockOwnerDeletion: it would need update on jobs/finalizers, and nothing waits on it.
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": metadata["name"], "uid": metadata["uid"]}
            ],
        },
        "immutable": True,
        "data": {WORK_UNITS_KEY: _work_units_json(units, batch_id)},
    }


def _executor_env(secret_name: str | None, secret_env: Mapping[str, str]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": WORK_UNITS_FILE_ENV, "value": WORK_UNITS_FILE},
        # The Job controller injects this too; stating it keeps the pod's input visible in one place.
        {
            "name": COMPLETION_INDEX_ENV,
            "valueFrom": {
                "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}
            },
        },
    ]
    for key, variable in secret_env.items():
        env.append({"name": variable, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}})
    return env


def _sink_env(spec: StreamSpec, unit: WorkUnit) -> list[dict[str, Any]]:
    """Env the unit's sink asks for (the recorded plan's processor, not a newer spec): the parquet
    sink's credentials, by reference to their Secret."""
    if unit.processor.sink != "parquet":
        return []
    try:
        entries = credential_env(parse_parquet_options(unit.processor.options))
    except ParquetOptionsError as exc:
        raise ManifestError(str(exc)) from exc
    clash = sorted({str(e.get("name")) for e in spec.executors.env} & set(credential_env_names()))
    if entries and clash:
        raise ManifestError(
            f"spec.executors.env sets {', '.join(clash)}, which spec.processor.options.credentialsSecret "
            "provides: remove one of them"
        )
    return entries


def build_executor_job(
    spec: StreamSpec,
    units: Sequence[WorkUnit],
    *,
    namespace: str,
    owner: Mapping[str, Any],
    image: str,
    secret_name: str | None,
    secret_keys: Sequence[str],
    digest: str = "",
) -> dict[str, Any]:
    """The ``batch/v1`` Job running ``units`` (one batch attempt), owned by the DirectStream ``owner``.

    ``image`` is the operator's default executor image (``spec.executors.image`` wins);
    ``secret_name``/``secret_keys`` are the Secret of ``spec.kafka.configFrom`` and its keys, and the
    units' ``kafka.secret_env`` must equal ``secret_env_for(secret_keys)``. Raises ``ManifestError``
    (``WorkUnitsTooLarge`` for the size guard) with a message meant for the stream's conditions.
    """
    batch_id, attempt = _check_units(spec, units)
    name = job_name(spec.name, batch_id, attempt)
    executors = spec.executors
    chosen_image = executors.image or image
    if not chosen_image:
        raise ManifestError(
            "no executor image: set spec.executors.image or start the operator with --executor-image"
        )
    if secret_keys and not secret_name:
        raise ManifestError("Secret keys given without the Secret's name")
    secret_env = secret_env_for(secret_keys) if secret_name else {}
    for unit in units:
        if dict(unit.kafka.secret_env) != secret_env:
            raise ManifestError(
                f"work unit {unit.index} maps Kafka secrets to {sorted(unit.kafka.secret_env.items())}, "
                f"but the Job provides {sorted(secret_env.items())}"
            )
    _work_units_json(units, batch_id)  # refuse what the ConfigMap could not hold before creating the Job
    env = _executor_env(secret_name, secret_env) + _sink_env(spec, units[0]) + _user_env(executors.env)

    container: dict[str, Any] = {
        "name": EXECUTOR_CONTAINER,
        "image": chosen_image,
        "command": [EXECUTOR_COMMAND],
        "env": env + scratch_env(executors.env),
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        # A crash before the result is written still leaves its last log lines as the message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(spec),
        "volumeMounts": [
            *executor_mounts(spec),
            {"name": WORK_UNITS_VOLUME, "mountPath": WORK_UNITS_DIR, "readOnly": True},
        ],
    }
    if executors.image_pull_policy:
        container["imagePullPolicy"] = executors.image_pull_policy
    if executors.resources:
        container["resources"] = dict(executors.resources)

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Executors talk to Kafka only; no API token in the pod.
        "automountServiceAccountToken": False,
        # Service links would add variables for every Service in the namespace to each pod.
        "enableServiceLinks": False,
        "securityContext": pod_security_context(spec),
        "containers": [container],
        "volumes": [
            *executor_volumes(spec),
            {"name": WORK_UNITS_VOLUME, "configMap": {"name": units_configmap_name(name)}},
        ],
    }
    pod_spec.update(pod_placement(spec))

    labels = job_labels(spec.name, batch_id, attempt)
    annotations = {
        ANNOTATION_STREAM: spec.name,
        ANNOTATION_BATCH: str(batch_id),
        ANNOTATION_ATTEMPT: str(attempt),
        ANNOTATION_UNITS: str(len(units)),
        ANNOTATION_DIGEST: digest,
    }
    # The parser refuses user keys that directstream sets; ours are applied last all the same.
    pod_labels = {**executors.pod_labels, **labels}
    pod_annotations = {**executors.pod_annotations, **annotations}
    timeout = getattr(executors, "timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [_check_owner(owner)],
        },
        "spec": {
            "completionMode": "Indexed",
            # Resumed once the units' ConfigMap exists (it needs the Job's uid to be owned by it).
            "suspend": True,
            "completions": len(units),
            "parallelism": len(units),
            # The driver retries whole attempts (same ranges, new Job), never single pods.
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(1, math.ceil(timeout)),
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }
