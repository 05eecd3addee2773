"""Processors: the protocol and the built-in sinks, chosen by ``processor.sink``.

``jsonl`` (files per range), ``kafka`` (produce onward; ``transactional: true`` for exactly once),
``postgres`` (rows and offsets in one transaction per range, see :mod:`.postgres`), ``parquet``
(one Parquet object per range on S3 or in a directory, see :mod:`.parquet`), ``stdout``
(JSON lines), ``count`` (counts only) and ``python`` (a user factory, see :mod:`.python_entry`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from directstream.executor.contract import SINK_NAMES, ProcessorSettings, WorkUnit
from directstream.executor.errors import ConfigurationError
from directstream.executor.processors.base import BaseProcessor, CountProcessor, Processor
from directstream.executor.processors.jsonl import JsonlProcessor
from directstream.executor.processors.kafka_transactional import kafka_processor
from directstream.executor.processors.python_entry import PythonProcessor
from directstream.executor.processors.stdout import StdoutProcessor

__all__ = ["SINKS", "BaseProcessor", "CountProcessor", "Processor", "build_processor"]


def _postgres_processor(options: Mapping[str, Any], unit: WorkUnit) -> Processor:
    # Imported on use: psycopg is needed only by this sink.
    try:
        from directstream.executor.processors.postgres import PostgresProcessor  # noqa: PLC0415
    except ImportError as exc:
        if not (exc.name or "").startswith("psycopg"):
            raise
        raise ConfigurationError(
            "the postgres sink needs psycopg 3 in the executor image: pip install 'psycopg[binary]>=3.2'"
        ) from exc
    return PostgresProcessor(options, unit)


def _parquet_processor(options: Mapping[str, Any], unit: WorkUnit) -> Processor:
    # Imported on use: pyarrow and boto3 are needed only by this sink (and pyarrow takes a while to load).
    try:
        from directstream.executor.processors.parquet import ParquetProcessor  # noqa: PLC0415

        return ParquetProcessor(options, unit)
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in {"pyarrow", "boto3", "botocore"}:
            raise
        raise ConfigurationError(
            f"the parquet sink needs pyarrow and boto3 in the executor image ({exc.name} is missing): "
            "pip install 'pyarrow>=18' 'boto3>=1.36'"
        ) from exc


SINKS: dict[str, Callable[[Mapping[str, Any], WorkUnit], Processor]] = {
    "jsonl": lambda options, unit: JsonlProcessor(options),
    "kafka": kafka_processor,
    "postgres": _postgres_processor,
    "parquet": _parquet_processor,
    "stdout": lambda options, unit: StdoutProcessor(),
    "count": lambda options, unit: CountProcessor(),
    "python": PythonProcessor,
}
assert set(SINKS) == set(SINK_NAMES), "every sink of the contract has a processor"


def build_processor(settings: ProcessorSettings, unit: WorkUnit) -> Processor:
    """The processor for ``settings``; :class:`ConfigurationError` for an unknown sink or bad options."""
    factory = SINKS.get(settings.sink)
    if factory is None:
        raise ConfigurationError(f"unknown sink {settings.sink!r}; known sinks: {', '.join(sorted(SINKS))}")
    if not isinstance(settings.options, Mapping):
        raise ConfigurationError(f"processor.options for sink {settings.sink!r} must be a mapping")
    # Imported here: the poison guard builds on this package's transactional kafka sink.
    from directstream.executor.poison import guarded  # noqa: PLC0415

    return guarded(factory(settings.options, unit), settings.poison, unit, settings.sink)
