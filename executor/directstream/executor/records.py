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

The chunk encoder builds one ``msgspec`` struct per record from columns taken with C-level ``map``
calls, lazily, while a single ``encode_lines`` call encodes the whole chunk: about 9x faster than a
dict per record and :mod:`json`, with byte-identical output (``tests/unit/test_records.py``).
msgspec rather than orjson (``bench/json_encoders.py``): orjson has no lines encoder, one call per
record costs more than the encoding itself, and one call per chunk still needs a dict per record
built in Python (about 3x slower than the structs). ``record_to_json`` is the per-record reference
form of the same object.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any, Protocol

import msgspec
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from directstream.executor.contract import OffsetRange

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
message_value = Message.value
message_topic = Message.topic
message_partition = Message.partition
message_timestamp = Message.timestamp
message_headers = Message.headers


def payload_bytes(records: Sequence[KafkaRecord]) -> int:
    """Key plus value bytes of ``records`` (``len(message)`` is the value's length)."""
    messages: Any = records  # Message's C methods only accept Messages; records are Messages
    return sum(map(len, messages)) + sum(map(len, filter(None, map(message_key, messages))))


def put_bytes(doc: dict[str, Any], name: str, data: bytes | None) -> None:
    if data is None:
        doc[name] = None
        return
    try:
        doc[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        doc[name + "Base64"] = base64.b64encode(data).decode("ascii")


def header_entry(name: str, data: bytes | str | None) -> list[str | None]:
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
    put_bytes(doc, "key", record.key())
    put_bytes(doc, "value", record.value())
    headers = record.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    doc["headers"] = [header_entry(name, data) for name, data in pairs]
    return doc


_Unset = msgspec.UnsetType
_UNSET = msgspec.UNSET


class _JsonRecord(msgspec.Struct, gc=False, rename="camel"):
    """One record's JSON object. Field order is the documented key order; an ``UNSET`` field is
    left out (``key`` xor ``keyBase64``); ``bytes`` encode as standard base64. ``gc=False``: a
    chunk's structs hold only strings, ints and header lists, never cycles."""

    topic: str | None
    partition: int | None
    offset: int | None
    timestamp: int | None
    key: str | _Unset | None
    key_base64: bytes | _Unset  # "keyBase64"
    value: str | _Unset | None
    value_base64: bytes | _Unset
    headers: Sequence[Sequence[str | bytes | None]]


_encoder = msgspec.json.Encoder()
_NO_HEADERS: tuple[()] = ()

# (text column, base64 column) for keys or values: text or None where the record has it as such,
# UNSET where the bytes are not UTF-8 (the base64 column then holds them).
_Columns = tuple[Iterable[str | _Unset | None], Iterable[bytes | _Unset]]


def _byte_columns(data: list[bytes | None], optimistic: bool) -> _Columns:
    """``optimistic``: when nothing is null, decode lazily as text while the chunk is encoded; a
    record that is not UTF-8 then raises UnicodeDecodeError and the chunk is encoded again."""
    count = len(data)
    nulls = data.count(None)
    if nulls == count:  # the common null-key case stays in C
        return repeat(None, count), repeat(_UNSET, count)
    if optimistic and not nulls:
        return map(bytes.decode, data), repeat(_UNSET, count)  # type: ignore[arg-type]
    text: list[str | _Unset | None] = []
    binary: list[bytes | _Unset] = []
    for item in data:
        if item is None:
            text.append(None)
            binary.append(_UNSET)
            continue
        try:
            text.append(item.decode("utf-8"))
            binary.append(_UNSET)
        except UnicodeDecodeError:
            text.append(_UNSET)
            binary.append(item)
    return text, binary


def _header_json(headers: Headers | None) -> Sequence[Sequence[str | bytes | None]]:
    if not headers:
        return _NO_HEADERS
    pairs = headers.items() if isinstance(headers, dict) else headers
    entries: list[Sequence[str | bytes | None]] = []
    for name, data in pairs:
        if data is None or isinstance(data, str):
            entries.append((name, data))
            continue
        try:
            entries.append((name, data.decode("utf-8")))
        except UnicodeDecodeError:
            entries.append((name, None, data))  # bytes: encoded as base64
    return entries


def _json_records(
    records: Sequence[KafkaRecord], range_: OffsetRange | None, optimistic: bool
) -> Iterable[_JsonRecord]:
    """One struct per record, built column by column and lazily: the encoder frees each struct
    before it builds the next. Columns come from ``Message``'s unbound C methods, or from each
    record's methods when the records are other ``KafkaRecord`` s."""
    messages: Any = records
    count = len(records)
    not_available = TIMESTAMP_NOT_AVAILABLE
    topics: Iterable[str | None]
    partitions: Iterable[int | None]
    offsets: Iterable[int | None]
    try:
        # These raise TypeError at once unless every record is a Message; the lazy maps below
        # then only meet Messages.
        keys = list(map(message_key, messages))
        values = list(map(message_value, messages))
        headers = list(map(message_headers, messages))
        if range_ is None:
            topics, partitions = map(message_topic, messages), map(message_partition, messages)
        else:
            topics, partitions = repeat(range_.topic, count), repeat(range_.partition, count)
        offsets = map(message_offset, messages)
        # Each (type, timestamp) tuple is freed as soon as it is unpacked: a list of 10,000 live
        # tuples would trigger young garbage collections (and, through them, full ones).
        timestamps = [None if kind == not_available else at for kind, at in map(message_timestamp, messages)]
    except TypeError:  # not confluent_kafka Messages (records built by hand)
        topics = [r.topic() for r in records]
        partitions = [r.partition() for r in records]
        offsets = [r.offset() for r in records]
        keys = [r.key() for r in records]
        values = [r.value() for r in records]
        headers = [r.headers() for r in records]
        timestamps = [None if kind == not_available else at for kind, at in (r.timestamp() for r in records)]
    key_text, key_binary = _byte_columns(keys, optimistic)
    value_text, value_binary = _byte_columns(values, optimistic)
    header_json: Iterable[Sequence[Sequence[str | bytes | None]]] = (
        repeat(_NO_HEADERS, count) if headers.count(None) == count else map(_header_json, headers)
    )
    return map(
        _JsonRecord,
        topics,
        partitions,
        offsets,
        timestamps,
        key_text,
        key_binary,
        value_text,
        value_binary,
        header_json,
    )


def encode_json_lines(records: Sequence[KafkaRecord], range_: OffsetRange | None = None) -> bytes:
    """``records`` as UTF-8 JSON lines, each terminated by a newline (one encoder call per chunk).
    With ``range_``, every record is of that range (a processor's chunk) and its topic and
    partition are taken from it."""
    if not records:
        return b""
    first: Any = records[0]
    if type(first) is not Message and hasattr(first, "json_object"):  # decoded records (processor.decode)
        return _encoder.encode_lines([r.json_object() for r in records])  # type: ignore[attr-defined]
    try:
        return _encoder.encode_lines(_json_records(records, range_, optimistic=True))
    except UnicodeDecodeError:  # some key or value is binary: sort the chunk out record by record
        return _encoder.encode_lines(_json_records(records, range_, optimistic=False))


def json_lines(records: Sequence[KafkaRecord]) -> str:
    """``records`` as JSON lines, each terminated by a newline."""
    return encode_json_lines(records).decode("utf-8")
