"""``kubectl directstream`` end to end: the plugin as a subprocess (and once through the built
kubectl's plugin discovery) against a stream driven by the real operator, API server and Kafka."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from directstream.operator.core.status import state_from_status
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import latest_offsets
from tests.harness.operator_fixtures import (
    VENV_BIN,
    OperatorProcess,
    get_stream,
    stream_manifest,
    wait_committed,
    wait_until,
)

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]

PLUGIN = "kubectl-directstream"


@pytest.fixture
def plugin_bin(tmp_path: Path) -> Path:
    """A directory holding ``kubectl-directstream``: the installed console script, or (before
    the package is reinstalled with it) an equivalent script."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    installed = VENV_BIN / PLUGIN
    script = bin_dir / PLUGIN
    if installed.exists():
        script.symlink_to(installed)
    else:
        script.write_text(
            f"#!{sys.executable}\nfrom directstream.operator.kubectl_plugin import main\nmain()\n"
        )
        script.chmod(0o755)
    return bin_dir


def plugin(
    kube: Kube, bin_dir: Path, *args: str, kubeconfig: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": kubeconfig or kube.kubeconfig}
    return subprocess.run(
        [str(bin_dir / PLUGIN), *args], capture_output=True, text=True, timeout=180, env=env, check=False
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr}{proc.stdout}"
    assert not proc.stderr.strip() or "Traceback" not in proc.stderr
    return proc.stdout


def rows(text: str, first: str) -> list[list[str]]:
    """The rows of the table whose header starts with ``first``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    out = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        out.append(line.split())
    return out


def sa_kubeconfig(kube: Kube, namespace: str, tmp_path: Path) -> str:
    """A kubeconfig for a ServiceAccount with no RBAC at all (every request is forbidden)."""
    kube.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = kube.kubectl("create", "token", "nobody", "-n", namespace, "--duration=10m").stdout.strip()
    admin = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        cluster["certificate-authority-data"] = base64.b64encode(
            Path(cluster.pop("certificate-authority")).read_bytes()
        ).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "nobody", "user": {"token": token}}],
        "contexts": [
            {"name": "nobody", "context": {"cluster": "test", "user": "nobody", "namespace": namespace}}
        ],
        "current-context": "nobody",
    }
    path = tmp_path / "nobody.kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_the_plugin_shows_plans_suspends_resumes_and_rewinds_a_running_stream(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    topic_name: str,
    plugin_bin: Path,
    tmp_path: Path,
):
    kafka.create_topic(topic_name, partitions=2)
    kafka.produce(topic_name, 300, partitions=2)
    spec = {"topics": [topic_name], "batchInterval": "1s", "processor": {"sink": "count"}}
    kube.kubectl("apply", "-f", "-", input=stream_manifest("ctl", namespace, kafka.bootstrap, spec))
    latest = latest_offsets(kafka.bootstrap, topic_name)
    wait_committed(kube, namespace, "ctl", latest)
    ns = ("-n", namespace)

    # status: the committed offsets and lag per partition, recent batches and conditions as tables.
    out = ok(plugin(kube, plugin_bin, "status", "ctl", *ns))
    assert "Phase:      Running" in out and "300 committed (all time)" in out
    assert {(r[0], int(r[1]), int(r[2].replace(",", "")), r[3]) for r in rows(out, "TOPIC")} == {
        (topic_name, p, end, "0") for (_, p), end in latest.items()
    }
    batches = rows(out, "BATCH")
    assert batches and sum(int(r[3].replace(",", "")) for r in batches) == 300
    conditions = {r[0]: r[1] for r in rows(out, "TYPE")}
    assert conditions == {"Ready": "True", "Progressing": conditions["Progressing"], "Degraded": "False"}

    # The same through the built kubectl's plugin discovery (flags after the plugin's name).
    env = {
        **os.environ,
        "KUBECONFIG": kube.kubeconfig,
        "PATH": f"{plugin_bin}:{kube.bin_dir}:{os.environ['PATH']}",
    }
    via_kubectl = subprocess.run(
        [str(kube.bin_dir / "kubectl"), "directstream", "status", "ctl", *ns],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert via_kubectl.returncode == 0, via_kubectl.stderr
    assert "Committed offsets:" in via_kubectl.stdout and topic_name in via_kubectl.stdout

    # suspend: the operator stops at a batch boundary; plan shows what would run next.
    assert "suspended" in ok(plugin(kube, plugin_bin, "suspend", "ctl", *ns, "--wait", "--timeout", "60"))
    assert get_stream(kube, namespace, "ctl")["status"]["phase"] == "Suspended"
    kafka.produce(topic_name, 100, partitions=2)
    grown = latest_offsets(kafka.bootstrap, topic_name)
    out = ok(plugin(kube, plugin_bin, "plan", "ctl", *ns))
    assert "next batch" in out and "100 offsets" in out
    planned = {(r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows(out, "EXECUTOR")}
    assert planned == {(topic_name, p, latest[(t, p)], grown[(t, p)]) for (t, p) in latest}
    assert state_from_status(get_stream(kube, namespace, "ctl")["status"]).committed == latest, (
        "plan writes nothing"
    )

    ok(plugin(kube, plugin_bin, "resume", "ctl", *ns, "--wait", "--timeout", "60"))
    wait_committed(kube, namespace, "ctl", grown)

    # rewind: a fresh spec.reset id, applied by the operator; every record is processed again.
    out = ok(plugin(kube, plugin_bin, "rewind", "ctl", *ns, "--to", "earliest"))
    reset_id = get_stream(kube, namespace, "ctl")["spec"]["reset"]["id"]
    assert reset_id.startswith("rewind-") and reset_id in out
    stream = wait_until(
        "the rewind to be applied and the records re-processed",
        lambda: (
            s
            if (s := get_stream(kube, namespace, "ctl"))["status"].get("appliedReset") == reset_id
            and s["status"]["recordsTotal"] == 800
            else None
        ),
        timeout=120,
    )
    assert state_from_status(stream["status"]).committed == grown
    assert f"Reset:      applied {reset_id}" in ok(plugin(kube, plugin_bin, "status", "ctl", *ns))

    # Clear errors, no tracebacks: bad --to (2), unknown topic (2), not found (1), forbidden (1).
    bad = plugin(kube, plugin_bin, "rewind", "ctl", *ns, "--to", "yesterday")
    assert bad.returncode == 2 and "--to 'yesterday'" in bad.stderr and "Traceback" not in bad.stderr
    other = plugin(kube, plugin_bin, "rewind", "ctl", *ns, "--to", "elsewhere:0=5")
    assert other.returncode == 2 and "not subscribed" in other.stderr, other.stderr
    missing = plugin(kube, plugin_bin, "status", "nope", *ns)
    assert missing.returncode == 1 and 'directstream "nope" not found' in missing.stderr
    nobody = sa_kubeconfig(kube, namespace, tmp_path)
    forbidden = plugin(kube, plugin_bin, "suspend", "ctl", kubeconfig=nobody)  # namespace from the context
    assert forbidden.returncode == 1 and "forbidden" in forbidden.stderr, forbidden.stderr
    assert "Traceback" not in forbidden.stderr + missing.stderr + other.stderr
    assert get_stream(kube, namespace, "ctl")["spec"].get("suspend") is not True
