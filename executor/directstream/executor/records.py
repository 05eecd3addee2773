"""The record type processors receive, and its JSON encoding shared by the text sinks.

Processors get the raw ``confluent_kafka.Message`` objects (no per-record wrapper: it would
cost more than the consume loop itself); ``KafkaRecord`` is the subset of their interface a
processor may rely on.

JSON encoding of one record (jsonl and stdout sinks)::

    {"topic": "t", "partition": 0, "offset": 42, "timestamp": 1700000000000,
     "key": "k", "value": "v", "headers": [["h1", "text"], ["h2", null], ["h3", null, "AAE="]]}

- ``timestamp`` is milliseconds since the epoch, or null when the record has none.
- ``key`` / ``value`` are text when they are valid UTF-8 (null when absent); otherwise the object
  carries ``keyBase64`` / ``valueBase64`` (standard base64) instead of ``key`` / ``value``.
- ``headers`` is a list of ``[name, text-or-null]`` in record order (names may repeat). A header
  value that is not valid UTF-8 becomes ``[name, null, base64]``: element 1 stays "text or null"
  for readers that only want text, element 2 carries the exact bytes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, Protocol

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

# A consumed record's headers come as a list; a dict is accepted for records built by hand.
Headers = list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None]


class KafkaRecord(Protocol):
    """What a processor may call on a record (``confluent_kafka.Message`` satisfies it)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Headers | None: ...
    def timestamp(self) -> tuple[int, int]: ...


# Unbound C methods: map() over them keeps per-record work out of the Python interpreter.
message_key = Message.key
message_offset = Message.offset


def payload_bytes(records: Sequence[KafkaRecord]) -> int:
    """Key plus value bytes of ``records`` (``len(message)`` is the value's length)."""
    messages: Any = records  # Message's C methods only accept Messages; records are Messages
    return sum(map(len, messages)) + sum(map(len, filter(None, map(message_key, messages))))


def _put_bytes(doc: dict[str, Any], name: str, data: bytes | None) -> None:
    if data is None:
        doc[name] = None
        return
    try:
        doc[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        doc[name + "Base64"] = base64.b64encode(data).decode("ascii")


def _header_entry(name: str, data: bytes | str | None) -> list[str | None]:
    if data is None:
        return [name, None]
    if isinstance(data, str):
        return [name, data]
    try:
        return [name, data.decode("utf-8")]
    except UnicodeDecodeError:
        return [name, None, base64.b64encode(data).decode("ascii")]


def record_to_json(record: KafkaRecord) -> dict[str, Any]:
    """The JSON object for one record (see the module docstring)."""
    timestamp_type, timestamp = record.timestamp()
    doc: dict[str, Any] = {
        "topic": record.topic(),
        "partition": record.partition(),
        "offset": record.offset(),
        "timestamp": None if timestamp_type == TIMESTAMP_NOT_AVAILABLE else timestamp,
    }
    _put_bytes(doc, "key", record.key())
    _put_bytes(doc, "value", record.value())
    headers = record.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    doc["headers"] = [_header_entry(name, data) for name, data in pairs]
    return doc


_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def json_lines(records: Sequence[KafkaRecord]) -> str:
    """``records`` as JSON lines, each terminated by a newline."""
    lines = [_encode_json(record_to_json(record)) for record in records]
    lines.append("")
    return "\n".join(lines)
