"""Executor pods for real deployments (pure): restricted defaults and overrides, volumes and the scratch
emptyDir, pod metadata, the default image, and the cluster-mode checks (a jsonl directory on a volume)."""

from __future__ import annotations

import copy
import importlib.metadata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from directstream.executor.contract import KafkaClientSettings, OffsetRange, ProcessorSettings, WorkUnit
from directstream.operator.core.executor_pod import (
    DEFAULT_CONTAINER_SECURITY_CONTEXT,
    DEFAULT_EXECUTOR_REPOSITORY,
    DEFAULT_POD_SECURITY_CONTEXT,
    EXECUTOR_UID,
    cluster_spec_problems,
    default_executor_image,
    parse_cluster_spec,
)
from directstream.operator.core.manifests import LABEL_STREAM, build_executor_job
from directstream.operator.core.pinning import PinnedAttempt, pin
from directstream.operator.core.planning import BatchPlan
from directstream.operator.core.spec import SpecError, StreamSpec, parse_stream
from directstream.operator.operator_main import build_parser, executor_image
from tests.crd_support import MINIMAL

OWNER = {"apiVersion": "directstream.io/v1alpha1", "kind": "DirectStream", "name": "clicks", "uid": "u-1"}
PVC = {"name": "out", "persistentVolumeClaim": {"claimName": "clicks-out"}}
AT_DATA = {"name": "out", "mountPath": "/data"}


def stream(**executors: Any) -> dict[str, Any]:
    doc = copy.deepcopy(MINIMAL)  # jsonl into /data/out
    doc["spec"]["executors"] = executors
    return doc


def job_of(doc: dict[str, Any]) -> dict[str, Any]:
    spec = parse_stream(doc)
    unit = WorkUnit(
        stream=spec.name,
        batch_id=1,
        attempt=1,
        index=0,
        ranges=(OffsetRange("clicks", 0, 0, 10),),
        kafka=KafkaClientSettings("k:9092"),
        processor=ProcessorSettings("jsonl", {"directory": "/data/out"}),
    )
    return build_executor_job(
        spec, [unit], namespace="prod", owner=OWNER, image="img:1", secret_name=None, secret_keys=[]
    )


def pod_of(doc: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job_of(doc)["spec"]["template"]
    return pod


def container_of(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod_of(doc)["spec"]["containers"][0]
    return container


def problems(doc: dict[str, Any]) -> dict[str, str]:
    return {p.path: p.message for p in cluster_spec_problems(parse_stream(doc))}


def parse_problems(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        parse_stream(doc)
    return {p.path: p.message for p in caught.value.problems}


# --- restricted by default ----------------------------------------------------------------------------------


def passes_restricted(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """The `restricted` Pod Security Standard's checks (v1.36) that these pods could break."""
    failed = []

    def effective(key: str) -> Any:
        return container.get("securityContext", {}).get(key, pod.get("securityContext", {}).get(key))

    if effective("runAsNonRoot") is not True:
        failed.append("runAsNonRoot")
    if effective("runAsUser") == 0:
        failed.append("runAsUser")
    if (effective("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        failed.append("seccompProfile")
    security = container.get("securityContext", {})
    if security.get("allowPrivilegeEscalation") is not False:
        failed.append("allowPrivilegeEscalation")
    capabilities = security.get("capabilities") or {}
    if "ALL" not in capabilities.get("drop", []) or set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
        failed.append("capabilities")
    allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim"}
    allowed |= {"projected", "secret"}
    for volume in pod.get("volumes", []):
        if set(volume) - {"name"} - allowed:
            failed.append(f"volume {volume['name']}")
    return failed


def test_default_pods_pass_the_restricted_profile_and_have_a_read_only_root() -> None:
    template = pod_of(stream(volumes=[PVC], volumeMounts=[AT_DATA]))
    pod, (container,) = template["spec"], template["spec"]["containers"]
    assert passes_restricted(pod, container) == []
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": EXECUTOR_UID,
        "runAsGroup": EXECUTOR_UID,
        "fsGroup": EXECUTOR_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    # The read-only root filesystem leaves /tmp (and $TMPDIR) on an emptyDir for scratch.
    units = {"name": "directstream-work-units", "configMap": {"name": "clicks-b1-a1-units"}}
    assert pod["volumes"] == [PVC, {"name": "directstream-tmp", "emptyDir": {"sizeLimit": "1Gi"}}, units]
    assert container["volumeMounts"] == [
        AT_DATA,
        {"name": "directstream-tmp", "mountPath": "/tmp"},
        {"name": "directstream-work-units", "mountPath": "/var/run/directstream/units", "readOnly": True},
    ]
    assert {"name": "TMPDIR", "value": "/tmp"} in container["env"]


def test_the_image_user_is_the_one_the_dockerfile_sets() -> None:
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile.executor").read_text()
    assert f"USER {EXECUTOR_UID}:{EXECUTOR_UID}" in dockerfile.splitlines()


def test_each_security_field_can_be_overridden() -> None:
    doc = stream(
        securityContext={"runAsUser": 1000, "seccompProfile": {"type": "Localhost", "localhostProfile": "x"}},
        containerSecurityContext={"readOnlyRootFilesystem": False, "capabilities": {"add": ["NET_ADMIN"]}},
        volumes=[PVC],
        volumeMounts=[AT_DATA],
    )
    template = pod_of(doc)
    pod, container = template["spec"]["securityContext"], container_of(doc)["securityContext"]
    assert pod == {
        **DEFAULT_POD_SECURITY_CONTEXT,
        "runAsUser": 1000,
        "seccompProfile": {"type": "Localhost", "localhostProfile": "x"},
    }
    # A field replaces the default of its name as a whole: NET_ADMIN without dropping ALL.
    assert container == {
        **DEFAULT_CONTAINER_SECURITY_CONTEXT,
        "readOnlyRootFilesystem": False,
        "capabilities": {"add": ["NET_ADMIN"]},
    }
    failed = passes_restricted(template["spec"], container_of(doc))
    assert failed == ["capabilities"]  # what the override gave up, and nothing else
    # The defaults themselves are never changed by an override.
    assert DEFAULT_CONTAINER_SECURITY_CONTEXT["capabilities"] == {"drop": ["ALL"]}


def test_running_as_root_needs_run_as_non_root_false() -> None:
    root = stream(securityContext={"runAsUser": 0}, volumes=[PVC], volumeMounts=[AT_DATA])
    assert "set runAsNonRoot: false" in problems(root)["spec.executors.securityContext.runAsUser"]
    in_container = stream(containerSecurityContext={"runAsUser": 0}, volumes=[PVC], volumeMounts=[AT_DATA])
    assert "spec.executors.containerSecurityContext.runAsUser" in problems(in_container)
    allowed = stream(
        securityContext={"runAsUser": 0, "runAsNonRoot": False}, volumes=[PVC], volumeMounts=[AT_DATA]
    )
    assert problems(allowed) == {}
    # The container's runAsNonRoot wins over the pod's, as in Kubernetes.
    mixed = stream(
        securityContext={"runAsUser": 0, "runAsNonRoot": False},
        containerSecurityContext={"runAsNonRoot": True},
        volumes=[PVC],
        volumeMounts=[AT_DATA],
    )
    assert "spec.executors.securityContext.runAsUser" in problems(mixed)


def test_settings_in_the_wrong_security_context_are_named() -> None:
    found = parse_problems(
        stream(
            securityContext={"readOnlyRootFilesystem": True, "runAsUsr": 5},
            containerSecurityContext={"fsGroup": 5, "runAsUser": -1, "privileged": "no"},
        )
    )
    assert (
        "put it under spec.executors.containerSecurityContext"
        in found["spec.executors.securityContext.readOnlyRootFilesystem"]
    )
    assert "did you mean 'runAsUser'?" in found["spec.executors.securityContext.runAsUsr"]
    assert (
        "put it under spec.executors.securityContext"
        in found["spec.executors.containerSecurityContext.fsGroup"]
    )
    assert "must be >= 0" in found["spec.executors.containerSecurityContext.runAsUser"]
    assert "expected a boolean" in found["spec.executors.containerSecurityContext.privileged"]


# --- volumes ------------------------------------------------------------------------------------------------


def test_a_volume_of_the_users_own_at_tmp_replaces_the_scratch_emptydir() -> None:
    scratch = {"name": "scratch", "emptyDir": {"medium": "Memory"}}
    doc = stream(
        volumes=[PVC, scratch],
        volumeMounts=[AT_DATA, {"name": "scratch", "mountPath": "/tmp/"}],
        env=[{"name": "TMPDIR", "value": "/tmp/mine"}],
    )
    pod, container = pod_of(doc)["spec"], container_of(doc)
    assert pod["volumes"][:2] == [PVC, scratch]
    assert [m["mountPath"] for m in container["volumeMounts"]] == [
        "/data",
        "/tmp/",
        "/var/run/directstream/units",
    ]
    assert [e for e in container["env"] if e["name"] == "TMPDIR"] == [
        {"name": "TMPDIR", "value": "/tmp/mine"}
    ]


@pytest.mark.parametrize(
    ("executors", "path", "message"),
    [
        ({"volumes": [{"persistentVolumeClaim": {"claimName": "c"}}]}, "volumes.0.name", "needs a name"),
        ({"volumes": [{"name": "Out", "emptyDir": {}}]}, "volumes.0.name", "needs a name"),
        (
            {"volumes": [{"name": ["out"], "emptyDir": {}}], "volumeMounts": [AT_DATA]}, "volumes.0.name",
            "needs a name",
        ),
        ({"volumes": [PVC, PVC]}, "volumes.1.name", "listed twice"),
        ({"volumes": [{"name": "directstream-tmp", "emptyDir": {}}]}, "volumes.0.name", "scratch volume"),
        ({"volumes": [{"name": "directstream-work-units", "emptyDir": {}}]}, "volumes.0.name", "units"),
        ({"volumes": [{"name": "v"}]}, "volumes.0", "exactly one volume source"),
        ({"volumes": [{"name": "v", "emptyDir": {}, "nfs": {}}]}, "volumes.0", "got emptyDir, nfs"),
        ({"volumes": [{"name": "v", "emptyDri": {}}]}, "volumes.0.emptyDri", "did you mean 'emptyDir'?"),
        ({"volumes": [{"name": "v", "emptyDir": "yes"}]}, "volumes.0.emptyDir", "expected a mapping"),
        (
            {"volumes": [{"name": "v", "persistentVolumeClaim": {}}]},
            "volumes.0.persistentVolumeClaim.claimName",
            "required",
        ),
        ({"volumes": [{"name": f"v{i}", "emptyDir": {}} for i in range(65)]}, "volumes", "at most 64"),
        ({"volumeMounts": [AT_DATA]}, "volumeMounts.0.name", "add {name: out, ...} to spec.executors"),
        ({"volumes": [PVC], "volumeMounts": [{"name": "out"}]}, "volumeMounts.0.mountPath", "absolute path"),
        (
            {"volumes": [PVC], "volumeMounts": [{"name": "out", "mountPath": "data"}]},
            "volumeMounts.0.mountPath",
            "absolute path",
        ),
        ({"volumes": [PVC], "volumeMounts": [AT_DATA, AT_DATA]}, "volumeMounts.1.mountPath", "mounted twice"),
        (
            {"volumes": [PVC], "volumeMounts": [{**AT_DATA, "mountpath": "/x"}]},
            "volumeMounts.0.mountpath",
            "did you mean 'mountPath'?",
        ),
        ({"podLabels": {"directstream.io/stream": "x"}}, "podLabels.directstream.io/stream", "reserved"),
        ({"podLabels": {"app.kubernetes.io/name": "x"}}, "podLabels.app.kubernetes.io/name", "reserved"),
        ({"podLabels": {"job-name": "x"}}, "podLabels.job-name", "reserved"),
        ({"podLabels": {"team": "a b"}}, "podLabels.team", "not a valid label value"),
        ({"podLabels": {"/team": "a"}}, "podLabels./team", "not a valid key"),
        ({"podLabels": {"Example.com/team": "a"}}, "podLabels.Example.com/team", "not a valid key"),
        (
            {"podAnnotations": {"batch.kubernetes.io/x": "3"}}, "podAnnotations.batch.kubernetes.io/x",
            "reserved",
        ),
        ({"priorityClassName": "Batch"}, "priorityClassName", "not a valid PriorityClass name"),
        ({"imagePullPolicy": "Sometimes"}, "imagePullPolicy", "expected one of Always, IfNotPresent, Never"),
        ({"imagePullSecrets": [{}]}, "imagePullSecrets.0.name", "required"),
        ({"affinity": {"nodeAfinity": {}}}, "affinity.nodeAfinity", "did you mean 'nodeAffinity'?"),
    ],
)  # fmt: skip
def test_bad_pod_settings_are_refused_in_both_modes(
    executors: dict[str, Any], path: str, message: str
) -> None:
    found = parse_problems(stream(**executors))
    assert message in found[f"spec.executors.{path}"], found


def test_pod_settings_reach_the_pod() -> None:
    doc = stream(
        volumes=[PVC],
        volumeMounts=[AT_DATA],
        podLabels={"team": "ads"},
        podAnnotations={"sidecar.istio.io/inject": "false"},
        priorityClassName="batch-low",
        imagePullPolicy="IfNotPresent",
        imagePullSecrets=[{"name": "registry"}],
        affinity={"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    )
    template = pod_of(doc)
    assert template["metadata"]["labels"]["team"] == "ads"
    assert template["metadata"]["labels"][LABEL_STREAM] == "clicks"  # ours are still there
    assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert "team" not in job_of(doc)["metadata"]["labels"]  # the pods', not the Job's
    pod = template["spec"]
    assert pod["priorityClassName"] == "batch-low"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["affinity"] == {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    assert container_of(doc)["imagePullPolicy"] == "IfNotPresent"


# --- the jsonl directory on a durable volume ----------------------------------------------------------------

DIRECTORY = "spec.processor.options.directory"


def test_jsonl_without_a_volume_is_refused_on_a_cluster_only() -> None:
    doc = stream()
    message = problems(doc)[DIRECTORY]
    assert "/data/out is not on a volume mounted in the executor pods" in message
    assert "persistentVolumeClaim: {claimName: <claim>}" in message
    assert "volumeMounts: [{name: output, mountPath: /data/out}]" in message
    assert parse_stream(doc).processor.sink == "jsonl"  # local mode: fine
    with pytest.raises(SpecError, match="not on a volume mounted"):
        parse_cluster_spec("clicks", doc["spec"])


@pytest.mark.parametrize(
    ("volumes", "mounts", "directory", "verdict"),
    [
        ([PVC], [AT_DATA], "/data/out", None),
        ([PVC], [AT_DATA], "/data", None),
        ([PVC], [{"name": "out", "mountPath": "/data/"}], "/data/out/", None),
        ([PVC], [{"name": "out", "mountPath": "/"}], "/anything", None),
        ([{"name": "out", "nfs": {"server": "nas", "path": "/x"}}], [AT_DATA], "/data/out", None),
        ([PVC], [AT_DATA], "/database/out", "not on a volume"),
        ([PVC], [AT_DATA], "/data/../etc", "not on a volume"),
        ([PVC], [AT_DATA], "data/out", "must be an absolute path"),
        ([PVC], [], "/tmp/out", "not on a volume"),  # the scratch emptyDir does not count
        ([{"name": "out", "emptyDir": {}}], [AT_DATA], "/data/out", "an emptyDir, deleted with each"),
        ([{"name": "out", "configMap": {"name": "c"}}], [AT_DATA], "/data/out", "read-only"),
        ([PVC], [{**AT_DATA, "readOnly": True}], "/data/out", "mounted read-only"),
        (
            [{"name": "out", "persistentVolumeClaim": {"claimName": "c", "readOnly": True}}],
            [AT_DATA],
            "/data/out",
            "mounted read-only",
        ),
        # The deepest mount holds the directory.
        (
            [PVC, {"name": "tmp", "emptyDir": {}}],
            [AT_DATA, {"name": "tmp", "mountPath": "/data/tmp"}],
            "/data/tmp/out",
            "an emptyDir",
        ),
        (
            [PVC, {"name": "tmp", "emptyDir": {}}],
            [AT_DATA, {"name": "tmp", "mountPath": "/data/tmp"}],
            "/data/tmpfiles",
            None,
        ),
    ],
)
def test_where_the_jsonl_directory_may_be(
    volumes: list[Any], mounts: list[Any], directory: str, verdict: str | None
) -> None:
    doc = stream(volumes=volumes, volumeMounts=mounts)
    doc["spec"]["processor"]["options"]["directory"] = directory
    found = problems(doc).get(DIRECTORY)
    if verdict is None:
        assert found is None
    else:
        assert found is not None and verdict in found


def test_parquet_into_a_directory_needs_a_volume_and_into_s3_does_not() -> None:
    doc = stream()
    doc["spec"]["processor"] = {"sink": "parquet", "options": {"url": "/data/clicks"}}
    assert "/data/clicks is not on a volume mounted" in problems(doc)["spec.processor.options.url"]
    doc["spec"]["executors"] = {"volumes": [PVC], "volumeMounts": [AT_DATA]}
    assert problems(doc) == {}
    doc = stream()
    doc["spec"]["processor"] = {"sink": "parquet", "options": {"url": "s3://bucket/clicks"}}
    assert problems(doc) == {}


def test_other_sinks_need_no_volume() -> None:
    doc = stream()
    doc["spec"]["processor"] = {"sink": "count"}
    assert problems(doc) == {}
    assert isinstance(parse_cluster_spec("clicks", doc["spec"]), StreamSpec)


# --- the default image --------------------------------------------------------------------------------------


def test_the_default_image_is_the_repository_at_the_version() -> None:
    assert default_executor_image(DEFAULT_EXECUTOR_REPOSITORY, "0.1.0") == "directstream/executor:0.1.0"
    assert (
        default_executor_image("reg:5000/x/executor", "0.2.0+g12ab.dirty")
        == "reg:5000/x/executor:0.2.0-g12ab.dirty"
    )
    assert default_executor_image("r/e", "1.0.0rc1") == "r/e:1.0.0rc1"


def test_the_operator_defaults_to_the_executor_image_of_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    version = importlib.metadata.version("directstream")

    def resolved(*argv: str) -> str:
        return executor_image(build_parser().parse_args(["--namespace", "streams", *argv]))

    monkeypatch.delenv("DIRECTSTREAM_EXECUTOR_IMAGE", raising=False)
    monkeypatch.delenv("DIRECTSTREAM_EXECUTOR_REPOSITORY", raising=False)
    assert resolved() == f"directstream/executor:{version}"
    assert resolved("--executor-repository", "reg.local/exec") == f"reg.local/exec:{version}"
    assert resolved("--executor-image", "reg.local/exec@sha256:ab") == "reg.local/exec@sha256:ab"


POD_KEYS = [
    "securityContext", "containerSecurityContext", "volumes", "volumeMounts", "podLabels", "podAnnotations",
    "priorityClassName", "imagePullPolicy", "imagePullSecrets", "affinity",
]  # fmt: skip
pod_keys = st.sampled_from(
    ["name", "mountPath", "emptyDir", "persistentVolumeClaim", "claimName", "readOnly"]
)
junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.sampled_from(["out", "/data", "/tmp"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(pod_keys | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(POD_KEYS), junk, max_size=5))
def test_junk_pod_settings_never_crash_the_parser_the_checks_or_the_builder(
    executors: dict[str, Any],
) -> None:
    doc = stream(**executors)
    try:
        spec = parse_stream(doc)
    except SpecError as exc:
        assert exc.problems and all(p.path and p.message for p in exc.problems)
        return
    cluster_spec_problems(spec)
    job_of(doc)


def test_the_pod_settings_are_pinned_with_the_attempt() -> None:
    plan = BatchPlan(batch_id=3, ranges=(OffsetRange("clicks", 0, 0, 10),))
    every = stream(
        volumes=[PVC],
        volumeMounts=[AT_DATA],
        securityContext={"runAsUser": 1000},
        containerSecurityContext={"readOnlyRootFilesystem": False},
        podLabels={"team": "ads"},
        podAnnotations={"a": "b"},
        priorityClassName="batch-low",
        imagePullPolicy="Always",
        imagePullSecrets=[{"name": "registry"}],
        affinity={"nodeAffinity": {}},
    )
    pinned = pin(parse_stream(every), plan)
    # A retry rebuilds its Job from the record: every pod setting comes back as it was planned.
    assert PinnedAttempt.from_json(pinned.to_json()).executors == parse_stream(every).executors
    moved = copy.deepcopy(every)
    moved["spec"]["executors"]["volumeMounts"] = [{"name": "out", "mountPath": "/elsewhere"}]
    assert pin(parse_stream(moved), plan).digest != pinned.digest


def test_pool_mode_is_refused_by_an_operator_without_a_pool_endpoint_with_a_message_naming_the_flag() -> None:
    assert problems(stream(mode="pool"))["spec.executors.mode"] == (
        "pool mode on a cluster needs the operator's pool endpoint, which this operator does not serve "
        "(directstream-operator --pool-port PORT; the chart: pool.enabled); use job, or local mode "
        "(directstream run)"
    )
    served = cluster_spec_problems(
        parse_stream(stream(mode="pool", volumes=[PVC], volumeMounts=[AT_DATA])), True
    )
    assert "spec.executors.mode" not in {p.path for p in served}
    assert "spec.executors.mode" not in problems(stream(mode="job"))
    assert parse_stream(stream(mode="pool", max=3)).executors.mode == "pool"
    assert parse_problems(stream(mode="warm")) == {
        "spec.executors.mode": "expected one of job, pool, got a string ('warm')"
    }
