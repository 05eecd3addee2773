"""The distribution as the images install it: the wheel in a fresh virtualenv, without dev dependencies.

There is no image builder here, so this runs the Dockerfiles' own recipe (uv build, uv export of uv.lock,
uv pip install into a new venv) on this machine: the operator image's full set of runtime dependencies, and
the executor image's pruned set (no kopf, no Kubernetes client).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_ONLY = {"kopf", "kubernetes", "pyyaml", "prometheus-client"}


# uv as installed by `make install` (a module of the machine's Python), or on PATH.
_UV_ON_PATH = shutil.which("uv")
UV: tuple[str, ...] = (_UV_ON_PATH,) if _UV_ON_PATH else ("python3", "-m", "uv")


def run(*args: str | Path, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
        )
    return proc


def executor_prunes() -> list[str]:
    """The ``--prune`` arguments of Dockerfile.executor's ``uv export``."""
    lines = (ROOT / "Dockerfile.executor").read_text().splitlines()
    return [p for line in lines if not line.startswith("#") for p in re.findall(r"--prune (\S+)", line)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(*UV, "build", "--wheel", "--out-dir", out)
    (built,) = out.glob("directstream-*.whl")
    return built


def fresh_venv(where: Path, wheel: Path, requirements: Path) -> Path:
    venv = where / "venv"
    run(*UV, "venv", "--quiet", "--python", sys.executable, venv)
    target = f"--python={venv / 'bin' / 'python'}"
    run(*UV, "pip", "install", target, "--require-hashes", "--only-binary", ":all:", "-r", requirements)
    run(*UV, "pip", "install", target, "--no-deps", wheel)
    return venv / "bin"


def export(out: Path, *extra: str) -> Path:
    run(*UV, "export", "--frozen", "--no-dev", "--no-emit-project", "--quiet", "--output-file", out, *extra)
    return out


def test_the_wheel_carries_both_source_roots(wheel: Path):
    listing = run(sys.executable, "-m", "zipfile", "-l", wheel).stdout
    assert "directstream/operator/operator_main.py" in listing
    assert "directstream/executor/main.py" in listing
    assert "tests/" not in listing


def test_the_operator_image_set_runs_every_command(wheel: Path, tmp_path: Path):
    bin_dir = fresh_venv(tmp_path, wheel, export(tmp_path / "requirements.txt"))
    cli = run(bin_dir / "directstream", "--help", cwd=tmp_path)
    assert "run" in cli.stdout and "status" in cli.stdout
    operator = run(bin_dir / "directstream-operator", "--help", cwd=tmp_path)
    assert "--all-namespaces" in operator.stdout and "--executor-image" in operator.stdout
    executor = run(bin_dir / "directstream-executor", "--help", cwd=tmp_path)
    assert "--work-unit" in executor.stdout
    # No dev tool came along.
    assert run(bin_dir / "python", "-c", "import pytest", cwd=tmp_path, check=False).returncode != 0
    # The operator refuses to start without a scope: exit 2 with a message, before touching any API.
    no_scope = run(bin_dir / "directstream-operator", cwd=tmp_path, check=False)
    assert no_scope.returncode == 2 and "--namespace" in no_scope.stderr


def test_the_executor_image_set_has_no_kopf_and_no_kubernetes_client(wheel: Path, tmp_path: Path):
    prunes = executor_prunes()
    assert set(prunes) == OPERATOR_ONLY
    requirements = export(tmp_path / "requirements.txt", *(f"--prune={p}" for p in prunes))
    names = {re.split(r"[=;\s\[]", line)[0].lower() for line in requirements.read_text().splitlines()}
    assert "confluent-kafka" in names and not names & OPERATOR_ONLY
    bin_dir = fresh_venv(tmp_path, wheel, requirements)
    for module in ("kopf", "kubernetes", "yaml"):
        probe = run(bin_dir / "python", "-c", f"import {module}", cwd=tmp_path, check=False)
        assert probe.returncode != 0, f"{module} is importable in the executor set"
    assert "--work-unit" in run(bin_dir / "directstream-executor", "--help", cwd=tmp_path).stdout
    # The parquet sink's libraries are in the executor set (imported on first use only).
    run(bin_dir / "python", "-c", "import directstream.executor.processors.parquet, boto3", cwd=tmp_path)
    bad = run(bin_dir / "directstream-executor", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "bad input" in bad.stderr


def test_the_dockerfiles_follow_the_image_rules():
    for name in ("Dockerfile.operator", "Dockerfile.executor"):
        text = (ROOT / name).read_text()
        stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
        assert len(stages) == 2, f"{name}: a builder stage and a final stage"
        assert stages[0].splitlines()[0].endswith(" AS build")
        final = stages[1]
        assert final.startswith("${PYTHON_IMAGE}") and "python:3.11-slim" in text
        assert re.search(r"^USER [0-9]+:[0-9]+$", final, flags=re.MULTILINE), f"{name}: numeric USER"
        assert "uv " not in final and "pip install" not in final and "apt-get" not in final
        assert "COPY --from=build /opt/directstream /opt/directstream" in final
