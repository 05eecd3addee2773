"""``processor.decode``: turning a record's key and value bytes into what the processor receives.

A :class:`Decoder` is one format (``bytes``, ``string``, ``json``); it raises :class:`DecodeError`
for bytes it cannot decode, which makes the record a poison record. Schema-aware formats (Avro or
Protobuf with a schema registry) fit the same protocol later: a decoder built once per work unit
from its options, registered in :data:`DECODERS`.

A decoded record is a :class:`DecodedRecord`: ``key()`` / ``value()`` return the decoded values
(``bytes``, ``str`` or the parsed JSON value), ``raw_key()`` / ``raw_value()`` the original bytes,
and ``json_object()`` the JSON-lines object the text sinks write (a ``json`` value as a JSON value,
a ``bytes`` one as ``valueBase64``, a side left undecoded by the usual text-or-base64 rule).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from directstream.executor.contract.poison import DecodeFormat, PoisonPolicy
from directstream.executor.records import Headers, KafkaRecord, header_entry, put_bytes


class DecodeError(ValueError):
    """The bytes are not of the expected format; the message says why."""


class Decoder(Protocol):
    name: str

    def decode(self, data: bytes) -> Any: ...


class BytesDecoder:
    name = "bytes"

    def decode(self, data: bytes) -> Any:
        return data


class StringDecoder:
    name = "string"

    def decode(self, data: bytes) -> Any:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not valid UTF-8 at byte {exc.start}") from exc


class JsonDecoder:
    name = "json"

    def __init__(self) -> None:
        self._decode = msgspec.json.Decoder().decode

    def decode(self, data: bytes) -> Any:
        try:
            return self._decode(data)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"not JSON: {exc}") from exc


DECODERS: dict[str, Callable[[], Decoder]] = {
    "bytes": BytesDecoder,
    "string": StringDecoder,
    "json": JsonDecoder,
}


class DecodedRecord:
    """A record with decoded key and value; everything else is the original message's."""

    __slots__ = ("_key", "_key_format", "_value", "_value_format", "message")

    def __init__(
        self,
        message: KafkaRecord,
        key: Any,
        value: Any,
        key_format: DecodeFormat | None,
        value_format: DecodeFormat | None,
    ) -> None:
        self.message = message
        self._key, self._value = key, value
        self._key_format, self._value_format = key_format, value_format

    def topic(self) -> str | None:
        return self.message.topic()

    def partition(self) -> int | None:
        return self.message.partition()

    def offset(self) -> int | None:
        return self.message.offset()

    def headers(self) -> Headers | None:
        return self.message.headers()

    def timestamp(self) -> tuple[int, int]:
        return self.message.timestamp()

    def key(self) -> Any:
        return self._key

    def value(self) -> Any:
        return self._value

    def raw_key(self) -> bytes | None:
        return self.message.key()

    def raw_value(self) -> bytes | None:
        return self.message.value()

    def json_object(self) -> dict[str, Any]:
        message = self.message
        kind, at = message.timestamp()
        doc: dict[str, Any] = {
            "topic": message.topic(),
            "partition": message.partition(),
            "offset": message.offset(),
            "timestamp": None if kind == TIMESTAMP_NOT_AVAILABLE else at,
        }
        _put_side(doc, "key", self._key_format, self._key, message.key())
        _put_side(doc, "value", self._value_format, self._value, message.value())
        headers = message.headers()
        if headers:
            pairs = headers.items() if isinstance(headers, dict) else headers
            doc["headers"] = [header_entry(name, data) for name, data in pairs]
        else:
            doc["headers"] = []
        return doc


def _put_side(
    doc: dict[str, Any], side: str, chosen: DecodeFormat | None, decoded: Any, raw: bytes | None
) -> None:
    if chosen is None:
        put_bytes(doc, side, raw)  # the usual rule: text when UTF-8, else base64
    elif chosen == "bytes" and decoded is not None:
        doc[side + "Base64"] = base64.b64encode(decoded).decode("ascii")
    else:
        doc[side] = decoded


def original(record: KafkaRecord) -> KafkaRecord:
    """The consumed message behind ``record`` (itself unless it is a :class:`DecodedRecord`)."""
    return record.message if isinstance(record, DecodedRecord) else record


class RecordDecoder:
    """Decodes records under a policy's ``decode``; ``decode`` raises :class:`DecodeError`."""

    def __init__(self, policy: PoisonPolicy) -> None:
        self.key_format, self.value_format = policy.key, policy.value
        self._key = DECODERS[policy.key]() if policy.key else None
        self._value = DECODERS[policy.value]() if policy.value else None

    def decode(self, record: KafkaRecord) -> DecodedRecord:
        key, value = record.key(), record.value()
        decoded_key: Any = key
        decoded_value: Any = value
        if self._key is not None and key is not None:
            try:
                decoded_key = self._key.decode(key)
            except DecodeError as exc:
                raise DecodeError(f"key is {exc}") from exc
        if self._value is not None and value is not None:
            try:
                decoded_value = self._value.decode(value)
            except DecodeError as exc:
                raise DecodeError(f"value is {exc}") from exc
        return DecodedRecord(record, decoded_key, decoded_value, self.key_format, self.value_format)
