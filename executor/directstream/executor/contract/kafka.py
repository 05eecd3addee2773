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
        """The driver's own clients: the user's settings plus secret values it read itself."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.config, **(secret_values or {})}

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
