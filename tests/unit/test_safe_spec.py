"""What a spec can make the operator do: librdkafka settings checked, dangerous ones refused, secrets
only from Secrets, the operator's clients on an allow-list, topic patterns in linear time, and one
scrubber for every message."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from directstream.executor.contract.kafka import (
    DRIVER_CONFIG,
    SECRET_CONFIG,
    UNSAFE_CONFIG,
    KafkaClientSettings,
)
from directstream.executor.contract.librdkafka_properties import LIBRDKAFKA_PROPERTIES
from directstream.executor.contract.redact import remember, scrub
from directstream.operator.core.spec import SpecError, parse_spec, parse_stream
from directstream.operator.core.spec_access import check_oidc, check_secret
from directstream.operator.core.topic_pattern import fullmatch
from directstream.operator.hosts.local import local_secrets
from tests.crd_support import MINIMAL

ROOT = Path(__file__).resolve().parents[2]


def problems(config: dict[str, Any]) -> list[tuple[str, str]]:
    doc = copy.deepcopy(MINIMAL)
    doc["spec"]["kafka"]["config"] = config
    with pytest.raises(SpecError) as caught:
        parse_stream(doc)
    return [(p.path, p.message) for p in caught.value.problems]


def stream(config: dict[str, Any] | None = None) -> Any:
    spec = copy.deepcopy(MINIMAL["spec"])
    spec["kafka"]["config"] = config or {}
    return parse_spec("clicks", spec)


def test_the_property_list_is_the_installed_librdkafka_list() -> None:
    hack = importlib.util.spec_from_file_location("props", ROOT / "hack" / "librdkafka_properties.py")
    assert hack is not None and hack.loader is not None
    module = importlib.util.module_from_spec(hack)
    hack.loader.exec_module(module)
    assert set(module.properties()) == LIBRDKAFKA_PROPERTIES
    assert "error_cb" not in LIBRDKAFKA_PROPERTIES, "API-only settings cannot come from a manifest"


def test_unknown_settings_are_refused_with_the_closest_name() -> None:
    ((path, message),) = problems({"securty.protocol": "SSL"})
    assert path == "spec.kafka.config.securty.protocol"
    assert "not a librdkafka client setting" in message and "'security.protocol'" in message


@pytest.mark.parametrize("key", sorted(UNSAFE_CONFIG))
def test_settings_that_load_code_or_run_commands_are_refused(key: str) -> None:
    ((path, message),) = problems({key: "/tmp/evil.so"})
    assert path == f"spec.kafka.config.{key}" and "is refused" in message


@pytest.mark.parametrize("key", sorted(SECRET_CONFIG))
def test_secrets_are_refused_in_the_manifest_without_echoing_them(key: str) -> None:
    ((_path, message),) = problems({key: "hunter2-value"})
    assert "a secret" in message and "configFrom" in message and "hunter2" not in message


def test_every_driver_setting_is_a_safe_known_setting() -> None:
    assert DRIVER_CONFIG <= LIBRDKAFKA_PROPERTIES
    assert not DRIVER_CONFIG & set(UNSAFE_CONFIG)


def test_the_operator_clients_take_only_the_allow_list() -> None:
    settings = KafkaClientSettings(
        "k:9092",
        config={
            "security.protocol": "SASL_SSL",
            "debug": "all",
            "fetch.max.bytes": "1",
            "ssl.key.location": "/k",
        },
    )
    config = settings.client_config({"sasl.password": "p", "sasl.username": "u"})
    assert config == {
        "bootstrap.servers": "k:9092",
        "security.protocol": "SASL_SSL",
        "sasl.password": "p",
        "sasl.username": "u",
    }
    consumer = settings.consumer_config(group_id="g", client_id="c", environ={})
    assert consumer["debug"] == "all" and consumer["fetch.max.bytes"] == "1", "executors take them all"


def test_oidc_only_with_the_flag() -> None:
    spec = stream({"sasl.oauthbearer.method": "oidc", "sasl.oauthbearer.token.endpoint.url": "http://x"})
    with pytest.raises(SpecError) as caught:
        check_oidc(spec, allow_oidc=False)
    assert "--allow-kafka-oidc" in str(caught.value)
    check_oidc(spec, allow_oidc=True)
    check_oidc(stream({"sasl.oauthbearer.method": "default"}), allow_oidc=False)


def test_a_secret_with_keys_that_are_not_settings_is_refused_without_its_values() -> None:
    with pytest.raises(SpecError) as caught:
        check_secret("kafka", {"username": "u", "password": "hunter2-value", "sasl.password": "p"}, False)
    text = str(caught.value)
    assert "'username' is not a librdkafka" in text and "'password' is not a librdkafka" in text
    assert "key 'sasl.password'" not in text and "hunter2" not in text
    with pytest.raises(SpecError, match=r"plugin\.library\.paths"):
        check_secret("kafka", {"plugin.library.paths": "/x.so"}, False)
    with pytest.raises(SpecError, match="allow-kafka-oidc"):
        check_secret("kafka", {"sasl.oauthbearer.method": "OIDC"}, False)
    check_secret("kafka", {"sasl.password": "p", "sasl.username": "u", "ssl.key.pem": "k"}, False)


def test_a_catastrophic_backtracking_pattern_answers_correctly() -> None:
    name = "a" * 200 + "b"  # ^(a+)+$ took seconds on Python's re with 28 characters
    assert fullmatch("^(a+)+$", name) is False
    assert fullmatch("^(a+)+$", "a" * 200) is True
    assert stream().matches_topic("clicks")


def test_patterns_re2_cannot_compile_are_invalid_spec() -> None:
    spec = copy.deepcopy(MINIMAL["spec"])
    del spec["topics"]
    spec["topicPattern"] = r"(clicks)-\1"
    with pytest.raises(SpecError, match="RE2"):
        parse_spec("clicks", spec)


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ('connection to "postgresql://app:pa55word@db:5432/x" failed', "pa55word", "postgresql://app:***@db"),
        ("host=db user=app password='s3 cr3t' dbname=x", "s3 cr3t", "dbname=x"),
        ("dsn: host=db password=s3cr3t port=5432", "s3cr3t", "port=5432"),
        ("sasl.password=hunter2, sasl.username=u", "hunter2", "sasl.username=u"),
        ('{"ssl.key.password": "hunter2"}', "hunter2", "ssl.key.password"),
        ("FATAL: password authentication failed for user app", "", "password authentication failed"),
    ],
)
def test_scrub_removes_passwords(text: str, hidden: str, kept: str) -> None:
    out = scrub(text)
    assert kept in out
    if hidden:
        assert hidden not in out


def test_scrub_removes_remembered_secret_values() -> None:
    remember(["kafka-secret-value-42", "ab"])
    assert scrub("auth failed with kafka-secret-value-42") == "auth failed with ***"
    assert scrub("ab stays") == "ab stays", "too short to mask safely"


def test_local_mode_takes_secrets_from_directstream_kafka_variables() -> None:
    environ = {"DIRECTSTREAM_KAFKA_SASL_PASSWORD": "p", "DIRECTSTREAM_KAFKA_NOT_A_SECRET": "x"}
    assert local_secrets(environ) == {"sasl.password": "DIRECTSTREAM_KAFKA_SASL_PASSWORD"}
    settings = KafkaClientSettings("k:9092", secret_env=local_secrets(environ))
    assert settings.consumer_config(group_id="g", client_id="c", environ=environ)["sasl.password"] == "p"
