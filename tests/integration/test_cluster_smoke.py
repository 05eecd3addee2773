"""The test infrastructure is real: CEL validation, the Job controller, the scheduler, RBAC on
service-account tokens, garbage collection, and the dev node running pods as real containers."""

from __future__ import annotations

import json
import secrets
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness.kube_fixtures import EXECUTOR_IMAGE, Kube, wait_crd_established

pytestmark = pytest.mark.k8s
NODE = "directstream-test-node"


@pytest.fixture
def core(kube: Kube) -> Iterator[client.CoreV1Api]:
    api = kube.api_client()
    yield client.CoreV1Api(api)
    api.close()


def python_pod(name: str, script: str, **spec: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": EXECUTOR_IMAGE,
        "command": ["python3", "-c", textwrap.dedent(script)],
    }
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def wait_phase(
    kube: Kube, core: client.CoreV1Api, ns: str, name: str, phases: tuple[str, ...], timeout: float = 60
) -> Any:
    def done() -> Any:
        pod = core.read_namespaced_pod(name, ns)
        return pod if pod.status.phase in phases else None

    return kube.wait_for(f"pod {ns}/{name} in {phases}", done, timeout=timeout)


def terminated(pod: Any) -> Any:
    state = pod.status.container_statuses[0].state
    assert state.terminated is not None, state
    return state.terminated


def test_crd_cel_rule_rejects_invalid_object(kube: Kube, namespace: str) -> None:
    group = f"s{secrets.token_hex(4)}.smoke.directstream.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"ranges.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "ranges", "singular": "range", "kind": "Range"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["from", "until"],
                                    "properties": {"from": {"type": "integer"}, "until": {"type": "integer"}},
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.from <= self.until",
                                            "message": "from must not exceed until",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        wait_crd_established(kube, f"ranges.{group}", timeout=30)
        custom = client.CustomObjectsApi(kube.api_client())

        def create(frm: int, until: int) -> Any:
            body = {
                "apiVersion": f"{group}/v1",
                "kind": "Range",
                "metadata": {"name": f"r{frm}-{until}"},
                "spec": {"from": frm, "until": until},
            }
            return custom.create_namespaced_custom_object(group, "v1", namespace, "ranges", body)

        # The endpoint serves shortly after Established; retry only "not found".
        kube.wait_for("the new resource to be served", lambda: _created(lambda: create(1, 5)), timeout=30)
        with pytest.raises(ApiException) as err:
            create(9, 5)
        assert err.value.status == 422
        assert "from must not exceed until" in err.value.body
        bad = {
            "apiVersion": f"{group}/v1",
            "kind": "Range",
            "metadata": {"name": "bad", "namespace": namespace},
            "spec": {"from": 3, "until": 2},
        }
        out = kube.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
        assert out.returncode != 0 and "from must not exceed until" in out.stderr
    finally:
        kube.kubectl("delete", "crd", f"ranges.{group}", "--wait=false")


def _created(fn: Any) -> bool:
    try:
        fn()
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


def test_indexed_job_runs_on_test_node(kube: Kube, core: client.CoreV1Api, namespace: str) -> None:
    script = """
        import os
        i = os.environ["JOB_COMPLETION_INDEX"]
        print(f"hello from index {i} in {os.getcwd()}", flush=True)
        with open("/dev/termination-log", "w") as f:
            f.write(f"index={i} pod={os.environ['POD_NAME']}")
    """
    container = {
        "name": "work",
        "image": EXECUTOR_IMAGE,
        "command": ["python3", "-c", textwrap.dedent(script)],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "indexed"},
        "spec": {
            "completions": 3,
            "parallelism": 3,
            "completionMode": "Indexed",
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }
    batch = client.BatchV1Api(kube.api_client())
    batch.create_namespaced_job(namespace, job)

    def complete() -> bool:
        conds = batch.read_namespaced_job_status("indexed", namespace).status.conditions or []
        assert not any(c.type == "Failed" and c.status == "True" for c in conds), conds
        return any(c.type == "Complete" and c.status == "True" for c in conds)

    kube.wait_for("Job indexed to complete", complete, timeout=90)
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=indexed").items
    assert len(pods) == 3
    messages = set()
    for pod in pods:
        assert pod.spec.node_name == NODE  # bound by the real scheduler
        assert pod.status.phase == "Succeeded"
        index = pod.metadata.annotations["batch.kubernetes.io/job-completion-index"]
        t = terminated(pod)
        assert (t.exit_code, t.reason) == (0, "Completed")
        assert t.message == f"index={index} pod={pod.metadata.name}"
        messages.add(t.message.split()[0])
        assert f"hello from index {index}" in kube.pod_logs(namespace, pod.metadata.name)
    assert messages == {"index=0", "index=1", "index=2"}


def test_service_account_token_carries_exactly_its_rbac(
    kube: Kube, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"color": "blue"}}
    )
    rbac = client.RbacAuthorizationV1Api(kube.api_client())
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    script = """
        import json, os, ssl, urllib.error, urllib.request
        sa = "/var/run/secrets/kubernetes.io/serviceaccount"
        token = open(f"{sa}/token").read()
        ns = open(f"{sa}/namespace").read()
        ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
        base = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
        def call(path, body=None):
            req = urllib.request.Request(base + path, data=body, headers={
                "Authorization": "Bearer " + token, "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, context=ctx) as r:
                    return r.status, json.load(r)
            except urllib.error.HTTPError as e:
                return e.code, None
        cm_code, cm = call(f"/api/v1/namespaces/{ns}/configmaps/settings")
        sec_code, _ = call(f"/api/v1/namespaces/{ns}/secrets")
        list_code, _ = call(f"/api/v1/namespaces/{ns}/configmaps")
        review = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode()
        _, who = call("/apis/authentication.k8s.io/v1/selfsubjectreviews", review)
        open("/dev/termination-log", "w").write(json.dumps({
            "ns": ns, "cm": cm_code, "color": cm["data"]["color"], "secrets": sec_code, "list": list_code,
            "user": who["status"]["userInfo"]["username"]}))
    """
    core.create_namespaced_pod(
        namespace,
        python_pod("caller", script, serviceAccountName="reader", container={"env": kube.api_server_env()}),
    )
    pod = wait_phase(kube, core, namespace, "caller", ("Succeeded", "Failed"))
    t = terminated(pod)
    assert t.exit_code == 0, (t.message, kube.pod_logs(namespace, "caller"))
    assert json.loads(t.message) == {
        "ns": namespace,
        "cm": 200,
        "color": "blue",
        "secrets": 403,
        "list": 403,
        "user": f"system:serviceaccount:{namespace}:reader",
    }


@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_owner_deletion_garbage_collects_children(
    core: client.CoreV1Api, kube: Kube, namespace: str, policy: str
) -> None:
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
        "blockOwnerDeletion": True,
    }
    for i in range(2):
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": f"child-{i}", "ownerReferences": [ref]}}
        )
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "bystander"}})
    core.delete_namespaced_config_map("owner", namespace, propagation_policy=policy)

    def names() -> set[str]:
        return {c.metadata.name for c in core.list_namespaced_config_map(namespace).items}

    kube.wait_for(
        "children to be collected", lambda: not names() & {"owner", "child-0", "child-1"}, timeout=60
    )
    assert "bystander" in names()


def test_failing_container_reports_exit_code_and_message(
    kube: Kube, core: client.CoreV1Api, namespace: str
) -> None:
    script = """
        import sys
        open("/dev/termination-log", "w").write("range clicks-0 [40, 50) failed at 42")
        sys.exit(3)
    """
    core.create_namespaced_pod(namespace, python_pod("fails", script))
    fallback = """
        import sys
        print("traceback: something broke", file=sys.stderr)
        sys.exit(2)
    """
    core.create_namespaced_pod(
        namespace,
        python_pod("fallback", fallback, container={"terminationMessagePolicy": "FallbackToLogsOnError"}),
    )
    pod = wait_phase(kube, core, namespace, "fails", ("Succeeded", "Failed"))
    assert pod.status.phase == "Failed"
    t = terminated(pod)
    assert (t.exit_code, t.reason, t.message) == (3, "Error", "range clicks-0 [40, 50) failed at 42")
    pod = wait_phase(kube, core, namespace, "fallback", ("Succeeded", "Failed"))
    t = terminated(pod)
    assert (pod.status.phase, t.exit_code) == ("Failed", 2)
    assert "traceback: something broke" in t.message


def test_environment_resolution(kube: Kube, core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "cfg"}, "data": {"topic": "clicks", "a": "1"}}
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "sec"}, "stringData": {"password": "s3cret"}}
    )
    env = [
        {"name": "TOPIC", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "topic"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
        {"name": "MISSING", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": True}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "COMBINED", "value": "$(TOPIC)-$(NS)-$$(TOPIC)-$(UNDEFINED)"},
    ]
    script = """
        import json, os, sys
        keys = ["TOPIC", "PASSWORD", "NS", "NODE", "LABEL", "COMBINED", "CFG_a", "KUBERNETES_SERVICE_HOST"]
        out = {k: os.environ.get(k) for k in keys}
        out["missing"] = "MISSING" in os.environ
        out["argv"] = sys.argv[1:]
        out["cwd"] = os.getcwd()
        open("/dev/termination-log", "w").write(json.dumps(out))
    """
    pod = python_pod(
        "env",
        script,
        container={
            "env": env,
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
            "args": ["$(TOPIC)", "$$(TOPIC)"],
            "workingDir": "/tmp",
        },
    )
    pod["metadata"]["labels"] = {"app": "smoke"}
    core.create_namespaced_pod(namespace, pod)
    t = terminated(wait_phase(kube, core, namespace, "env", ("Succeeded", "Failed")))
    assert t.exit_code == 0, t.message
    assert json.loads(t.message) == {
        "TOPIC": "clicks",
        "PASSWORD": "s3cret",
        "NS": namespace,
        "NODE": NODE,
        "LABEL": "smoke",
        "COMBINED": f"clicks-{namespace}-$(TOPIC)-$(UNDEFINED)",
        "CFG_a": "1",
        # the real kubelet's service env: the kubernetes Service's IP
        "KUBERNETES_SERVICE_HOST": core.read_namespaced_service("kubernetes", "default").spec.cluster_ip,
        "missing": False,
        "argv": ["clicks", "$(TOPIC)"],
        "cwd": "/tmp",
    }


def test_graceful_deletion_and_active_deadline(kube: Kube, core: client.CoreV1Api, namespace: str) -> None:
    sleeper = (
        "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\ntime.sleep(300)\n"
    )
    core.create_namespaced_pod(namespace, python_pod("sleeper", sleeper))
    core.create_namespaced_pod(
        namespace,
        python_pod(
            "deadline",
            "import time; time.sleep(300)",
            activeDeadlineSeconds=2,
            terminationGracePeriodSeconds=1,
        ),
    )
    pod = wait_phase(kube, core, namespace, "sleeper", ("Running",))
    assert pod.status.container_statuses[0].state.running is not None
    core.delete_namespaced_pod("sleeper", namespace, grace_period_seconds=10)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("sleeper", namespace)
            return False
        except ApiException as e:
            return bool(e.status == 404)

    kube.wait_for("the deleted pod to disappear", gone, timeout=8)  # SIGTERM honoured well before the grace
    pod = wait_phase(kube, core, namespace, "deadline", ("Failed",), timeout=30)
    assert pod.status.reason == "DeadlineExceeded"
    # The container's PID 1 has no SIGTERM handler, so the kernel ignores SIGTERM for it; the runtime
    # kills it after the grace period.
    assert terminated(pod).exit_code == 137
