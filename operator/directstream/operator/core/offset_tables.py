"""Per-partition numbers in the stored state, compactly (pure).

A status holds a few numbers for every partition (committed offsets, a recorded plan's record
counts and starts). Kept as ``{topic: {"partition": n}}`` they cost ~18 bytes a partition each,
so a plan over 30k partitions came near etcd's object limit. Per topic, a *table* instead:

- dense, partitions ``first .. first+len-1`` all present: ``{"first": 0, "offsets": [n0, n1, ...]}``
- uniform, contiguous and all the same: ``{"first": 0, "last": 999, "value": n}``
- sparse, otherwise: ``{"partitions": [0, 7], "offsets": [n0, n7]}``

(``offsets`` is the values' key; a plan's counts use ``counts``). Partition sets are text:
``"0-999,1003"``. The value of partition ``p`` is ``offsets[p - first]`` in a dense table.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

TopicPartition = tuple[str, int]
# Fewer partitions than this are written dense even when uniform (it saves nothing).
_UNIFORM_FROM = 3


def table_to_json(values: Mapping[int, int], key: str = "offsets") -> dict[str, Any]:
    """One topic's ``{partition: value}`` as a table."""
    parts = sorted(values)
    if not parts:
        return {"partitions": [], key: []}
    first, last = parts[0], parts[-1]
    numbers = [values[p] for p in parts]
    if last - first + 1 == len(parts):
        if len(parts) >= _UNIFORM_FROM and len(set(numbers)) == 1:
            return {"first": first, "last": last, "value": numbers[0]}
        return {"first": first, key: numbers}
    return {"partitions": parts, key: numbers}


def table_from_json(doc: Mapping[str, Any], key: str = "offsets") -> dict[int, int]:
    """The inverse of :func:`table_to_json`; ``ValueError`` for a table that is not one."""
    if "value" in doc:
        first, last = int(doc["first"]), int(doc["last"])
        if last < first:
            raise ValueError(f"table last {last} is before first {first}")
        return dict.fromkeys(range(first, last + 1), int(doc["value"]))
    numbers = [int(n) for n in doc[key]]
    if "partitions" in doc:
        parts = [int(p) for p in doc["partitions"]]
        if len(parts) != len(numbers):
            raise ValueError(f"table has {len(parts)} partitions but {len(numbers)} {key}")
    else:
        first = int(doc["first"])
        parts = list(range(first, first + len(numbers)))
    if any(p < 0 for p in parts):
        raise ValueError("table has a negative partition")
    return dict(zip(parts, numbers, strict=True))


def tables_to_json(values: Mapping[TopicPartition, int], key: str = "offsets") -> dict[str, dict[str, Any]]:
    """``{topic: table}`` for every topic in ``values``."""
    by_topic: dict[str, dict[int, int]] = defaultdict(dict)
    for (topic, partition), value in values.items():
        by_topic[topic][partition] = value
    return {topic: table_to_json(parts, key) for topic, parts in sorted(by_topic.items())}


def tables_from_json(doc: Mapping[str, Mapping[str, Any]], key: str = "offsets") -> dict[TopicPartition, int]:
    return {(str(t), p): v for t, table in doc.items() for p, v in table_from_json(table, key).items()}


def partitions_to_text(partitions: Iterable[int]) -> str:
    """``"0-3,7,9-12"``: a set of partitions as runs."""
    runs: list[str] = []
    parts = sorted(set(partitions))
    i = 0
    while i < len(parts):
        j = i
        while j + 1 < len(parts) and parts[j + 1] == parts[j] + 1:
            j += 1
        runs.append(str(parts[i]) if i == j else f"{parts[i]}-{parts[j]}")
        i = j + 1
    return ",".join(runs)


def partitions_from_text(text: str) -> list[int]:
    out: list[int] = []
    for run in filter(None, text.split(",")):
        low, _, high = run.partition("-")
        start, end = int(low), int(high or low)
        if end < start or start < 0:
            raise ValueError(f"partition run {run!r} is not low-high")
        out.extend(range(start, end + 1))
    return out


def partition_sets_to_json(tps: Iterable[TopicPartition]) -> dict[str, str]:
    by_topic: dict[str, list[int]] = defaultdict(list)
    for topic, partition in tps:
        by_topic[topic].append(partition)
    return {topic: partitions_to_text(parts) for topic, parts in sorted(by_topic.items())}


def partition_sets_from_json(doc: Mapping[str, str]) -> list[TopicPartition]:
    return sorted((str(t), p) for t, text in doc.items() for p in partitions_from_text(str(text)))


# -- the format before tables (state version 1): still read, so a running stream is adopted ------


def legacy_offsets_from_json(doc: Mapping[str, Mapping[str, int]]) -> dict[TopicPartition, int]:
    """``{topic: {"partition": offset}}``, as state version 1 stored offsets."""
    return {(t, int(p)): int(o) for t, parts in doc.items() for p, o in parts.items()}
