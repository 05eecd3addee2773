"""The two image recipes agree: hack/images.py (what `make images` builds here) and the Dockerfiles (the
way to build elsewhere) give the same entry point, user, environment, working directory, ports, Python and
dependency set. Also the image writer (hack/oci.py): reproducible layers and an archive containerd reads."""

from __future__ import annotations

import json
import re
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
import images  # noqa: E402
import oci  # noqa: E402


def dockerfile(kind: str) -> str:
    return (ROOT / f"Dockerfile.{kind}").read_text()


def final_stage(kind: str) -> str:
    """The Dockerfile's last stage (what the image is made of)."""
    return dockerfile(kind).rsplit("\nFROM ", 1)[1]


def instruction(kind: str, name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name} (.+)$", final_stage(kind), re.MULTILINE)]


def env_of(kind: str) -> dict[str, str]:
    """The final stage's ENV (one instruction continued over lines)."""
    m = re.search(r"^ENV ((?:.*\\\n)*.*)$", final_stage(kind), re.MULTILINE)
    assert m, f"Dockerfile.{kind} has no ENV"
    pairs = m.group(1).replace("\\\n", " ").split()
    return dict(p.split("=", 1) for p in pairs)


@pytest.mark.parametrize("kind", ["operator", "executor"])
def test_entry_point_user_workdir_and_ports_agree(kind: str) -> None:
    cfg = images.image_config(kind)
    assert instruction(kind, "ENTRYPOINT") == [json.dumps(cfg["Entrypoint"])]
    assert instruction(kind, "USER") == [cfg["User"]] == ["10001:10001"]
    assert instruction(kind, "WORKDIR") == [cfg["WorkingDir"]]
    exposed = cfg["ExposedPorts"]
    assert isinstance(exposed, dict)
    assert [f"{p}/tcp" for p in instruction(kind, "EXPOSE")] == list(exposed)


@pytest.mark.parametrize("kind", ["operator", "executor"])
def test_environment_agrees(kind: str) -> None:
    ours = dict(e.split("=", 1) for e in images.ENV)
    theirs = env_of(kind)
    assert theirs.pop("PATH") == f"{images.VENV}/bin:$PATH"
    assert ours.pop("PATH").startswith(f"{images.VENV}/bin:")
    assert ours == theirs


@pytest.mark.parametrize("kind", ["operator", "executor"])
def test_same_python_virtualenv_and_dependencies(kind: str) -> None:
    text = dockerfile(kind)
    m = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)-", text, re.MULTILINE)
    assert m and m.group(1) == images.PYTHON
    assert f"COPY --from=build {images.VENV} {images.VENV}" in text
    runs = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert re.findall(r"--prune (\S+)", runs) == list(images.PRUNE[kind])
    assert "--require-hashes --only-binary :all:" in text  # as images.py installs them


def test_the_entry_points_written_are_the_wheels(tmp_path: Path) -> None:
    info = tmp_path / "directstream-0.1.0.dist-info"
    info.mkdir()
    (info / "entry_points.txt").write_text("[console_scripts]\na = x.y:main\n\n[other]\nb = z:w\n")
    assert images.entry_points(tmp_path) == {"a": "x.y:main"}


def _layer(tmp_path: Path, name: str) -> oci.Blob:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True, exist_ok=True)
    (src / "pkg" / "mod.py").write_text("X = 1\n")
    (src / "run").write_text("#!/bin/sh\n")
    (src / "run").chmod(0o755)
    layer = oci.LayerWriter()
    layer.add_tree(src, "opt/app")
    layer.add_file("etc/passwd", images.PASSWD.encode())
    layer.add_symlink("opt/app/python", "/usr/bin/python3")
    return layer.write(tmp_path / name)


def test_layers_are_reproducible_and_owned_by_root(tmp_path: Path) -> None:
    first = _layer(tmp_path, "a.tar")
    second = _layer(tmp_path, "b.tar")
    assert first.digest == second.digest
    with tarfile.open(first.path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert "opt/app/pkg/mod.py" in names and "opt" in names and "opt/app" in names
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, 0)}
    assert next(m for m in members if m.name == "opt/app/run").mode == 0o755


def test_the_archive_names_the_image_and_its_config(tmp_path: Path) -> None:
    layer = _layer(tmp_path, "l.tar")
    out = tmp_path / "image.tar"
    oci.write_image(out, "directstream/executor:9.9.9", [layer], images.image_config("executor"))
    [(name, cfg)] = list(oci.read_image(out))
    assert name == "directstream/executor:9.9.9"
    assert cfg["config"]["User"] == "10001:10001"
    assert cfg["config"]["Entrypoint"] == ["directstream-executor"]
    assert cfg["rootfs"]["diff_ids"] == [layer.digest]
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        manifest: list[dict[str, Any]] = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    # docker-save layout without oci-layout: containerd normalises RepoTags as the kubelet does.
    assert "oci-layout" not in names
    assert set(manifest[0]["Layers"]) <= names and manifest[0]["Config"] in names
