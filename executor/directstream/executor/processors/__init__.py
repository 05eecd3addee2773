"""Processors: the protocol and the built-in sinks, chosen by ``processor.sink``.

``jsonl`` (files per range), ``kafka`` (produce onward; ``transactional: true`` for exactly once),
``postgres`` (rows and offsets in one transaction per range, see :mod:`.postgres`), ``stdout``
(JSON lines), ``count`` (counts only) and ``python`` (a user factory, see :mod:`.python_entry`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from directstream.executor.contract import ProcessorSettings, WorkUnit
from directstream.executor.errors import ConfigurationError
from directstream.executor.processors.base import BaseProcessor, CountProcessor, Processor
from directstream.executor.processors.jsonl import JsonlProcessor
from directstream.executor.processors.kafka_sink import KafkaProcessor
from directstream.executor.processors.postgres import PostgresProcessor
from directstream.executor.processors.python_entry import PythonProcessor
from directstream.executor.processors.stdout import StdoutProcessor

__all__ = ["SINKS", "BaseProcessor", "CountProcessor", "Processor", "build_processor"]

SINKS: dict[str, Callable[[Mapping[str, Any], WorkUnit], Processor]] = {
    "jsonl": lambda options, unit: JsonlProcessor(options),
    "kafka": KafkaProcessor,
    "postgres": PostgresProcessor,
    "stdout": lambda options, unit: StdoutProcessor(),
    "count": lambda options, unit: CountProcessor(),
    "python": PythonProcessor,
}


def build_processor(settings: ProcessorSettings, unit: WorkUnit) -> Processor:
    """The processor for ``settings``; :class:`ConfigurationError` for an unknown sink or bad options."""
    factory = SINKS.get(settings.sink)
    if factory is None:
        raise ConfigurationError(f"unknown sink {settings.sink!r}; known sinks: {', '.join(sorted(SINKS))}")
    if not isinstance(settings.options, Mapping):
        raise ConfigurationError(f"processor.options for sink {settings.sink!r} must be a mapping")
    return factory(settings.options, unit)
