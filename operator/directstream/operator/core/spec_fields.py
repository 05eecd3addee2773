"""Typed field readers for the spec parser: every check records a problem and returns a fallback.

Parsing never stops at the first bad field, so a user sees all of them at once. A ``Section`` remembers
which fields were asked for; whatever else the mapping holds is reported by ``close`` as an unknown field,
so adding a field to the spec means adding one reader call and nothing else.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from directstream.operator.core.durations import parse_duration
from directstream.operator.core.topic_pattern import PatternError, compile_pattern

T = TypeVar("T", bound=str)

# Offsets and timestamps travel as signed 64-bit integers in the Kafka protocol.
INT64_MAX = 2**63 - 1

TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# RFC 3339 date-time with upper-case T and Z (as datetime.fromisoformat reads it); the CRD has this pattern.
# The offset is optional here only so that a time without one gets its own, clearer message.
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})?"
)
PARTITION_KEY = re.compile(r"[0-9]{1,10}")
MAX_PARTITION = 2**31 - 1  # partitions are int32 in the Kafka protocol

# host:port with an optional scheme (librdkafka accepts PLAINTEXT://host:port) and [IPv6] hosts.
HOST_PORT = re.compile(
    r"(?:[A-Za-z_]+://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?):(\d{1,5})"
)


class Problems:
    """Collected ``(path, message)`` pairs, in the order found."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.asked: dict[str, None] = {}  # every field path a reader looked at, in order (known_spec_fields)

    def add(self, path: str, message: str) -> None:
        self.items.append((path or "<document>", message))


def join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def describe(value: object) -> str:
    """``a string ('abc')``: the kind of a value and a short rendering of it, for error messages."""
    kind = type_name(value)
    if value is None or isinstance(value, Mapping | list | tuple):
        return kind
    shown = repr(value) if not isinstance(value, bool) else str(value).lower()
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{kind} ({shown})"


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def closest_name(name: str, known: list[str]) -> str | None:
    """The known field ``name`` was most likely meant to be (case, ``_`` and ``-`` ignored first)."""

    def fold(text: str) -> str:
        return text.replace("_", "").replace("-", "").lower()

    for candidate in known:
        if fold(candidate) == fold(name):
            return candidate
    folded = {fold(candidate): candidate for candidate in known}
    matches = difflib.get_close_matches(fold(name), list(folded), n=1, cutoff=0.6)
    return folded[matches[0]] if matches else None


def check_int(
    value: object, path: str, problems: Problems, *, minimum: int | None = None, maximum: int = INT64_MAX
) -> int | None:
    # bool is a subclass of int in Python; `maxAttempts: true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(path, f"expected an integer, got {describe(value)}")
        return None
    if minimum is not None and value < minimum:
        problems.add(path, f"must be >= {minimum}, got {value}")
        return None
    if value > maximum:
        problems.add(path, f"must be <= {maximum}, got {value}")
        return None
    return value


def check_number(
    value: object,
    path: str,
    problems: Problems,
    *,
    minimum: float | None = None,
    positive: bool = False,
    maximum: float | None = None,
) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(path, f"expected a number, got {describe(value)}")
        return None
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        problems.add(path, f"must be a finite number, got {describe(value)}")
        return None
    if positive and number <= 0:
        problems.add(path, f"must be > 0, got {value}")
        return None
    if minimum is not None and number < minimum:
        problems.add(path, f"must be >= {minimum:g}, got {value}")
        return None
    if maximum is not None and number > maximum:
        problems.add(path, f"must be <= {maximum:g}, got {value}")
        return None
    return number


def check_topic_name(value: object, path: str, problems: Problems) -> str | None:
    if not isinstance(value, str):
        problems.add(path, f"expected a topic name (string), got {describe(value)}")
        return None
    if not TOPIC_NAME.fullmatch(value) or value in {".", ".."}:
        problems.add(
            path, f"{value!r} is not a valid Kafka topic name (1-249 of a-z A-Z 0-9 . _ -, not '.' or '..')"
        )
        return None
    return value


class Section:
    """A mapping found at ``path``, read field by field."""

    def __init__(self, data: Mapping[Any, Any], path: str, problems: Problems) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self._asked: list[str] = []

    def at(self, key: str) -> str:
        return join(self.path, key)

    def raw(self, key: str) -> Any:
        """The value of ``key``; ``None`` when absent or null (YAML ``rate:`` with nothing under it)."""
        if key not in self._asked:
            self._asked.append(key)
            self.problems.asked[self.at(key)] = None
        return self.data.get(key)

    def has(self, key: str) -> bool:
        return self.raw(key) is not None

    def required(self, key: str) -> Any:
        value = self.raw(key)
        if value is None:
            self.problems.add(self.at(key), "required field is missing")
        return value

    def string(self, key: str, default: str, *, required: bool = False, non_empty: bool = False) -> str:
        value = self.required(key) if required else self.raw(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.problems.add(self.at(key), f"expected a string, got {describe(value)}")
            return default
        if non_empty and not value.strip():
            self.problems.add(self.at(key), "must not be empty")
            return default
        return value

    def integer(self, key: str, default: int, *, minimum: int | None = None, maximum: int = INT64_MAX) -> int:
        value = self.raw(key)
        if value is None:
            return default
        checked = check_int(value, self.at(key), self.problems, minimum=minimum, maximum=maximum)
        return default if checked is None else checked

    def number(
        self,
        key: str,
        default: float,
        *,
        minimum: float | None = None,
        positive: bool = False,
        maximum: float | None = None,
    ) -> float:
        value = self.raw(key)
        if value is None:
            return default
        checked = check_number(
            value, self.at(key), self.problems, minimum=minimum, positive=positive, maximum=maximum
        )
        return default if checked is None else checked

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problems.add(self.at(key), f"expected a boolean (true or false), got {describe(value)}")
            return default
        return value

    def choice(self, key: str, default: T, options: tuple[T, ...]) -> T:
        value = self.raw(key)
        if value is None:
            return default
        for option in options:
            if value == option:
                return option
        self.problems.add(self.at(key), f"expected one of {', '.join(options)}, got {describe(value)}")
        return default

    def section(self, key: str, *, required: bool = False) -> Section:
        """The mapping under ``key``; an empty section (so reading goes on) when absent or mistyped."""
        value = self.required(key) if required else self.raw(key)
        if value is not None and not isinstance(value, Mapping):
            self.problems.add(self.at(key), f"expected a mapping, got {describe(value)}")
        return Section(value if isinstance(value, Mapping) else {}, self.at(key), self.problems)

    def mapping(self, key: str, *, string_values: bool = False) -> dict[str, Any]:
        """A free-form mapping passed through as is (pod settings), checked for shape only."""
        value = self.raw(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problems.add(self.at(key), f"expected a mapping, got {describe(value)}")
            return {}
        result: dict[str, Any] = {}
        for item_key, item in value.items():
            item_path = join(self.at(key), item_key)
            if not isinstance(item_key, str):
                self.problems.add(item_path, f"keys must be strings, got {describe(item_key)}")
            elif string_values and not isinstance(item, str):
                self.problems.add(item_path, f"expected a string, got {describe(item)}")
            else:
                result[item_key] = item
        return result

    def mapping_list(self, key: str) -> tuple[dict[str, Any], ...]:
        """A list of mappings (env entries, tolerations), checked for shape only."""
        value = self.raw(key)
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            self.problems.add(self.at(key), f"expected a list, got {describe(value)}")
            return ()
        items: list[dict[str, Any]] = []
        for index, item in enumerate(value):
            if isinstance(item, Mapping) and all(isinstance(k, str) for k in item):
                items.append(dict(item))
            else:
                self.problems.add(join(self.at(key), index), f"expected a mapping, got {describe(item)}")
        return tuple(items)

    def close(self) -> None:
        """Report every field present but never asked for."""
        for key in self.data:
            if not isinstance(key, str):
                self.problems.add(join(self.path, key), f"field names must be strings, got {describe(key)}")
            elif key not in self._asked:
                hint = closest_name(key, self._asked)
                suggestion = f"did you mean {hint!r}?" if hint else f"known fields: {', '.join(self._asked)}"
                self.problems.add(join(self.path, key), f"unknown field {key!r}; {suggestion}")


def check_name(value: object, path: str, problems: Problems) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.add(path, f"expected a string, got {describe(value)}")
        return ""
    if not DNS_LABEL.fullmatch(value):
        problems.add(
            path,
            f"{value!r} is not a valid name: at most 63 of a-z 0-9 '-', starting and ending alphanumeric",
        )
        return ""
    return value


def read_bootstrap_servers(s: Section) -> str:
    value = s.required("bootstrapServers")
    path = s.at("bootstrapServers")
    if value is None:
        return ""
    if isinstance(value, str):
        servers = [part.strip() for part in value.split(",")]
    elif isinstance(value, list | tuple) and all(isinstance(part, str) for part in value):
        servers = [part.strip() for part in value]
    else:
        s.problems.add(path, f"expected a string such as 'host:9092,host2:9092', got {describe(value)}")
        return ""
    if not any(servers):
        s.problems.add(path, "must name at least one broker as host:port")
        return ""
    for server in servers:
        match = HOST_PORT.fullmatch(server)
        if match is None or not 1 <= int(match.group(3)) <= 65535:
            s.problems.add(path, f"{server!r} is not host:port (port 1-65535)")
            return ""
    return ",".join(servers)


def check_pattern(value: object, path: str, problems: Problems) -> str | None:
    if not isinstance(value, str):
        problems.add(path, f"expected a regular expression (string), got {describe(value)}")
        return None
    if not value:
        problems.add(path, "must not be empty")
        return None
    try:
        compile_pattern(value)
    except PatternError as exc:
        problems.add(path, f"{value!r} is not a valid regular expression: {exc}")
        return None
    return value


def timestamp_millis(value: object, path: str, problems: Problems) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return check_int(value, path, problems, minimum=0)  # epoch milliseconds
    moment: datetime | None = None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip()) if RFC3339.fullmatch(value.strip()) else None
        except ValueError:
            moment = None
        if moment is None:
            problems.add(path, f"{value!r} is not an RFC 3339 time such as 2026-11-01T00:00:00Z")
            return None
    elif isinstance(value, datetime):  # YAML loads an unquoted timestamp as a datetime
        moment = value
    if moment is None or (isinstance(value, date) and not isinstance(value, datetime)):
        problems.add(path, f"expected an RFC 3339 time or epoch milliseconds, got {describe(value)}")
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        problems.add(path, f"{moment.isoformat()!r} has no UTC offset; write e.g. 2026-11-01T00:00:00Z")
        return None
    millis = (moment - EPOCH) // timedelta(milliseconds=1)
    if millis < 0:
        problems.add(path, "must not be before 1970-01-01T00:00:00Z")
        return None
    return millis


def read_duration(s: Section, key: str, default: float) -> float:
    """A positive duration: ``500ms``, ``5s``, ``1m30s``, ``1h``, or whole seconds (``5`` or ``"5"``).

    Non-integer bare numbers are refused (write ``"0.5"`` or ``500ms``): the CRD declares durations as
    int-or-string, so the same manifest means the same in local mode and on a cluster.
    """
    value, path = s.raw(key), s.at(key)
    if value is None:
        return default
    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            s.problems.add(path, str(exc))
            return default
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = float(value) if abs(value) < 1e300 else math.inf
    else:
        s.problems.add(
            path, f"expected a duration such as 5s, 500ms or a whole number of seconds, got {describe(value)}"
        )
        return default
    if not 0 < seconds < math.inf:
        s.problems.add(path, f"must be a positive finite duration, got {describe(value)}")
        return default
    return seconds


def read_explicit_offsets(
    value: object, path: str, problems: Problems, subscribed: Callable[[str], bool] | None
) -> dict[str, dict[int, int]]:
    """``{topic: {partition: offset}}``; ``subscribed`` (if given) must accept every topic."""
    if not isinstance(value, Mapping) or not value:
        problems.add(
            path, f"expected a non-empty mapping topic -> {{partition: offset}}, got {describe(value)}"
        )
        return {}
    result: dict[str, dict[int, int]] = {}
    for topic, partitions in value.items():
        topic_path = join(path, topic)
        name = check_topic_name(topic, topic_path, problems)
        if name is None:
            continue
        if subscribed is not None and not subscribed(name):
            problems.add(topic_path, f"topic {name!r} is not subscribed by spec.topics / spec.topicPattern")
        if not isinstance(partitions, Mapping):
            problems.add(topic_path, f"expected a mapping partition -> offset, got {describe(partitions)}")
            continue
        chosen: dict[int, int] = {}
        for key, offset in partitions.items():
            key_path = join(topic_path, key)
            if isinstance(key, int) and not isinstance(key, bool) and 0 <= key <= MAX_PARTITION:
                partition = key
            elif isinstance(key, str) and PARTITION_KEY.fullmatch(key) and int(key) <= MAX_PARTITION:
                partition = int(key)
            else:
                problems.add(key_path, f"partition must be a non-negative integer, got {describe(key)}")
                continue
            if partition in chosen:
                problems.add(key_path, f"partition {partition} is given twice")
                continue
            if isinstance(offset, int) and not isinstance(offset, bool) and offset < 0:
                problems.add(key_path, f"offset must be >= 0 (use earliest or latest instead), got {offset}")
                continue
            checked = check_int(offset, key_path, problems, minimum=0)
            if checked is not None:
                chosen[partition] = checked
        result[name] = chosen
    return result
