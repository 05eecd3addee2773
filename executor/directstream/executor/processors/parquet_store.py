"""Where one range's Parquet bytes go, invisible until complete: a file renamed into place, or an
S3 object (one PUT, or a multipart upload completed last).

A target is a write-only file object for ``pyarrow.parquet.ParquetWriter`` plus ``commit()`` (the
object appears under its final name, whole) and ``discard()`` (nothing appears; later writes are
dropped).

- **Directory**: the bytes go to a hidden temporary file next to the final one
  (``.<name>.<random>.tmp``), which is fsynced and renamed over the final name, then the directory
  is fsynced. A killed attempt's temporary files for the same range are removed by the next one.
- **S3**: bytes are buffered until a part is full. An object that ends within its first part is
  written with one ``PutObject``; a larger one streams as a multipart upload whose parts go out as
  they fill, and only ``CompleteMultipartUpload`` makes it visible. ``discard`` aborts the upload.
  A SIGKILLed executor leaves an incomplete upload, which is never an object; the next attempt of
  the range aborts it (and a bucket lifecycle rule ``AbortIncompleteMultipartUpload`` collects
  any other). Every request carries ``Content-MD5``, so the server rejects corrupted bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from directstream.executor.contract.parquet import ParquetOptions
from directstream.executor.errors import ConfigurationError
from directstream.executor.processors.durable_file import DurableFile

log = logging.getLogger(__name__)

# S3 parts are at least 5 MiB (the last excepted) and at most 10,000 per upload; parts grow by
# one base size every 1,000 so an object may reach ~430 GiB.
PART_SIZE = 8 * 1024 * 1024
MAX_PARTS = 10_000
UPLOAD_THREADS = 4


class ObjectTooLargeError(Exception):
    """A range's object outgrew what one multipart upload can hold."""


class Target(Protocol):
    def write(self, data: bytes) -> int: ...
    def flush(self) -> None: ...
    def commit(self) -> None: ...
    def discard(self) -> None: ...


class Store(Protocol):
    def target(self, key: str) -> Target: ...
    def close(self) -> None: ...


# -- a directory -------------------------------------------------------------------------------------


class DirectoryStore:
    """Files under a directory; a target's key is its whole path (``ParquetOptions.key``)."""

    def target(self, key: str) -> Target:
        return DurableFile(Path(key))

    def close(self) -> None:
        return None


# -- S3 ----------------------------------------------------------------------------------------------


def _md5(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


class S3Target:
    def __init__(self, client: Any, bucket: str, key: str, uploads: ThreadPoolExecutor) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.uploads = uploads
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.sent = 0  # parts handed to the upload thread
        self.in_flight: Future[dict[str, Any]] | None = None
        self.closed = False

    def _part_size(self) -> int:
        return PART_SIZE * (1 + self.sent // 1000)

    def write(self, data: bytes) -> int:
        if self.closed:  # discarded: the writer's last bytes go nowhere
            return len(data)
        self.buffer += data
        if len(self.buffer) >= self._part_size():
            self._send_part(self._part_size())
        return len(data)

    def flush(self) -> None:
        return None

    def _start_upload(self) -> str:
        # An earlier attempt of this range that was killed mid-upload left its upload open.
        listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.key)
        for upload in listing.get("Uploads", []):
            if upload.get("Key") == self.key:
                log.info(
                    "aborting an earlier attempt's incomplete upload of s3://%s/%s", self.bucket, self.key
                )
                self._abort(str(upload["UploadId"]))
        created = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)
        return str(created["UploadId"])

    def _send_part(self, size: int) -> None:
        """Hand the next ``size`` bytes to the upload thread; the encoder goes on meanwhile, with at
        most one part of this object in flight."""
        if self.upload_id is None:
            self.upload_id = self._start_upload()
        if self.sent == MAX_PARTS:
            raise ObjectTooLargeError(
                f"s3://{self.bucket}/{self.key} would need more than {MAX_PARTS} parts: "
                "cap the range size (spec.rate.maxPerPartition, spec.executors.maxRecords)"
            )
        body = bytes(memoryview(self.buffer)[:size])
        del self.buffer[:size]
        self._wait()
        self.sent += 1
        self.in_flight = self.uploads.submit(self._upload_part, self.upload_id, self.sent, body)

    def _upload_part(self, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        answer = self.client.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
            ContentMD5=_md5(body),
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _wait(self) -> None:
        if self.in_flight is not None:
            future, self.in_flight = self.in_flight, None
            self.parts.append(future.result())

    def commit(self) -> None:
        self.closed = True
        if self.upload_id is None:
            body = bytes(self.buffer)
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, ContentMD5=_md5(body))
            return
        if self.buffer:
            self._send_part(len(self.buffer))
        self._wait()
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )
        self.upload_id = None

    def discard(self) -> None:
        self.closed = True
        self.buffer.clear()
        with contextlib.suppress(Exception):  # the upload is aborted either way
            self._wait()
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            self._abort(upload_id)

    def _abort(self, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
        except Exception as exc:  # the next attempt or a lifecycle rule collects it
            log.warning("could not abort the upload of s3://%s/%s: %s", self.bucket, self.key, exc)


def s3_client(options: ParquetOptions) -> Any:
    """A boto3 S3 client for ``options``, credentials from the standard AWS environment."""
    import boto3  # noqa: PLC0415  (only this store needs boto3)
    from botocore.config import Config  # noqa: PLC0415

    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise ConfigurationError(
            "parquet sink: no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
            "another standard AWS source), or on Kubernetes name a Secret in options.credentialsSecret"
        )
    settings: dict[str, Any] = {
        "retries": {"mode": "standard", "max_attempts": 5},
        "connect_timeout": 10,
        "read_timeout": 60,
    }
    if options.path_style is not None:
        settings["s3"] = {"addressing_style": "path" if options.path_style else "virtual"}
    # S3-compatible servers often reject the SDK's newer default checksums (XAmzContentSHA256Mismatch,
    # NotImplemented); Content-MD5 still protects every upload. The AWS variables still decide when set.
    if options.endpoint is not None:
        if "AWS_REQUEST_CHECKSUM_CALCULATION" not in os.environ:
            settings["request_checksum_calculation"] = "when_required"
        if "AWS_RESPONSE_CHECKSUM_VALIDATION" not in os.environ:
            settings["response_checksum_validation"] = "when_required"
    return session.client(
        "s3", endpoint_url=options.endpoint, region_name=options.region, config=Config(**settings)
    )


class S3Store:
    def __init__(self, options: ParquetOptions, client: Any | None = None) -> None:
        assert options.bucket is not None
        self.bucket = options.bucket
        self.client = client if client is not None else s3_client(options)
        # boto3 clients are thread-safe; the upload threads mostly wait on sockets (no GIL held).
        self.uploads = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="s3-upload")

    def target(self, key: str) -> Target:
        return S3Target(self.client, self.bucket, key, self.uploads)

    def close(self) -> None:
        self.uploads.shutdown(wait=True)


def open_store(options: ParquetOptions) -> Store:
    return S3Store(options) if options.on_s3 else DirectoryStore()
