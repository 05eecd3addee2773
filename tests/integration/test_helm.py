"""The Helm chart end to end: lint, the API server's verdict on every rendering, `helm install --wait` of the
operator (the real operator image, a real container on the dev node), a stream through it, `helm test`, the
RBAC it grants, and `helm uninstall` leaving nothing behind."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import EXECUTOR_IMAGE, OPERATOR_IMAGE, VERSION, Kube, _cluster_env
from tests.harness.local_mode import group_offsets, jsonl_offsets, latest_offsets
from tests.harness.operator_fixtures import (
    committed_of,
    condition,
    get_stream,
    lease_holder,
    stream_manifest,
    wait_committed,
)

pytestmark = [pytest.mark.k8s]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "directstream"
RELEASE = "ds"
FULLNAME = f"{RELEASE}-directstream"
# The operator's rules, resource -> verbs (templates/rbac.yaml says why each is needed).
OPERATOR_RULES = {
    ("directstream.io", "directstreams"): ["get", "list", "watch", "patch"],
    ("directstream.io", "directstreams/status"): ["patch"],
    ("directstream.io", "directstreams/finalizers"): ["update"],
    ("batch", "jobs"): ["get", "list", "watch", "create", "patch", "delete"],
    ("", "configmaps"): ["get", "create", "delete"],
    ("", "pods"): ["list", "watch"],
    ("", "secrets"): ["get"],
    ("", "events"): ["create"],
}
# The leader Lease: create (RBAC cannot name what does not exist yet), then only that Lease by name.
LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [FULLNAME],
        "verbs": ["get", "update"],
    },
]
DISCOVERY_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): ["list", "watch"],
    ("", "namespaces"): ["list", "watch"],
}


@dataclass
class Helm:
    binary: str
    kubeconfig: str

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
            )
        return proc


@pytest.fixture(scope="session")
def helm(kube: Kube) -> Helm:
    binary = shutil.which("helm", path=_cluster_env()["PATH"])
    assert binary, "helm is missing: bash hack/cluster.sh build"
    return Helm(binary, kube.kubeconfig)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def chart_values(namespace: str, kube: Kube | None = None, **overrides: Any) -> dict[str, Any]:
    """Values for the dev node: the images `hack/cluster.sh up` loaded (no registry), ports nobody else
    uses (pods share the host's network), the API server's own address (no kube-proxy routes the Service
    IP) and /healthz on the loopback for `helm test` (no cluster DNS)."""
    values: dict[str, Any] = {
        "watchNamespaces": [namespace],
        "image": {"repository": "directstream/operator", "tag": VERSION},
        "executors": {"image": {"repository": "directstream/executor", "tag": VERSION}},
        "operator": {
            "logFormat": "plain",
            "livenessPort": free_port(),
            # The pods share the host's network: the operator's servers stay on the loopback.
            "extraEnv": [
                {"name": "DIRECTSTREAM_LIVENESS_HOST", "value": "127.0.0.1"},
                {"name": "DIRECTSTREAM_METRICS_HOST", "value": "127.0.0.1"},
            ],
        },
        "metrics": {"port": free_port()},
        "tests": {"healthzHost": "127.0.0.1"},
    }
    if kube is not None:
        env = {e["name"]: e["value"] for e in kube.api_server_env()}
        values["apiServer"] = {
            "host": env["KUBERNETES_SERVICE_HOST"],
            "port": int(env["KUBERNETES_SERVICE_PORT"]),
        }
    values.update(overrides)
    return values


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def render(helm: Helm, namespace: str, values: str) -> list[dict[str, Any]]:
    out = helm("template", RELEASE, str(CHART), "-n", namespace, "--include-crds", "-f", values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def rules_of(doc: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    return {
        (group, res): rule["verbs"]
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
    }


def released_objects(kube: Kube, namespace: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={RELEASE}"
    kinds = "deployments,replicasets,pods,serviceaccounts,roles,rolebindings,services"
    names = kube.kubectl("get", kinds, "-n", namespace, "-l", selector, "-o", "name").stdout.split()
    cluster = kube.kubectl("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name").stdout
    return names + [n for n in cluster.split() if f"/{namespace}-{FULLNAME}" in n]


def operator_log(kube: Kube, namespace: str) -> str:
    pods = kube.kubectl(
        "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator", "-o", "name"
    ).stdout.split()
    return "".join(kube.pod_logs(namespace, pod.split("/", 1)[1], "operator") for pod in pods)


class Release:
    """`helm install` of the chart into the test namespace; always uninstalled (its ClusterRoles outlive the
    namespace), after the test's streams are deleted while the operator can still remove their finalizers."""

    def __init__(self, helm: Helm, kube: Kube, namespace: str, tmp_path: Path) -> None:
        self.helm, self.kube, self.namespace, self.tmp_path = helm, kube, namespace, tmp_path
        self.installed = False

    def install(self, values: dict[str, Any], *extra: str) -> float:
        started = time.monotonic()
        self.installed = True
        self.helm(
            "install", RELEASE, str(CHART), "-n", self.namespace, "-f", values_file(self.tmp_path, values),
            "--wait", "--timeout", "180s", *extra,
        )  # fmt: skip
        return time.monotonic() - started

    def uninstall(self) -> None:
        self.kube.kubectl(
            "delete", "directstreams", "--all", "-n", self.namespace, "--timeout=60s", check=False
        )
        self.helm("uninstall", RELEASE, "-n", self.namespace, "--wait", "--timeout", "120s", check=False)
        self.installed = False


@pytest.fixture
def release(helm: Helm, kube: Kube, crd: str, namespace: str, tmp_path: Path) -> Iterator[Release]:
    r = Release(helm, kube, namespace, tmp_path)
    try:
        yield r
    finally:
        if r.installed:
            r.uninstall()


def set_verbs(kube: Kube, namespace: str, index: int, verbs: list[str]) -> None:
    """Replace the verbs of rule ``index`` of the operator's Role."""
    patch = [{"op": "replace", "path": f"/rules/{index}/verbs", "value": verbs}]
    kube.kubectl("patch", "role", FULLNAME, "-n", namespace, "--type=json", "-p", json.dumps(patch))


def restricted_namespace(kube: Kube, namespace: str) -> None:
    """Enforce the `restricted` Pod Security Standard: a pod of the chart that breaks it is refused."""
    labels = [f"pod-security.kubernetes.io/{mode}=restricted" for mode in ("enforce", "warn")]
    kube.kubectl("label", "namespace", namespace, "--overwrite", *labels)


def jsonl_stream(host_volumes: HostVolumes, namespace: str, bootstrap: str, topic: str, volume: Path) -> str:
    """A jsonl stream writing to a PersistentVolumeClaim on ``volume`` (its files: ``volume/clicks``), with
    no securityContext of its own: the executors' defaults pass the `restricted` profile."""
    host_volumes.provide(namespace, "clicks-output", volume)
    return stream_manifest(
        "clicks",
        namespace,
        bootstrap,
        {
            "topics": [topic],
            "groupId": topic,
            "batchInterval": "1s",
            "executors": {
                "max": 2,
                "serviceAccountName": "directstream-executor",
                "volumes": [{"name": "output", "persistentVolumeClaim": {"claimName": "clicks-output"}}],
                "volumeMounts": [{"name": "output", "mountPath": "/data"}],
            },
            "processor": {"sink": "jsonl", "options": {"directory": "/data/clicks"}},
        },
    )


def assert_exactly_once(out: Path, latest: dict[tuple[str, int], int]) -> None:
    seen = jsonl_offsets(out)
    assert set(seen) == {(t, p, o) for (t, p), end in latest.items() for o in range(end)}
    assert max(seen.values()) == 1


def test_the_chart_lints_and_every_rendering_passes_the_api_server(
    helm: Helm, kube: Kube, crd: str, namespace: str, tmp_path: Path
):
    lint = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in lint.stdout and "[WARNING]" not in lint.stdout
    restricted_namespace(kube, namespace)
    variants = {
        "one namespace": chart_values(namespace),
        "two namespaces": chart_values(namespace, watchNamespaces=[namespace, "default"]),
        "cluster-wide, metrics off": chart_values(namespace, clusterWide=True, metrics={"enabled": False}),
    }
    for name, values in variants.items():
        docs = render(helm, namespace, values_file(tmp_path, values))
        applied = kube.kubectl(
            "apply", "--server-side", "--dry-run=server", "--force-conflicts", "--field-manager=chart-test",
            "-f", "-", input=yaml.safe_dump_all(docs), check=False,
        )  # fmt: skip
        assert applied.returncode == 0, f"{name}: {applied.stderr}"
        # Unknown fields, deprecated APIs and PodSecurity `restricted` violations all come back as warnings.
        assert "Warning" not in applied.stderr, f"{name}: {applied.stderr}"
        kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        deployment = kinds["Deployment", FULLNAME]
        assert deployment["spec"]["replicas"] == 1
        # The old and the new pod may overlap: only the Lease holder drives streams.
        assert deployment["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = container["args"]
        assert f"--leader-elect-resource-name={FULLNAME}" in args
        assert f"--leader-elect-resource-namespace={namespace}" in args
        identity = {
            e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e
        }
        assert identity == {"DIRECTSTREAM_POD_NAME": "metadata.name", "DIRECTSTREAM_POD_UID": "metadata.uid"}
        lease_role = kinds["Role", f"{FULLNAME}-leader-election"]
        assert lease_role["metadata"]["namespace"] == namespace and lease_role["rules"] == LEASE_RULES
        assert (
            kinds["RoleBinding", f"{FULLNAME}-leader-election"]["roleRef"]["name"]
            == lease_role["metadata"]["name"]
        )
        stream_roles = [
            d for d in docs if d["kind"] == "Role" and not d["metadata"]["name"].endswith("-leader-election")
        ]
        if values.get("clusterWide"):
            (role,) = [
                d
                for d in docs
                if d["kind"] == "ClusterRole" and not d["metadata"]["name"].endswith("-discovery")
            ]
            assert "--all-namespaces" in args and "--metrics-port=0" in args
            assert not stream_roles
        else:
            roles = stream_roles
            assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(values["watchNamespaces"])
            assert sorted(a for a in args if a.startswith("--namespace=")) == sorted(
                f"--namespace={ns}" for ns in values["watchNamespaces"]
            )
            assert f"--metrics-port={values['metrics']['port']}" in args
            role = roles[0]
        assert rules_of(role) == OPERATOR_RULES
        discovery = next(
            d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-discovery")
        )
        want = dict(DISCOVERY_RULES)
        if values.get("clusterWide"):
            del want["", "namespaces"]  # kopf only observes namespaces when it serves a list of them
        assert rules_of(discovery) == want
        # The chart's tag pins the executor image; the repository is passed either way.
        assert "--executor-repository=directstream/executor" in args
        assert f"--executor-image={EXECUTOR_IMAGE}" in args
    # Without a tag or digest the operator runs the executor image of its own version.
    values = chart_values(namespace, executors={"image": {"repository": "registry.local/executor"}})
    (deployment,) = [
        d for d in render(helm, namespace, values_file(tmp_path, values)) if d["kind"] == "Deployment"
    ]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--executor-repository=registry.local/executor" in args
    assert not [a for a in args if a.startswith("--executor-image")]
    # The ServiceMonitor's CRD is not installed here: check it against the Service instead.
    values = chart_values(
        namespace, metrics={"enabled": True, "port": 9191, "serviceMonitor": {"enabled": True}}
    )
    docs = render(helm, namespace, values_file(tmp_path, values))
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["spec"]["selector"].items()
    assert {"name": "metrics", "port": 9191, "targetPort": "metrics", "protocol": "TCP"} in service["spec"][
        "ports"
    ]


def test_wrong_values_fail_helm_install_with_the_schema_message(
    helm: Helm, kube: Kube, crd: str, namespace: str, tmp_path: Path
):
    wrong = {
        "replicaCount=-1": "at '/replicaCount': minimum: got -1, want 0",
        "operator.logLevel=trace": "at '/operator/logLevel': value must be one of 'info', 'debug'",
        "operator.logFormat=xml": "at '/operator/logFormat': value must be one of 'json', 'plain'",
        "image.repository=Not An Image": "at '/image/repository': 'Not An Image' does not match pattern",
        "watchNamespaces={team-*}": "at '/watchNamespaces/0': 'team-*' does not match pattern",
        "leaderElection.leaseDuration=1500ms": "at '/leaderElection/leaseDuration': '1500ms' does not match",
        "strategy.type=BlueGreen": "at '/strategy/type': value must be one of 'RollingUpdate', 'Recreate'",
    }
    for setting, message in wrong.items():
        proc = helm("install", RELEASE, str(CHART), "-n", namespace, "--set", setting, check=False)
        assert proc.returncode != 0, setting
        assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
        assert message in proc.stderr, proc.stderr
    assert helm("list", "-n", namespace, "-q").stdout.strip() == ""
    assert released_objects(kube, namespace) == []


@pytest.mark.kafka
def test_helm_install_runs_a_stream_exactly_once_and_uninstall_leaves_nothing(
    helm: Helm,
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    release: Release,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
    record_property: Any,
):
    restricted_namespace(kube, namespace)
    values = chart_values(namespace, kube)
    seconds = release.install(values)
    record_property("helm_install_wait_to_ready_seconds", round(seconds, 1))
    print(f"helm install --wait to Ready: {seconds:.1f}s")
    deployment = json.loads(kube.kubectl("get", "deployment", FULLNAME, "-n", namespace, "-o", "json").stdout)
    assert deployment["status"]["readyReplicas"] == 1
    granted = json.loads(kube.kubectl("get", "role", FULLNAME, "-n", namespace, "-o", "json").stdout)
    assert rules_of(granted) == OPERATOR_RULES
    # The operator pod took the Lease with the chart's RBAC, as <pod name>_<pod uid>.
    (pod,) = json.loads(
        kube.kubectl(
            "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator", "-o", "json"
        ).stdout
    )["items"]
    # A real container from the image hack/images.py built, run by containerd.
    (status,) = pod["status"]["containerStatuses"]
    assert status["image"].endswith(OPERATOR_IMAGE) and status["containerID"].startswith("containerd://")
    env = pod["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"].startswith("KUBERNETES_SERVICE_")] == kube.api_server_env()
    kube.wait_for(
        "the operator pod to hold the Lease",
        lambda: (
            lease_holder(kube, namespace, FULLNAME) == f"{pod['metadata']['name']}_{pod['metadata']['uid']}"
        ),
    )

    kafka.create_topic(topic_name, partitions=3)
    kafka.produce(topic_name, 1_500, partitions=3)
    out = tmp_path / "volume" / "clicks"
    stream = jsonl_stream(host_volumes, namespace, kafka.bootstrap, topic_name, tmp_path / "volume")
    kube.kubectl("apply", "-f", "-", input=stream)
    latest = latest_offsets(kafka.bootstrap, topic_name)
    wait_committed(kube, namespace, "clicks", latest)
    kube.kubectl("wait", "--for=condition=Ready", "directstream/clicks", "-n", namespace, "--timeout=60s")
    assert_exactly_once(out, latest)
    assert group_offsets(kafka.bootstrap, topic_name, topic_name) == latest
    # The executors ran from the executor image of the operator's version (their pods go with the Jobs;
    # the kubelet's events stay).
    pulled = kube.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "reason=Pulled",
        "-o",
        "jsonpath={.items[*].message}",
    ).stdout
    assert f'Container image "{EXECUTOR_IMAGE}" already present on machine' in pulled, pulled
    log = operator_log(kube, namespace)
    assert "forbidden" not in log.lower() and "Not enough permissions" not in log, log[-3000:]

    with urllib.request.urlopen(f"http://127.0.0.1:{values['metrics']['port']}/metrics", timeout=10) as r:
        assert r.status == 200 and b"# HELP" in r.read()
    tested = helm("test", RELEASE, "-n", namespace, "--timeout", "120s")
    assert "Phase:          Succeeded" in tested.stdout

    release.uninstall()
    kube.wait_for(
        "no objects of the release left", lambda: released_objects(kube, namespace) == [], timeout=60
    )
    assert helm("list", "-n", namespace, "-q").stdout.strip() == ""


@pytest.mark.kafka
def test_a_verb_missing_from_the_role_is_reported_on_the_stream(
    helm: Helm,
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    release: Release,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
):
    release.install(chart_values(namespace, kube))
    role = json.loads(kube.kubectl("get", "role", FULLNAME, "-n", namespace, "-o", "json").stdout)
    index = next(i for i, rule in enumerate(role["rules"]) if rule["resources"] == ["jobs"])
    without_create = [v for v in role["rules"][index]["verbs"] if v != "create"]
    set_verbs(kube, namespace, index, without_create)
    subject = f"--as=system:serviceaccount:{namespace}:{FULLNAME}"
    kube.wait_for(
        "the RBAC change to take effect",
        lambda: (
            kube.kubectl(
                "auth", "can-i", "create", "jobs", "-n", namespace, subject, check=False
            ).stdout.strip()
            == "no"
        ),
    )
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 200, partitions=2)
    out = tmp_path / "volume" / "clicks"
    stream = jsonl_stream(host_volumes, namespace, kafka.bootstrap, topic_name, tmp_path / "volume")
    kube.kubectl("apply", "-f", "-", input=stream)

    def degraded() -> dict[str, Any]:
        found = condition(get_stream(kube, namespace, "clicks"), "Degraded")
        return found if found.get("status") == "True" else {}

    reported = kube.wait_for("a Degraded condition", degraded, timeout=60)
    assert "forbidden" in reported["message"] and 'cannot create resource "jobs"' in reported["message"]
    events = kube.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=clicks"
    ).stdout
    assert 'cannot create resource "jobs"' in events
    assert committed_of(get_stream(kube, namespace, "clicks").get("status")) == {}
    assert not out.exists()

    # Give the verb back: the same recorded plan runs, and every record arrives once.
    set_verbs(kube, namespace, index, role["rules"][index]["verbs"])
    latest = latest_offsets(kafka.bootstrap, topic_name)
    wait_committed(kube, namespace, "clicks", latest, timeout=180)
    assert_exactly_once(out, latest)
