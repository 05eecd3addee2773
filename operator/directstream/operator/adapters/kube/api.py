"""The operator's Kubernetes I/O: DirectStream status, executor Jobs and their pods, Secrets.

A thin wrapper over the official client. Every method blocks, so the async facade runs each
call in a worker thread; errors come out as ``KubeError`` with the API's own message (for
example a Forbidden naming the verb and resource the operator's RBAC lacks).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ...core.errors import KubeApiError

GROUP = "directstream.io"
VERSION = "v1alpha1"
PLURAL = "directstreams"


class KubeError(KubeApiError):
    """The API server refused or failed a request; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def describe_refusal(exc: ApiException, what: str) -> KubeError:
    detail = exc.reason or ""
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        detail = json.loads(exc.body or "{}").get("message", detail)
    return KubeError(f"{what}: {exc.status} {detail}", exc.status)


def unanswered(exc: Exception, what: str) -> KubeError:
    """A call the API server never answered (refused connection, timeout)."""
    return KubeError(f"{what}: the API server did not answer: {exc}")


def load_client_config() -> client.ApiClient:
    """In a pod, the service account; elsewhere, the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


class KubeApi:
    """Blocking calls; use ``AsyncKubeApi`` from async code."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._batch = client.BatchV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._api = api_client

    def read_stream(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The DirectStream as stored now (None when it is gone), with its resourceVersion."""
        try:
            stream: dict[str, Any] = self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise describe_refusal(exc, f"reading DirectStream {namespace}/{name}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise unanswered(exc, f"reading DirectStream {namespace}/{name}") from exc
        return stream

    def replace_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Write the whole status at once, only if the object is still at ``resource_version``
        (else a ``KubeError`` with status 409); the object as written. A JSON patch, not a merge
        patch: a merge would fold a new plan's offset maps into the old plan's instead of
        replacing them. The resourceVersion in the patch is the API server's precondition."""
        body = [
            {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "add", "path": "/status", "value": dict(status)},
        ]
        try:
            written: dict[str, Any] = self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body, _content_type="application/json-patch+json"
            )
        except ApiException as exc:
            raise describe_refusal(exc, f"writing the status of DirectStream {namespace}/{name}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise unanswered(exc, f"writing the status of DirectStream {namespace}/{name}") from exc
        return written

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            job = self._batch.read_namespaced_job(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise describe_refusal(exc, f"reading Job {namespace}/{name}") from exc
        return self._plain(job)

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> dict[str, Any]:
        """Create the Job, or return the existing one of the same name (an adoption)."""
        try:
            return self._plain(self._batch.create_namespaced_job(namespace, dict(job)))
        except ApiException as exc:
            if exc.status == 409:
                existing = self.get_job(namespace, job["metadata"]["name"])
                if existing is not None:
                    return existing
            raise describe_refusal(exc, f"creating Job {namespace}/{job['metadata']['name']}") from exc

    def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        try:
            jobs = self._batch.list_namespaced_job(namespace, label_selector=label_selector)
        except ApiException as exc:
            raise describe_refusal(exc, f"listing the Jobs {label_selector} in {namespace}") from exc
        return [self._plain(j) for j in jobs.items]

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            # Foreground: the Job is gone only once its pods are, so no executor outlives it.
            self._batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground")
        except ApiException as exc:
            if exc.status != 404:
                raise describe_refusal(exc, f"deleting Job {namespace}/{name}") from exc

    def resume_job(self, namespace: str, name: str) -> None:
        """Unsuspend the Job (created suspended until its units' ConfigMap exists)."""
        try:
            self._batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": False}})
        except ApiException as exc:
            raise describe_refusal(exc, f"resuming Job {namespace}/{name}") from exc

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self._core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise describe_refusal(exc, f"reading ConfigMap {namespace}/{name}") from exc
        return self._plain(found)

    def create_configmap(self, namespace: str, configmap: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._plain(self._core.create_namespaced_config_map(namespace, dict(configmap)))
        except ApiException as exc:
            what = f"creating ConfigMap {namespace}/{configmap['metadata']['name']}"
            raise describe_refusal(exc, what) from exc

    def delete_configmap(self, namespace: str, name: str) -> None:
        try:
            self._core.delete_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise describe_refusal(exc, f"deleting ConfigMap {namespace}/{name}") from exc

    def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        try:
            pods = self._core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}")
        except ApiException as exc:
            raise describe_refusal(exc, f"listing the pods of Job {namespace}/{job_name}") from exc
        return [self._plain(p) for p in pods.items]

    def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """The Secret's keys and decoded values. Values never leave the operator's memory."""
        try:
            secret = self._core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            raise describe_refusal(exc, f"reading Secret {namespace}/{name} (spec.kafka.configFrom)") from exc
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        try:
            pods = self._core.list_namespaced_pod(namespace, label_selector=selector)
        except ApiException as exc:
            raise describe_refusal(exc, f"listing pods {selector} in {namespace}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise unanswered(exc, f"listing pods {selector} in {namespace}") from exc
        return [self._plain(p) for p in pods.items]

    def create_pod(self, namespace: str, pod: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._plain(self._core.create_namespaced_pod(namespace, dict(pod)))
        except ApiException as exc:
            raise describe_refusal(exc, f"creating pod {namespace}/{pod['metadata']['name']}") from exc

    def delete_pod(self, namespace: str, name: str) -> None:
        """Graceful: the executor gets SIGTERM and aborts its open ranges."""
        try:
            self._core.delete_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise describe_refusal(exc, f"deleting pod {namespace}/{name}") from exc

    def put_secret(self, namespace: str, secret: Mapping[str, Any]) -> None:
        """Create the Secret, or replace the one of that name (the operator's own)."""
        name = secret["metadata"]["name"]
        try:
            self._core.create_namespaced_secret(namespace, dict(secret))
            return
        except ApiException as exc:
            if exc.status != 409:
                raise describe_refusal(exc, f"creating Secret {namespace}/{name}") from exc
        try:
            self._core.replace_namespaced_secret(name, namespace, dict(secret))
        except ApiException as exc:
            raise describe_refusal(exc, f"replacing Secret {namespace}/{name}") from exc

    def delete_secret(self, namespace: str, name: str) -> None:
        try:
            self._core.delete_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise describe_refusal(exc, f"deleting Secret {namespace}/{name}") from exc

    def _plain(self, obj: Any) -> dict[str, Any]:
        """The API's own camelCase JSON, which the pure builders and parsers read."""
        plain: dict[str, Any] = self._api.sanitize_for_serialization(obj)
        return plain


class AsyncKubeApi:
    """``KubeApi`` for the event loop: each call in a worker thread."""

    def __init__(self, api: KubeApi) -> None:
        self.sync = api

    async def read_stream(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.sync.read_stream, namespace, name)

    async def replace_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.replace_status, namespace, name, status, resource_version)

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.sync.get_job, namespace, name)

    async def create_job(self, namespace: str, job: Mapping[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.create_job, namespace, job)

    async def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.list_jobs, namespace, label_selector)

    async def delete_job(self, namespace: str, name: str) -> None:
        await asyncio.to_thread(self.sync.delete_job, namespace, name)

    async def resume_job(self, namespace: str, name: str) -> None:
        await asyncio.to_thread(self.sync.resume_job, namespace, name)

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.sync.get_configmap, namespace, name)

    async def create_configmap(self, namespace: str, configmap: Mapping[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.create_configmap, namespace, configmap)

    async def delete_configmap(self, namespace: str, name: str) -> None:
        await asyncio.to_thread(self.sync.delete_configmap, namespace, name)

    async def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.job_pods, namespace, job_name)

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        return await asyncio.to_thread(self.sync.secret_data, namespace, name)

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.list_pods, namespace, selector)

    async def create_pod(self, namespace: str, pod: Mapping[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.create_pod, namespace, pod)

    async def delete_pod(self, namespace: str, name: str) -> None:
        await asyncio.to_thread(self.sync.delete_pod, namespace, name)

    async def put_secret(self, namespace: str, secret: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self.sync.put_secret, namespace, secret)

    async def delete_secret(self, namespace: str, name: str) -> None:
        await asyncio.to_thread(self.sync.delete_secret, namespace, name)
