"""The parquet sink's options: the parser, the object layout, the CRD's option schema, and the
credentials' way into executor pods."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from directstream.executor.contract import OffsetRange
from directstream.executor.contract import parquet as po
from directstream.executor.contract.parquet import ParquetOptionsError, parse_parquet_options
from directstream.operator.core.spec import SpecError, parse_stream
from tests.crd_support import MINIMAL, node_at, schema_errors


def test_s3_url_defaults() -> None:
    options = parse_parquet_options({"url": "s3://lake-bucket/raw/clicks/"})
    assert (options.bucket, options.prefix, options.on_s3) == ("lake-bucket", "raw/clicks", True)
    assert options.compression == "zstd" and options.compression_level is None
    assert options.row_group_records == 100_000 and options.row_group_bytes == 64 * 1024 * 1024
    assert options.path_style is None, "without an endpoint the SDK picks the addressing style"
    with_endpoint = parse_parquet_options({"url": "s3://lake", "endpoint": "http://127.0.0.1:9000"})
    assert with_endpoint.path_style is True and with_endpoint.prefix == ""


def test_object_names_are_the_public_layout() -> None:
    range_ = OffsetRange("clicks.v2", 7, 42, 1_000)
    assert po.object_name(range_) == "clicks.v2/7/00000000000000000042-00000000000000001000.parquet"
    assert parse_parquet_options({"url": "s3://b-1/p/q"}).key(range_) == f"p/q/{po.object_name(range_)}"
    assert parse_parquet_options({"url": "s3://b-1"}).key(range_) == po.object_name(range_)
    assert parse_parquet_options({"url": "/data/out/"}).key(range_) == f"/data/out/{po.object_name(range_)}"


@pytest.mark.parametrize(
    ("options", "option", "fragment"),
    [
        ({}, "url", "required"),
        ({"url": "gs://bucket/p"}, "url", "gs:// is not supported"),
        ({"url": "s3://Bucket/p"}, "url", "neither s3://bucket/prefix"),
        ({"url": "s3://ab"}, "url", "bucket"),
        ({"url": "s3://bucket/a//b"}, "url", "'.' or '..'"),
        ({"url": "s3://bucket/a/../b"}, "url", "'.' or '..'"),
        ({"url": " /data"}, "url", "surrounding spaces"),
        ({"url": "/data", "endpoint": "http://x:9000"}, "endpoint", "only applies to s3://"),
        ({"url": "/data", "credentialsSecret": "s"}, "credentialsSecret", "only applies to s3://"),
        ({"url": "s3://bucket", "endpoint": "ftp://x"}, "endpoint", "http:// or https://"),
        ({"url": "s3://bucket", "region": "EU West"}, "region", "region name"),
        ({"url": "s3://bucket", "pathStyle": "yes"}, "pathStyle", "true or false"),
        ({"url": "s3://bucket", "credentialsSecret": "Bad_Name"}, "credentialsSecret", "Secret name"),
        ({"url": "s3://bucket", "compression": "xz"}, "compression", "zstd, snappy"),
        (
            {"url": "s3://bucket", "compression": "snappy", "compressionLevel": 3},
            "compressionLevel",
            "no compression levels",
        ),
        ({"url": "s3://bucket", "compressionLevel": 23}, "compressionLevel", "1 to 22"),
        ({"url": "s3://bucket", "rowGroupRecords": 0}, "rowGroupRecords", "between 1"),
        ({"url": "s3://bucket", "rowGroupRecords": 2**26 + 1}, "rowGroupRecords", "between 1"),
        ({"url": "s3://bucket", "rowGroupBytes": True}, "rowGroupBytes", "integer"),
        ({"url": "s3://bucket", "rowGroupSize": 10}, "rowGroupSize", "did you mean rowGroupBytes"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], option: str, fragment: str) -> None:
    with pytest.raises(ParquetOptionsError) as caught:
        parse_parquet_options(options)
    assert caught.value.option == option
    assert fragment in str(caught.value)


def test_an_endpoint_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ParquetOptionsError) as caught:
        parse_parquet_options({"url": "s3://bucket", "endpoint": "http://key:s3cr3t@minio:9000"})
    assert caught.value.option == "endpoint" and "s3cr3t" not in str(caught.value)


def manifest(options: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(MINIMAL)
    doc["spec"]["processor"] = {"sink": "parquet", "options": options}
    return doc


def test_the_spec_parser_reports_a_bad_option_at_its_path() -> None:
    with pytest.raises(SpecError) as caught:
        parse_stream(manifest({"url": "s3://bucket", "compression": "xz"}))
    assert [p.path for p in caught.value.problems] == ["spec.processor.options.compression"]
    with pytest.raises(SpecError) as caught:
        parse_stream(manifest({}))
    assert [p.path for p in caught.value.problems] == ["spec.processor.options.url"]
    stream = parse_stream(manifest({"url": "s3://bucket/p", "rowGroupRecords": 10}))
    assert stream.processor.sink == "parquet" and stream.processor.options["rowGroupRecords"] == 10


def test_the_crd_declares_every_option_with_the_parser_patterns() -> None:
    options = node_at("spec.processor.options")["properties"]
    assert set(po.OPTION_NAMES) <= set(options)
    patterns = {
        "url": po.URL_PATTERN,
        "endpoint": po.ENDPOINT_PATTERN,
        "region": po.REGION_PATTERN,
        "credentialsSecret": po.SECRET_NAME_PATTERN,
    }
    for name, pattern in patterns.items():
        assert options[name]["pattern"] == f"^(?:{pattern})$", name
    assert tuple(options["compression"]["enum"]) == po.COMPRESSIONS
    assert options["rowGroupRecords"]["maximum"] == po.MAX_ROW_GROUP_RECORDS
    assert all(options[name]["description"].startswith("parquet sink") for name in po.OPTION_NAMES)


URL_LIKE = st.one_of(
    st.from_regex(r"\As3://[a-zA-Z0-9.-]{1,8}(/[a-z./ ]{0,6}){0,3}\Z"),
    st.from_regex(r"\A[a-z0-9 /:.]{1,12}\Z"),
    st.text(max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(URL_LIKE)
def test_the_crd_url_pattern_equals_the_parser(url: str) -> None:
    crd = re.search(node_at("spec.processor.options.url")["pattern"], url) is not None
    try:
        parse_parquet_options({"url": url})
        parsed = True
    except ParquetOptionsError:
        parsed = False
    assert crd == parsed, url


def test_a_full_parquet_manifest_passes_the_crd_schema() -> None:
    options = {
        "url": "s3://lake/raw",
        "endpoint": "https://minio.example:9000",
        "region": "eu-west-1",
        "pathStyle": True,
        "credentialsSecret": "s3-credentials",
        "compression": "zstd",
        "compressionLevel": 3,
        "rowGroupRecords": 50_000,
        "rowGroupBytes": 32 * 1024 * 1024,
    }
    doc = manifest(options)
    assert schema_errors(doc["spec"], node_at("spec"), "spec") == []
    assert parse_stream(doc).processor.options == options


def test_credentials_reach_pods_only_by_reference() -> None:
    options = parse_parquet_options({"url": "s3://bucket", "credentialsSecret": "s3-creds"})
    env = po.credential_env(options)
    assert [e["name"] for e in env] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
    assert all(set(e) == {"name", "valueFrom"} for e in env), "never a value"
    refs = [e["valueFrom"]["secretKeyRef"] for e in env]
    assert all(
        ref["name"] == "s3-creds" and ref["key"] == e["name"] for ref, e in zip(refs, env, strict=True)
    )
    assert refs[2]["optional"] is True and "optional" not in refs[0]
    assert po.credential_env(parse_parquet_options({"url": "s3://bucket"})) == []
