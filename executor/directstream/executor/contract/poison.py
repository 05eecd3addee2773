"""What happens to a record that cannot be processed: ``processor.decode``, ``onError``, ``deadLetter``.

Shared by the spec parser (which reports a bad field with its path) and the executor (which reads
the pinned settings of a work unit). Plain data, no I/O.

- ``decode: {key, value}``: ``bytes`` | ``string`` | ``json`` each; unset keeps today's behaviour
  (text when valid UTF-8, else base64, decided by the sink). A value that does not decode is poison.
- ``onError``: ``fail`` (default: the unit fails at the record's offset), ``skip`` (dropped, counted)
  or ``deadLetter`` (the original bytes go to ``deadLetter.topic`` with headers, counted).
- ``deadLetter``: ``topic`` (required with ``deadLetter``), ``bootstrapServers`` (default the source
  cluster), ``config`` (librdkafka producer settings), ``transactionalIdPrefix`` (default
  ``directstream-<stream>-dlq``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .errors import ConfigurationError

DecodeFormat = Literal["bytes", "string", "json"]
OnError = Literal["fail", "skip", "deadLetter"]
DECODE_FORMATS: Final[tuple[DecodeFormat, ...]] = ("bytes", "string", "json")
ON_ERROR: Final[tuple[OnError, ...]] = ("fail", "skip", "deadLetter")
DEAD_LETTER_OPTIONS: Final = ("topic", "bootstrapServers", "config", "transactionalIdPrefix")
# The headers of a dead letter, in this order, after the record's own headers.
DEAD_LETTER_HEADERS: Final = (
    "directstream.error",
    "directstream.stream",
    "directstream.topic",
    "directstream.partition",
    "directstream.offset",
    "directstream.batch",
    "directstream.attempt",
)


class PoisonOptionsError(ConfigurationError):
    """A bad ``decode`` / ``onError`` / ``deadLetter`` field; ``option`` is its path under processor."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        self.reason = message
        super().__init__(f"processor.{option}: {message}")


@dataclass(frozen=True, slots=True)
class DeadLetterSettings:
    topic: str
    bootstrap_servers: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    transactional_id_prefix: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"topic": self.topic}
        if self.bootstrap_servers is not None:
            doc["bootstrapServers"] = self.bootstrap_servers
        if self.config:
            doc["config"] = dict(self.config)
        if self.transactional_id_prefix is not None:
            doc["transactionalIdPrefix"] = self.transactional_id_prefix
        return doc


@dataclass(frozen=True, slots=True)
class PoisonPolicy:
    """How records are decoded and what a poison record does; the default changes nothing."""

    key: DecodeFormat | None = None
    value: DecodeFormat | None = None
    on_error: OnError = "fail"
    dead_letter: DeadLetterSettings | None = None

    @property
    def decodes(self) -> bool:
        return self.key is not None or self.value is not None

    def to_json(self) -> dict[str, Any]:
        """The processor-level fields (``decode``, ``onError``, ``deadLetter``), only those set."""
        doc: dict[str, Any] = {}
        decode = {k: v for k, v in (("key", self.key), ("value", self.value)) if v is not None}
        if decode:
            doc["decode"] = decode
        if self.on_error != "fail":
            doc["onError"] = self.on_error
        if self.dead_letter is not None:
            doc["deadLetter"] = self.dead_letter.to_json()
        return doc


def parse_poison(processor: Mapping[str, Any]) -> PoisonPolicy:
    """``decode`` / ``onError`` / ``deadLetter`` of a processor mapping; :class:`PoisonOptionsError`."""
    decode = processor.get("decode", {})
    if not isinstance(decode, Mapping):
        raise PoisonOptionsError("decode", "expected a mapping with key and/or value")
    for name in decode:
        if name not in ("key", "value"):
            raise PoisonOptionsError(f"decode.{name}", "unknown field; expected key or value")
    formats: dict[str, DecodeFormat | None] = {}
    for name in ("key", "value"):
        chosen = decode.get(name)
        if chosen is not None and chosen not in DECODE_FORMATS:
            raise PoisonOptionsError(
                f"decode.{name}", f"expected one of {', '.join(DECODE_FORMATS)}, got {chosen!r}"
            )
        formats[name] = chosen
    on_error = processor.get("onError", "fail")
    if on_error not in ON_ERROR:
        raise PoisonOptionsError("onError", f"expected one of {', '.join(ON_ERROR)}, got {on_error!r}")
    dead_letter = _dead_letter(processor.get("deadLetter"))
    if on_error == "deadLetter" and dead_letter is None:
        raise PoisonOptionsError("deadLetter.topic", "required with onError: deadLetter")
    if on_error != "deadLetter" and dead_letter is not None:
        raise PoisonOptionsError("deadLetter", f"only used with onError: deadLetter (onError is {on_error})")
    return PoisonPolicy(formats["key"], formats["value"], on_error, dead_letter)


def _dead_letter(doc: Any) -> DeadLetterSettings | None:
    if doc is None:
        return None
    if not isinstance(doc, Mapping):
        raise PoisonOptionsError("deadLetter", "expected a mapping with topic")
    for name in doc:
        if name not in DEAD_LETTER_OPTIONS:
            raise PoisonOptionsError(
                f"deadLetter.{name}", f"unknown field; expected one of {', '.join(DEAD_LETTER_OPTIONS)}"
            )
    topic = doc.get("topic")
    if not isinstance(topic, str) or not topic.strip():
        raise PoisonOptionsError("deadLetter.topic", "expected a non-empty topic name")
    bootstrap = doc.get("bootstrapServers")
    if bootstrap is not None and (not isinstance(bootstrap, str) or not bootstrap.strip()):
        raise PoisonOptionsError("deadLetter.bootstrapServers", "expected host:port[,host:port...]")
    config = doc.get("config", {})
    if not isinstance(config, Mapping):
        raise PoisonOptionsError("deadLetter.config", "expected a mapping of librdkafka producer settings")
    for owned in ("transactional.id", "enable.idempotence"):
        if owned in config:
            raise PoisonOptionsError(f"deadLetter.config.{owned}", "set by directstream; remove it")
    prefix = doc.get("transactionalIdPrefix")
    if prefix is not None and (not isinstance(prefix, str) or not prefix.strip()):
        raise PoisonOptionsError("deadLetter.transactionalIdPrefix", "expected a non-empty string")
    return DeadLetterSettings(topic, bootstrap, dict(config), prefix)
