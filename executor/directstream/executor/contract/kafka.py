"""How directstream's clients connect to Kafka: one typed setting, one place that turns it into
librdkafka's dictionary, and beside it the keys directstream owns.

Secret values are never inside a :class:`KafkaClientSettings` that travels: ``secret_env`` maps a
librdkafka setting to the environment variable that carries its value in the executor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .errors import ConfigurationError

# Client settings the driver and executors own; a user value would break offset handling or be ignored.
REFUSED_CONFIG: Final[Mapping[str, str]] = {
    "group.id": "set spec.groupId instead",
    "enable.auto.commit": "the driver commits offsets itself after each batch succeeds; remove it",
    "isolation.level": "set spec.kafka.isolationLevel instead",
    "bootstrap.servers": "set spec.kafka.bootstrapServers instead",
    "auto.offset.reset": "set spec.startingOffsets (and spec.onDataLoss for lost offsets) instead",
}
# Settings that make a client run a command, load code or write local files: refused in both modes
# (by the CRD and the parser), since the operator's own clients and every executor would obey them.
UNSAFE_CONFIG: Final[Mapping[str, str]] = {
    "plugin.library.paths": "it makes the client load shared libraries (dlopen) into its process",
    "interceptors": "it makes the client load interceptor plugins (code) into its process",
    "ssl.engine.location": "it makes the client load an OpenSSL engine, a shared library",
    "ssl.engine.id": "it selects an OpenSSL engine to load into the client",
    "ssl.providers": "it makes the client load OpenSSL providers, shared libraries",
    "sasl.kerberos.kinit.cmd": "it makes the client run a shell command",
    "offset.store.method": "it makes the client store offsets in local files; directstream commits them",
    "offset.store.path": "it makes the client write offsets to a local file; directstream commits them",
}
# OAUTHBEARER/OIDC makes the client fetch tokens from a URL (and log its answers): refused unless the
# operator (or directstream run) is started with --allow-kafka-oidc.
OIDC_METHOD: Final = "sasl.oauthbearer.method"
OIDC_CONFIG: Final[Mapping[str, str]] = {
    OIDC_METHOD: "oidc",  # only this value calls a URL
    "sasl.oauthbearer.metadata.authentication.type": "azure_imds",
}
ALLOW_OIDC_FLAG: Final = "--allow-kafka-oidc"
# Secret values: never in spec.kafka.config (it is in the object, its history and every Job's env);
# only from the Secret of spec.kafka.configFrom (cluster) or DIRECTSTREAM_KAFKA_* variables (local).
SECRET_CONFIG: Final = frozenset(
    {
        "sasl.password",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.client.credentials.client.secret",
        "sasl.oauthbearer.assertion.private.key.passphrase",
        "sasl.oauthbearer.assertion.private.key.pem",
    }
)
# The only user settings the operator's own clients (planning, group commits) take: how to reach and
# authenticate to the cluster, and timeouts. Everything else (fetch sizes, debug, file locations the
# operator's pod does not have) is for the executors only.
DRIVER_CONFIG: Final = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "sasl.oauthbearer.config",
        "enable.sasl.oauthbearer.unsecure.jwt",
        "sasl.oauthbearer.method",
        "sasl.oauthbearer.client.id",
        "sasl.oauthbearer.client.credentials.client.id",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.client.credentials.client.secret",
        "sasl.oauthbearer.scope",
        "sasl.oauthbearer.extensions",
        "sasl.oauthbearer.token.endpoint.url",
        "sasl.oauthbearer.grant.type",
        "sasl.oauthbearer.metadata.authentication.type",
        "https.ca.pem",
        "ssl.ca.location",
        "ssl.ca.pem",
        "ssl.certificate.pem",
        "ssl.key.pem",
        "ssl.key.password",
        "ssl.cipher.suites",
        "ssl.curves.list",
        "ssl.sigalgs.list",
        "enable.ssl.certificate.verification",
        "ssl.endpoint.identification.algorithm",
        "client.id",
        "client.rack",
        "client.dns.lookup",
        "broker.address.family",
        "broker.address.ttl",
        "socket.timeout.ms",
        "socket.connection.setup.timeout.ms",
        "socket.keepalive.enable",
        "connections.max.idle.ms",
        "reconnect.backoff.ms",
        "reconnect.backoff.max.ms",
        "retry.backoff.ms",
        "retry.backoff.max.ms",
        "metadata.max.age.ms",
        "topic.metadata.refresh.interval.ms",
        "api.version.request",
        "api.version.request.timeout.ms",
        "api.version.fallback.ms",
        "broker.version.fallback",
    }
)
# What an executor's correctness depends on; applied after the user's config.
CONSUMER_ENFORCED: Final[Mapping[str, Any]] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": True,
    "auto.offset.reset": "error",
}
# Throughput defaults, tuned with bench/executor_throughput.py (1M x 100 B records: about 2x the
# librdkafka defaults). Prefetch may buffer up to ~256 MiB; lower queued.max.messages.kbytes in
# the stream's kafka.config for small pods. User config overrides these.
CONSUMER_THROUGHPUT_DEFAULTS: Final[Mapping[str, Any]] = {
    "fetch.max.bytes": 104_857_600,
    "max.partition.fetch.bytes": 16_777_216,
    "queued.min.messages": 1_000_000,
    "queued.max.messages.kbytes": 262_144,
    "fetch.wait.max.ms": 500,
}
# The settings that say how to reach and authenticate to a cluster (shared with sink producers).
CONNECTION_PREFIXES: Final = ("security.", "sasl.", "ssl.")


@dataclass(frozen=True, slots=True)
class KafkaClientSettings:
    """Where the stream's Kafka is and how to reach it."""

    bootstrap_servers: str
    isolation_level: str = "read_committed"
    config: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)

    # -- librdkafka dictionaries -------------------------------------------------------------

    def client_config(self, secret_values: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The driver's own clients: the user's settings and the secret values it read itself,
        only those of ``DRIVER_CONFIG`` (the operator never runs the spec's other settings)."""
        settings = {**self.config, **(secret_values or {})}
        allowed = {k: v for k, v in settings.items() if k in DRIVER_CONFIG}
        return {"bootstrap.servers": self.bootstrap_servers, **allowed}

    def consumer_config(
        self, *, group_id: str, client_id: str, environ: Mapping[str, str] = os.environ
    ) -> dict[str, Any]:
        """An executor's consumer: assign-only, never committing, failing on a deleted ``from``."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            # Required by librdkafka, never used: executors never subscribe and never commit.
            "group.id": group_id,
            "client.id": client_id,
            **CONSUMER_THROUGHPUT_DEFAULTS,
            **self.config,
            **self.secret_values(environ),
            **CONSUMER_ENFORCED,
        }
        config["isolation.level"] = self.isolation_level
        return config

    def connection_config(self, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
        """Only how to reach the cluster (bootstrap, TLS, SASL): for a sink's producer."""
        settings = {**self.config, **self.secret_values(environ)}
        shared = {k: v for k, v in settings.items() if k.startswith(CONNECTION_PREFIXES)}
        return {"bootstrap.servers": self.bootstrap_servers, **shared}

    def secret_values(self, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
        """The secret settings, read from the variables ``secret_env`` names."""
        values: dict[str, str] = {}
        for setting, variable in self.secret_env.items():
            value = environ.get(variable)
            if value is None:
                raise ConfigurationError(
                    f"Kafka setting {setting!r} needs environment variable {variable}, unset"
                )
            values[setting] = value
        return values

    # -- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "bootstrapServers": self.bootstrap_servers,
            "isolationLevel": self.isolation_level,
            "config": dict(self.config),
            "secretEnv": dict(self.secret_env),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> KafkaClientSettings:
        return cls(
            bootstrap_servers=str(doc["bootstrapServers"]),
            isolation_level=str(doc.get("isolationLevel", "read_committed")),
            config={str(k): str(v) for k, v in dict(doc.get("config", {})).items()},
            secret_env={str(k): str(v) for k, v in dict(doc.get("secretEnv", {})).items()},
        )
