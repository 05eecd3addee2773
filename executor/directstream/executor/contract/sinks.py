"""The sinks an executor knows, and the options both sides read (the driver reads the postgres
sink's options too, when the offsets live in the user's database; the parquet sink's options, in
:mod:`.parquet`, are checked by the spec parser and give executor pods their credentials)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from .errors import ConfigurationError
from .wire import ENV_POSTGRES_DSN

SinkName = Literal["jsonl", "kafka", "stdout", "count", "python", "postgres", "parquet"]
SINK_NAMES: Final[tuple[SinkName, ...]] = (
    "jsonl",
    "kafka",
    "stdout",
    "count",
    "python",
    "postgres",
    "parquet",
)
DEFAULT_RESULTS_TABLE: Final = "directstream_records"
DEFAULT_OFFSETS_TABLE: Final = "directstream_offsets"


@dataclass(frozen=True, slots=True)
class PostgresConnection:
    """Where the postgres sink (and, with ``offsets.store: postgres``, the driver) connects."""

    dsn: str | None  # options.dsn, without a password
    dsn_env: str  # else the variable that holds the DSN
    offsets_table: str

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PostgresConnection:
        dsn = options.get("dsn")
        if dsn is not None and (not isinstance(dsn, str) or not dsn):
            raise ConfigurationError("postgres sink options.dsn must be a connection string")
        return cls(
            dsn=dsn,
            dsn_env=str(options.get("dsnEnv", ENV_POSTGRES_DSN)),
            offsets_table=str(options.get("offsetsTable", DEFAULT_OFFSETS_TABLE)),
        )

    def resolve(self, lookup: Callable[[str], str | None], whose: str = "the executor's") -> str:
        """The DSN: ``options.dsn``, else the value of ``dsnEnv`` in ``lookup`` (an environment)."""
        if self.dsn:
            return self.dsn
        value = lookup(self.dsn_env)
        if not value:
            raise ConfigurationError(
                f"postgres: set options.dsn or the environment variable {self.dsn_env} in {whose} "
                "environment (unset)"
            )
        return value
