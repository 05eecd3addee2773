#!/usr/bin/env python3
"""Build the operator and executor images without a daemon or a registry, and load them into the dev node.

    images.py build                 build both (cached), print their archives
    images.py load --address SOCK   build if needed, import into containerd (namespace k8s.io)
    images.py names                 print the image names pods use

The base is Debian bookworm from apt (`mmdebstrap --variant=extract`: python3, dash, ca-certificates,
libstdc++6; no maintainer scripts run, so /etc/passwd, /etc/group and the CA bundle are written here). The
project's wheel and its locked binary dependencies (uv.lock, hashes checked) go into a virtualenv at
/opt/directstream, as in Dockerfile.operator/executor; bytecode is precompiled (unchecked-hash, so a
read-only root never recompiles).
The archives are cached in $DIRECTSTREAM_CACHE/images by version and a digest of every input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oci

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DIRECTSTREAM_CACHE", Path.home() / ".cache" / "directstream")) / "images"
SUITE = "bookworm"
# libstdc++6: pyarrow's extension modules link it (the confluent-kafka and psycopg wheels bundle theirs).
BASE_PACKAGES = ("python3", "dash", "ca-certificates", "libstdc++6")
PYTHON = "3.11"  # Debian bookworm's python3
PLATFORM = "x86_64-manylinux_2_28"
USER = "10001:10001"
VENV = "/opt/directstream"
SITE = f"{VENV}/lib/python{PYTHON}/site-packages"
# The executor image leaves out what only the operator needs (as Dockerfile.executor does).
PRUNE = {"operator": (), "executor": ("kopf", "kubernetes", "pyyaml", "prometheus-client")}
ENTRYPOINT = {"operator": "directstream-operator", "executor": "directstream-executor"}
EXPOSED = {"operator": {"8080/tcp": {}}, "executor": {}}
ENV = [
    f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
]
PASSWD = "root:x:0:0:root:/root:/usr/sbin/nologin\ndirectstream:x:10001:10001::/tmp:/usr/sbin/nologin\n"
GROUP = "root:x:0:\ndirectstream:x:10001:\n"
KEEP = 4
HERE = [Path(__file__).resolve(), Path(oci.__file__).resolve()]


def log(msg: str) -> None:
    print(f"[images.py] {msg}", file=sys.stderr, flush=True)


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def image_name(kind: str) -> str:
    return f"directstream/{kind}:{version()}"


def uv(*args: str, cwd: Path = ROOT) -> None:
    subprocess.run([sys.executable, "-m", "uv", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def sources_digest() -> str:
    """sha256 over every file that goes into an image (and the scripts that build it)."""
    h = hashlib.sha256()
    files = [ROOT / "pyproject.toml", ROOT / "uv.lock", ROOT / "README.md", *HERE]
    for top in ("operator", "executor"):
        files += [p for p in sorted((ROOT / top).rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def base_layer() -> oci.Blob:
    key = hashlib.sha256(
        json.dumps([SUITE, BASE_PACKAGES, PASSWD, GROUP, Path(oci.__file__).read_text()]).encode()
    ).hexdigest()[:16]
    out = CACHE / f"base-{SUITE}-{key}.layer.tar"
    if out.exists():
        return oci.layer_from_file(out)
    if shutil.which("mmdebstrap") is None:
        log("installing mmdebstrap from apt")
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "mmdebstrap"], check=True, stdout=subprocess.DEVNULL
        )
    log(f"building the Debian {SUITE} base ({', '.join(BASE_PACKAGES)})")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        raw = Path(tmp) / "rootfs.tar"
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=extract",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(raw),
            ],
            check=True,
        )
        layer = oci.LayerWriter()
        layer.add_tar(raw, skip=("etc/passwd", "etc/group"))
        layer.add_file("etc/passwd", PASSWD.encode())
        layer.add_file("etc/group", GROUP.encode())
        layer.add_file("etc/ssl/certs/ca-certificates.crt", _ca_bundle(raw))
        layer.add_dir("tmp", 0o1777)
        blob = layer.write(Path(tmp) / "layer.tar")
        os.replace(blob.path, out)
    prune(f"base-{SUITE}-*.layer.tar")
    return oci.layer_from_file(out)


def prune(pattern: str) -> None:
    """The cache is shared by checkouts: keep the newest few files of a kind."""
    for old in sorted(CACHE.glob(pattern), key=lambda f: f.stat().st_mtime)[:-KEEP]:
        old.unlink(missing_ok=True)


def _ca_bundle(rootfs_tar: Path) -> bytes:
    """What update-ca-certificates would write: the package's certificates, concatenated in name order."""
    with tarfile.open(rootfs_tar) as tar:
        certs = sorted(
            (
                m
                for m in tar
                if m.isreg() and m.name.endswith(".crt") and "usr/share/ca-certificates/" in m.name
            ),
            key=lambda m: m.name,
        )
        parts = []
        for m in certs:
            f = tar.extractfile(m)
            if f is not None:
                parts.append(f.read().rstrip(b"\n") + b"\n")
    if not parts:
        raise SystemExit("the base has no CA certificates (ca-certificates not installed?)")
    return b"".join(parts)


def app_layer(kind: str, work: Path) -> oci.Blob:
    dist, site = work / "dist", work / "site"
    uv("build", "--wheel", "--out-dir", str(dist))
    req = work / "requirements.txt"
    prune = [a for p in PRUNE[kind] for a in ("--prune", p)]
    uv("export", "--frozen", "--no-dev", "--no-emit-project", *prune, "--output-file", str(req))
    common = ["--target", str(site), "--python-version", PYTHON, "--python-platform", PLATFORM, "--quiet"]
    uv("pip", "install", *common, "--require-hashes", "--only-binary", ":all:", "-r", str(req))
    wheel = next(dist.glob("directstream-*.whl"))
    uv("pip", "install", *common, "--no-deps", str(wheel))
    shutil.rmtree(site / "bin", ignore_errors=True)  # scripts with this machine's shebang; written below
    compileall = ["-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
    subprocess.run([sys.executable, *compileall, "-d", SITE, str(site)], check=True)
    layer = oci.LayerWriter()
    layer.add_tree(site, SITE)
    layer.add_file(
        f"{VENV}/pyvenv.cfg",
        f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {PYTHON}\n".encode(),
    )
    layer.add_symlink(f"{VENV}/bin/python", "/usr/bin/python3")
    layer.add_symlink(f"{VENV}/bin/python3", "python")
    layer.add_symlink(f"{VENV}/bin/python{PYTHON}", "python")
    for name, target in entry_points(site).items():
        module, _, func = target.partition(":")
        script = f"#!{VENV}/bin/python\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n"
        layer.add_file(f"{VENV}/bin/{name}", script.encode(), 0o755)
    return layer.write(work / "app.tar")


def entry_points(site: Path) -> dict[str, str]:
    """The console scripts of the project's wheel as installed in site."""
    info = next(site.glob("directstream-*.dist-info")) / "entry_points.txt"
    scripts, section = {}, ""
    for raw in info.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and section == "console_scripts":
            name, _, target = line.partition("=")
            scripts[name.strip()] = target.strip()
    return scripts


def image_config(kind: str) -> dict[str, object]:
    return {
        "User": USER,
        "Env": ENV,
        "WorkingDir": "/tmp",
        "Entrypoint": [ENTRYPOINT[kind]],
        "ExposedPorts": EXPOSED[kind],
    }


def build(kind: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"{kind}-{version()}-{sources_digest()}.oci.tar"
    if out.exists():
        return out
    started = time.monotonic()
    base = base_layer()
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        app = app_layer(kind, Path(tmp))
        labels = {
            "org.opencontainers.image.title": f"directstream-{kind}",
            "org.opencontainers.image.version": version(),
            "org.opencontainers.image.licenses": "Apache-2.0",
        }
        oci.write_image(out, image_name(kind), [base, app], image_config(kind), labels)
    prune(f"{kind}-*.oci.tar")
    took, mib = time.monotonic() - started, out.stat().st_size >> 20
    log(f"built {image_name(kind)} in {took:.1f}s: {out.name} ({mib} MiB)")
    return out


PAUSE = "directstream/pause:catatonit"


def build_pause() -> Path:
    """The pod sandbox image (containerd's sandbox_image): Debian's static catatonit, as `catatonit -P`."""
    src = Path("/usr/bin/catatonit")
    if not src.exists():
        raise SystemExit("/usr/bin/catatonit is missing: apt-get install catatonit")
    key = hashlib.sha256(src.read_bytes() + Path(oci.__file__).read_bytes()).hexdigest()[:16]
    out = CACHE / f"pause-{key}.oci.tar"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        layer = oci.LayerWriter()
        layer.add_file("catatonit", src.read_bytes(), 0o755)
        blob = layer.write(Path(tmp) / "layer.tar")
        oci.write_image(out, PAUSE, [blob], {"Entrypoint": ["/catatonit", "-P"], "User": "65535:65535"})
    return out


def load(address: str, ctr: str) -> None:
    for kind, archive in [("pause", build_pause())] + [(k, build(k)) for k in ENTRYPOINT]:
        subprocess.run(
            [ctr, "--address", address, "-n", "k8s.io", "images", "import", str(archive)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        log(f"loaded {PAUSE if kind == 'pause' else image_name(kind)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["build", "load", "names"])
    p.add_argument("--address", help="containerd socket (load)")
    p.add_argument("--ctr", default="ctr")
    args = p.parse_args()
    if args.action == "names":
        print("\n".join([PAUSE, *(image_name(k) for k in ENTRYPOINT)]))
    elif args.action == "build":
        print("\n".join(str(build(k)) for k in ENTRYPOINT))
    else:
        if not args.address:
            p.error("load needs --address")
        load(args.address, args.ctr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
