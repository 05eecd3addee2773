"""pytest fixtures for the real S3 API server (S3Proxy) started by ``hack/s3proxy.sh``.

``s3`` reuses a running server ($DIRECTSTREAM_S3_ENDPOINT or this checkout's .dev/s3proxy) and
otherwise starts one for the session and stops it afterwards. It never skips: a server that cannot
start is a test error with the script's message. ``s3_prefix`` is a fresh key prefix per test in
the server's bucket, so objects of different tests never meet.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
S3PROXY_SH = ROOT / "hack" / "s3proxy.sh"
ENV_NAMES = (
    "DIRECTSTREAM_S3_ENDPOINT",
    "DIRECTSTREAM_S3_BUCKET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


def _script_env() -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(S3PROXY_SH), "env"], capture_output=True, text=True, check=False, timeout=60
    )
    return dict(re.findall(r"export (\w+)=(\S+)", out.stdout))


@dataclass
class S3Server:
    """The server's address and credentials, and a boto3 client for checking what was written."""

    env: dict[str, str]
    _client: Any = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return self.env["DIRECTSTREAM_S3_ENDPOINT"]

    @property
    def bucket(self) -> str:
        return self.env["DIRECTSTREAM_S3_BUCKET"]

    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.env.get("AWS_REGION", "us-east-1"),
                aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
                config=Config(
                    s3={"addressing_style": "path"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        return self._client

    def process_env(self) -> dict[str, str]:
        """This process's environment plus the server's credentials, for a ``directstream`` child."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {**keep, **self.env}

    def keys(self, prefix: str) -> list[str]:
        """Every object key under ``prefix``, except the filesystem backend's directory entries
        (keys ending in "/", which it lists for the folders that hold the objects)."""
        found: list[str] = []
        for page in (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        ):
            found += [obj["Key"] for obj in page.get("Contents", []) if not obj["Key"].endswith("/")]
        return sorted(found)

    def incomplete_uploads(self, prefix: str) -> list[str]:
        """The keys of the multipart uploads begun and neither completed nor aborted."""
        return sorted(key for key, _ in self.upload_ids(prefix))

    def upload_ids(self, prefix: str) -> set[tuple[str, str]]:
        listing = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return {(upload["Key"], upload["UploadId"]) for upload in listing.get("Uploads", [])}

    def get(self, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def read_table(self, key: str) -> pa.Table:
        return pq.read_table(io.BytesIO(self.get(key)))


def _answers(env: dict[str, str]) -> bool:
    if not all(env.get(name) for name in ENV_NAMES):
        return False
    try:
        S3Server(env).client().head_bucket(Bucket=env["DIRECTSTREAM_S3_BUCKET"])
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    given = {name: os.environ[name] for name in os.environ if name.startswith(("DIRECTSTREAM_S3_", "AWS_"))}
    for env in (given, _script_env()):
        if _answers(env):
            yield S3Server(env)
            return
    started = subprocess.run(
        ["bash", str(S3PROXY_SH), "up"], capture_output=True, text=True, check=False, timeout=300
    )
    if started.returncode != 0:
        pytest.fail(f"could not start S3Proxy with hack/s3proxy.sh up:\n{started.stderr}", pytrace=False)
    env = _script_env()
    assert _answers(env), f"hack/s3proxy.sh up succeeded but the server does not answer: {env}"
    try:
        yield S3Server(env)
    finally:
        subprocess.run(["bash", str(S3PROXY_SH), "down"], capture_output=True, check=False, timeout=300)


@pytest.fixture
def s3_prefix(request: pytest.FixtureRequest) -> str:
    """A unique key prefix per test (nothing is created: objects appear under it)."""
    base = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:40].strip("-")
    return f"{base}-{uuid.uuid4().hex[:8]}"
