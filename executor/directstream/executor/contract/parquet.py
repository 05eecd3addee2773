"""The ``parquet`` sink's options, parsed and checked (pure: no pyarrow, no boto3, no I/O).

The spec parser calls :func:`parse_parquet_options` so that a bad option is reported when the
manifest is read, and the executor calls it again on the options it receives. Object names and
the environment that carries credentials into executor pods live here too, for the same reason.

Options (``spec.processor.options``)::

    url: s3://bucket/prefix      # or a local / mounted directory (an absolute path is best)
    endpoint: http://host:port   # an S3-compatible server; default AWS (or $AWS_ENDPOINT_URL)
    region: eu-west-1            # default: the standard AWS environment ($AWS_REGION, config files)
    pathStyle: true              # bucket in the path, not the host name; default true with endpoint
    credentialsSecret: s3-creds  # cluster only: a Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
                                 # (and optionally AWS_SESSION_TOKEN), reaching pods via secretKeyRef
    compression: zstd            # zstd (default) | snappy | gzip | lz4 | brotli | none
    compressionLevel: 3          # zstd 1-22, gzip 1-9, brotli 0-11; default the codec's own
    rowGroupRecords: 100000      # a row group ends after this many records ...
    rowGroupBytes: 67108864      # ... or once its keys and values reach this many bytes
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigurationError
from .units import OffsetRange

__all__ = [
    "COMPRESSIONS",
    "CREDENTIAL_KEYS",
    "ENDPOINT_PATTERN",
    "OPTION_NAMES",
    "REGION_PATTERN",
    "SECRET_NAME_PATTERN",
    "URL_PATTERN",
    "Compression",
    "ParquetOptions",
    "ParquetOptionsError",
    "credential_env",
    "credential_env_names",
    "object_name",
    "parse_parquet_options",
]

Compression = Literal["zstd", "snappy", "gzip", "lz4", "brotli", "none"]
COMPRESSIONS: tuple[Compression, ...] = ("zstd", "snappy", "gzip", "lz4", "brotli", "none")
COMPRESSION_LEVELS: dict[str, tuple[int, int]] = {"zstd": (1, 22), "gzip": (1, 9), "brotli": (0, 11)}
DEFAULT_ROW_GROUP_RECORDS = 100_000
DEFAULT_ROW_GROUP_BYTES = 64 * 1024 * 1024
OPTION_NAMES = (
    "url",
    "endpoint",
    "region",
    "pathStyle",
    "credentialsSecret",
    "compression",
    "compressionLevel",
    "rowGroupRecords",
    "rowGroupBytes",
)
# Secret keys = the standard AWS variable names, so one Secret also serves other tools' envFrom.
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
OPTIONAL_CREDENTIAL_KEYS = ("AWS_SESSION_TOKEN",)

# The patterns below are also the CRD's (tests/unit/test_crd.py checks they are the same strings).
# A prefix segment is neither empty nor "." nor "..": such keys would differ from the path they look like.
_SEGMENT = r"(?:[^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)"
# s3://bucket[/prefix] (bucket: 3-63 of a-z 0-9 . -, S3's naming rule), or a directory path without
# ":" (so no other URL scheme slips through as a relative path) and without surrounding spaces.
URL_PATTERN = (
    rf"s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9](?:/+{_SEGMENT}(?:/{_SEGMENT})*)?/*"
    r"|[^\s:](?:[^:]*[^\s:])?"
)
ENDPOINT_PATTERN = r"https?://[^\s/?#@]+(?:/[^\s?#]*)?"
REGION_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"
SECRET_NAME_PATTERN = r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?"
MAX_ROW_GROUP_RECORDS = 64 * 1024 * 1024  # pyarrow's own cap on rows per row group
_INT32_MAX = 2**31 - 1


class ParquetOptionsError(ConfigurationError):
    """A bad option; ``option`` names it (empty when the options as a whole are wrong)."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        self.reason = message
        super().__init__(
            f"parquet sink options.{option}: {message}" if option else f"parquet sink: {message}"
        )


@dataclass(frozen=True, slots=True)
class ParquetOptions:
    """Where and how the parquet sink writes. ``bucket`` is set for ``s3://`` URLs; otherwise
    ``prefix`` is the output directory."""

    url: str
    bucket: str | None
    prefix: str
    endpoint: str | None = None
    region: str | None = None
    path_style: bool | None = None  # None: the SDK decides (virtual-hosted when the bucket name allows)
    credentials_secret: str | None = None
    compression: Compression = "zstd"
    compression_level: int | None = None
    row_group_records: int = DEFAULT_ROW_GROUP_RECORDS
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES

    @property
    def on_s3(self) -> bool:
        return self.bucket is not None

    def key(self, range_: OffsetRange) -> str:
        """The object key (s3) or file path (directory) of ``range_``."""
        name = object_name(range_)
        return f"{self.prefix}/{name}" if self.prefix else name


def object_name(range_: OffsetRange) -> str:
    """``<topic>/<partition>/<from:020d>-<until:020d>.parquet``: the public layout under the prefix."""
    return f"{range_.topic}/{range_.partition}/{range_.from_offset:020d}-{range_.until_offset:020d}.parquet"


def credential_env(options: ParquetOptions) -> list[dict[str, Any]]:
    """Executor pod env entries that take the credentials from ``credentialsSecret`` by reference
    (``secretKeyRef``): no value ever enters the Job. Empty without a Secret."""
    secret = options.credentials_secret
    if secret is None:
        return []
    entries: list[dict[str, Any]] = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for key in CREDENTIAL_KEYS
    ]
    entries += [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
        for key in OPTIONAL_CREDENTIAL_KEYS
    ]
    return entries


def credential_env_names() -> tuple[str, ...]:
    return CREDENTIAL_KEYS + OPTIONAL_CREDENTIAL_KEYS


def parse_parquet_options(options: Mapping[str, Any]) -> ParquetOptions:
    """``options`` as :class:`ParquetOptions`; :class:`ParquetOptionsError` names the first bad one."""
    if not isinstance(options, Mapping):
        raise ParquetOptionsError("", "options must be a mapping")
    for name in options:
        if name not in OPTION_NAMES:
            close = difflib.get_close_matches(str(name), OPTION_NAMES, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f"; known options: {', '.join(OPTION_NAMES)}"
            raise ParquetOptionsError(str(name), f"unknown option{hint}")
    url = options.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ParquetOptionsError("url", "required: s3://bucket/prefix or a directory path")
    bucket, prefix = _split_url(url)
    endpoint = _optional_string(options, "endpoint")
    if endpoint is not None and "@" in endpoint.partition("://")[2].partition("/")[0]:
        # Never echoed: user:password@host would put a secret into conditions and events.
        raise ParquetOptionsError(
            "endpoint", "must not carry credentials; use credentialsSecret or the AWS env"
        )
    if endpoint is not None and not re.fullmatch(ENDPOINT_PATTERN, endpoint):
        raise ParquetOptionsError("endpoint", f"expected an http:// or https:// URL, got {endpoint!r}")
    region = _optional_string(options, "region")
    if region is not None and not re.fullmatch(REGION_PATTERN, region):
        raise ParquetOptionsError("region", f"{region!r} is not a region name such as eu-west-1")
    secret = _optional_string(options, "credentialsSecret")
    if secret is not None and not re.fullmatch(SECRET_NAME_PATTERN, secret):
        raise ParquetOptionsError("credentialsSecret", f"{secret!r} is not a valid Secret name")
    path_style = options.get("pathStyle", True if endpoint is not None else None)
    if path_style is not None and not isinstance(path_style, bool):
        raise ParquetOptionsError("pathStyle", f"expected true or false, got {path_style!r}")
    if bucket is None:
        for name in ("endpoint", "region", "pathStyle", "credentialsSecret"):
            if name in options:
                raise ParquetOptionsError(name, f"only applies to s3:// URLs; url is the directory {url!r}")
    compression = options.get("compression", "zstd")
    if compression not in COMPRESSIONS:
        raise ParquetOptionsError(
            "compression", f"expected one of {', '.join(COMPRESSIONS)}, got {compression!r}"
        )
    level = _optional_int(options, "compressionLevel", -_INT32_MAX)
    if level is not None:
        bounds = COMPRESSION_LEVELS.get(compression)
        if bounds is None:
            raise ParquetOptionsError("compressionLevel", f"{compression} has no compression levels")
        if not bounds[0] <= level <= bounds[1]:
            raise ParquetOptionsError(
                "compressionLevel", f"{compression} levels are {bounds[0]} to {bounds[1]}, got {level}"
            )
    records = _optional_int(options, "rowGroupRecords", 1, MAX_ROW_GROUP_RECORDS)
    size = _optional_int(options, "rowGroupBytes", 1)
    return ParquetOptions(
        url=url,
        bucket=bucket,
        prefix=prefix,
        endpoint=endpoint,
        region=region,
        path_style=path_style,
        credentials_secret=secret,
        compression=compression,
        compression_level=level,
        row_group_records=DEFAULT_ROW_GROUP_RECORDS if records is None else records,
        row_group_bytes=DEFAULT_ROW_GROUP_BYTES if size is None else size,
    )


def _split_url(url: str) -> tuple[str | None, str]:
    """(bucket, key prefix) of an ``s3://`` URL; (None, directory) of a path."""
    if not re.fullmatch(URL_PATTERN, url):
        if "://" in url and not url.startswith("s3://"):
            raise ParquetOptionsError(
                "url",
                f"{url.partition('://')[0]}:// is not supported: use s3://bucket/prefix or a directory path",
            )
        raise ParquetOptionsError(
            "url",
            f"{url!r} is neither s3://bucket/prefix (bucket: 3-63 of a-z 0-9 . -; no empty, '.' or '..' "
            "prefix segment) nor a directory path (no ':', no surrounding spaces)",
        )
    if not url.startswith("s3://"):
        return None, url.rstrip("/") or "/"
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def _optional_string(options: Mapping[str, Any], name: str) -> str | None:
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ParquetOptionsError(name, f"expected a non-empty string, got {value!r}")
    return value


def _optional_int(
    options: Mapping[str, Any], name: str, minimum: int, maximum: int = _INT32_MAX
) -> int | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParquetOptionsError(name, f"expected an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise ParquetOptionsError(name, f"must be between {minimum} and {maximum}, got {value}")
    return value
