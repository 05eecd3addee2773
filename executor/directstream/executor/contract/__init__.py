"""The contract between the driver and its executors, shared by both sides.

- :mod:`.units`: offset ranges, work units, results (plain data that round-trips through JSON);
- :mod:`.kafka`: how clients connect, with the librdkafka keys directstream owns;
- :mod:`.poison`: decoding and what a poison record does (skip, dead letter);
- :mod:`.sinks`: sink names and the options both sides read (:mod:`.parquet`: the parquet sink's);
- :mod:`.wire`: environment variable names, the termination path and its size limit, exit codes;
- :mod:`.errors`: the one exception root, with its retryable and permanent branches.
"""

from .errors import (
    ConfigurationError,
    ContractError,
    DirectStreamError,
    PermanentError,
    RetryableError,
)
from .kafka import CONSUMER_ENFORCED, REFUSED_CONFIG, KafkaClientSettings
from .poison import DeadLetterSettings, PoisonOptionsError, PoisonPolicy, parse_poison
from .sinks import DEFAULT_OFFSETS_TABLE, SINK_NAMES, PostgresConnection, SinkName
from .units import ExecutorResult, FailedAt, OffsetRange, ProcessorSettings, WorkUnit
from .wire import CONTRACT_VERSION, TERMINATION_MESSAGE_LIMIT

__all__ = [
    "CONSUMER_ENFORCED",
    "CONTRACT_VERSION",
    "DEFAULT_OFFSETS_TABLE",
    "REFUSED_CONFIG",
    "SINK_NAMES",
    "TERMINATION_MESSAGE_LIMIT",
    "ConfigurationError",
    "ContractError",
    "DeadLetterSettings",
    "DirectStreamError",
    "ExecutorResult",
    "FailedAt",
    "KafkaClientSettings",
    "OffsetRange",
    "PermanentError",
    "PoisonOptionsError",
    "PoisonPolicy",
    "PostgresConnection",
    "ProcessorSettings",
    "RetryableError",
    "SinkName",
    "WorkUnit",
    "parse_poison",
]
