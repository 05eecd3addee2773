"""The ``python`` sink: a user's processor, loaded from ``options.entryPoint``.

The rule: ``entryPoint`` is ``"package.module:attribute"`` naming a **factory**, called once per
work unit as ``factory(options, unit)`` where ``options`` are the sink options without
``entryPoint`` and ``unit`` is the :class:`~directstream.executor.contract.WorkUnit`. A class is a
fine factory. The object it returns has exactly one of the two entry points:

- ``process(records, range)``, per chunk: ``records`` is a sequence of up to 10,000 records
  (the executor's ``--chunk-size``) of one range, in offset order. The fastest: one Python call
  per chunk, and whole-chunk tools (``map``, a bulk insert, a columnar encoder) apply. It may
  return the chunk's poison records, ``[PoisonRecord(reason, record=r), ...]`` (None or nothing:
  none); ``spec.processor.onError`` decides for each, as below.
- ``process_record(record, range)``, per record, in offset order: the simplest; costs a Python
  call per record. Raising :class:`directstream.executor.PoisonRecord` marks that one record as
  poison: ``spec.processor.onError`` decides (``fail``, the default, fails the range at its
  offset; ``skip`` drops and counts it; ``deadLetter`` writes its original bytes to the
  dead-letter topic). Any other exception fails the range at that record's offset.

It may also have ``open_range(range)``, ``close_range(range)``, ``abort_range(range)`` and
``close()``; the ones it lacks are no-ops. Call order and meaning:
:mod:`directstream.executor.processors.base`.

Records are ``confluent_kafka.Message`` objects (see ``KafkaRecord``); with ``spec.processor.decode``
they are :class:`~directstream.executor.decoding.DecodedRecord` s whose ``key()`` / ``value()`` are
the decoded values (a ``json`` value parsed) and ``raw_key()`` / ``raw_value()`` the bytes.
An exception raised by ``process`` or ``close_range`` fails the range at the chunk's first
offset; ``abort_range`` then runs for every open range.

Example::

    class Upsert:
        def __init__(self, options, unit): self.table = options["table"]
        def process(self, records, range): ...  # or: def process_record(self, record, range)
        def close_range(self, range): ...  # commit the range's writes
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from directstream.executor.contract import OffsetRange, WorkUnit
from directstream.executor.errors import ConfigurationError, PoisonRecord, RangeFailedError
from directstream.executor.processors.base import BaseProcessor
from directstream.executor.records import KafkaRecord

_OPTIONAL_METHODS = ("open_range", "close_range", "abort_range", "close")


def load_entry_point(entry_point: object) -> Callable[..., Any]:
    if not isinstance(entry_point, str) or entry_point.count(":") != 1:
        raise ConfigurationError(
            f"python sink needs options.entryPoint 'package.module:factory', got {entry_point!r}"
        )
    module_name, _, attribute = entry_point.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing user code is bad input
        raise ConfigurationError(f"python sink cannot import {module_name!r}: {exc!r}") from exc
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigurationError(
                f"python sink entry point {entry_point!r}: {module_name} has no {attribute!r}"
            )
    if not callable(target):
        raise ConfigurationError(f"python sink entry point {entry_point!r} is not callable")
    return target  # type: ignore[no-any-return]


def _chunk_start(records: Sequence[KafkaRecord], range_: OffsetRange) -> int:
    offset = records[0].offset() if records else None
    return range_.from_offset if offset is None else offset


def _poison_offset(poison: object) -> int:
    record = getattr(poison, "record", None)
    offset = record.offset() if record is not None else None
    return -1 if offset is None else offset


class PythonProcessor(BaseProcessor):
    """Adapts the user's object to the full protocol."""

    # Set by the poison guard under onError skip / deadLetter: what a PoisonRecord does.
    on_poison: Callable[[KafkaRecord, OffsetRange, str], None] | None = None

    def __init__(self, options: Mapping[str, Any], unit: WorkUnit) -> None:
        factory = load_entry_point(options.get("entryPoint"))
        user_options = {k: v for k, v in options.items() if k != "entryPoint"}
        try:
            self.user = factory(user_options, unit)
        except ConfigurationError:
            raise
        except Exception as exc:
            raise ConfigurationError(
                f"python sink factory {options['entryPoint']!r} failed: {exc!r}"
            ) from exc
        entry = options["entryPoint"]
        process = getattr(self.user, "process", None)
        process_record = getattr(self.user, "process_record", None)
        if callable(process) and callable(process_record):
            raise ConfigurationError(
                f"python sink: the object returned by {entry!r} has both process(records, range) "
                "and process_record(record, range); keep one"
            )
        if callable(process):
            self._process: Callable[[Sequence[KafkaRecord], OffsetRange], object] = process
        elif callable(process_record):
            self._process_record: Callable[[KafkaRecord, OffsetRange], object] = process_record
            self._process = self._each_record
        else:
            raise ConfigurationError(
                f"python sink: the object returned by {entry!r} has neither process(records, range) "
                "nor process_record(record, range)"
            )
        for name in _OPTIONAL_METHODS:
            method = getattr(self.user, name, None)
            if callable(method):
                setattr(self, name, method)

    def process(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        try:
            rejected = self._process(records, range_)
        except PoisonRecord as exc:
            at = _chunk_start(records, range_)
            raise RangeFailedError(
                range_,
                at,
                f"processor process raised {exc.reason}: per chunk, return the poison records "
                "(PoisonRecord(reason, record=r)) instead, so the rest of the chunk stands",
            ) from exc
        if rejected is not None:
            self._rejected(rejected, records, range_)

    def _rejected(self, rejected: object, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        """The poison records ``process`` returned, each checked to be a record of this chunk."""
        if not isinstance(rejected, Iterable) or isinstance(rejected, str | bytes | Mapping):
            raise RangeFailedError(
                range_,
                _chunk_start(records, range_),
                f"processor process returned {type(rejected).__name__}: expected None or an iterable "
                "of PoisonRecord(reason, record=r)",
            )
        offsets = {record.offset() for record in records}
        for poison in sorted(rejected, key=_poison_offset):
            if not isinstance(poison, PoisonRecord) or poison.record is None:
                raise RangeFailedError(
                    range_,
                    _chunk_start(records, range_),
                    f"processor process returned {poison!r}: each poison record is "
                    "PoisonRecord(reason, record=r) with r one of the chunk's records",
                )
            offset = poison.record.offset()
            if offset not in offsets:
                raise RangeFailedError(
                    range_,
                    _chunk_start(records, range_),
                    f"processor process returned a PoisonRecord for offset {offset}, not in this chunk",
                )
            self._poison(poison, poison.record, range_)

    def _poison(self, poison: PoisonRecord, record: KafkaRecord, range_: OffsetRange) -> None:
        if self.on_poison is not None:
            self.on_poison(record, range_, poison.reason)  # skip / dead letter; fail raises
            return
        offset = record.offset()
        at = range_.from_offset if offset is None else offset
        raise RangeFailedError(
            range_, at, f"poison record at {range_.topic}[{range_.partition}] offset {at}: {poison.reason}"
        ) from poison

    def _each_record(self, records: Sequence[KafkaRecord], range_: OffsetRange) -> None:
        process_record = self._process_record
        for record in records:
            try:
                process_record(record, range_)
            except PoisonRecord as exc:
                self._poison(exc, record, range_)
            except Exception as exc:
                offset = record.offset()
                raise RangeFailedError(
                    range_,
                    range_.from_offset if offset is None else offset,
                    f"processor process_record failed: {exc!r}",
                ) from exc
