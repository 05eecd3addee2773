"""A minimal image writer (standard library only): layers from directories or tar streams, an OCI image
config, and an archive that ``ctr images import`` reads.

Layers are uncompressed tars with every entry owned by root, mtime fixed and entries sorted, so the same
inputs give the same digests. The archive is in `docker save`'s layout (``manifest.json`` naming the config
and layer blobs under ``blobs/sha256``) without ``oci-layout``: for that layout containerd normalises the
RepoTags on import exactly as the kubelet normalises a Pod's image name, whereas an OCI layout's ref.name
is imported verbatim (and the Pod's image is then not found).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

MTIME = 0
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class Blob:
    path: Path  # a file holding the bytes
    digest: str  # sha256:...
    size: int
    media_type: str


@dataclass
class LayerWriter:
    """Collects entries (in any order) and writes them sorted, normalised, to a tar file."""

    entries: dict[str, tuple[tarfile.TarInfo, bytes | Path | None]] = field(default_factory=dict)

    def add(self, info: tarfile.TarInfo, data: bytes | Path | None = None) -> None:
        name = _clean(info.name)
        if not name:
            return
        info.name = name
        if info.islnk():
            info.linkname = _clean(info.linkname)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = MTIME
        info.pax_headers = {}
        self.entries[name] = (info, data)

    def add_file(self, name: str, content: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mode = mode
        self.add(info, content)

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        self.add(info)

    def add_symlink(self, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
        self.add(info)

    def add_tree(self, root: Path, prefix: str) -> None:
        """Every file under root, as prefix/relative path (parents of prefix too)."""
        parts = prefix.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self.add_dir("/".join(parts[:i]))
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in [*dirnames, *sorted(filenames)]:
                path = Path(dirpath) / name
                rel = f"{prefix.strip('/')}/{path.relative_to(root).as_posix()}"
                st = path.lstat()
                info = tarfile.TarInfo(rel)
                info.mode = st.st_mode & 0o7777
                if path.is_symlink():
                    info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                    self.add(info)
                elif path.is_dir():
                    info.type = tarfile.DIRTYPE
                    self.add(info)
                else:
                    info.size = st.st_size
                    self.add(info, path)

    def add_tar(self, source: Path, skip: Iterable[str] = ()) -> None:
        """Copy a tar's entries but devices (the runtime provides /dev) and the names in `skip`."""
        skipped = {s.strip("/") for s in skip}
        with tarfile.open(source) as tar:
            for info in tar:
                if info.isdev() or _clean(info.name) in skipped:
                    continue
                data: bytes | None = None
                if info.isreg():
                    f = tar.extractfile(info)
                    data = f.read() if f is not None else b""
                self.add(info, data)

    def write(self, out: Path) -> Blob:
        with tarfile.open(out, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name in sorted(self.entries):
                info, data = self.entries[name]
                if isinstance(data, Path):
                    with open(data, "rb") as src:
                        tar.addfile(info, src)
                elif data is not None:
                    tar.addfile(info, io.BytesIO(data))
                else:
                    tar.addfile(info)
        return layer_from_file(out)


def _clean(name: str) -> str:
    name = name.removeprefix("./").lstrip("/").rstrip("/")
    return "" if name == "." else name


def _json_blob(obj: Any, media_type: str, directory: Path) -> Blob:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    path = directory / digest
    path.write_bytes(data)
    return Blob(path, f"sha256:{digest}", len(data), media_type)


def _descriptor(blob: Blob) -> dict[str, Any]:
    return {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}


def diff_id(blob: Blob) -> str:
    return blob.digest  # uncompressed layers: the diff id is the layer digest


def write_image(
    out: Path, name: str, layers: list[Blob], config: dict[str, Any], labels: dict[str, str] | None = None
) -> str:
    """An archive at `out` holding one linux/amd64 image named `name`; returns its OCI manifest's digest
    (containerd computes its own manifest on import; this one identifies the content)."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmpdir = Path(tmp)
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {**config, "Labels": labels or {}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id(b) for b in layers]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/images.py"} for _ in layers],
        }
        cfg = _json_blob(image_config, CONFIG_TYPE, tmpdir)
        manifest = _json_blob(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": _descriptor(cfg),
                "layers": [_descriptor(b) for b in layers],
            },
            MANIFEST_TYPE,
            tmpdir,
        )
        docker_manifest = [
            {
                "Config": _blob_path(cfg),
                "RepoTags": [name],
                "Layers": [_blob_path(b) for b in layers],
            }
        ]
        partial = out.with_suffix(".partial")
        with tarfile.open(partial, "w", format=tarfile.GNU_FORMAT) as tar:
            for arcname, data in (("manifest.json", json.dumps(docker_manifest).encode()),):
                info = tarfile.TarInfo(arcname)
                info.size, info.mtime = len(data), MTIME
                tar.addfile(info, io.BytesIO(data))
            seen = set()
            for blob in [cfg, *layers]:
                if blob.digest in seen:
                    continue
                seen.add(blob.digest)
                info = tarfile.TarInfo(_blob_path(blob))
                info.size, info.mtime = blob.size, MTIME
                with open(blob.path, "rb") as f:
                    tar.addfile(info, f)
        os.replace(partial, out)
        return manifest.digest


def _blob_path(blob: Blob) -> str:
    return f"blobs/sha256/{blob.digest.removeprefix('sha256:')}"


def layer_from_file(path: Path) -> Blob:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return Blob(path, f"sha256:{h.hexdigest()}", path.stat().st_size, LAYER_TYPE)


def read_image(archive: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, config) of the images in an archive written by write_image (for tests)."""
    with tarfile.open(archive) as tar:
        docker = json.load(_member(tar, "manifest.json"))
        for entry in docker:
            cfg = json.load(_member(tar, entry["Config"]))
            for tag in entry["RepoTags"]:
                yield tag, cfg


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    f = tar.extractfile(name)
    if f is None:
        raise ValueError(f"{name} is not a file in the archive")
    return f


def copy_blob(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
