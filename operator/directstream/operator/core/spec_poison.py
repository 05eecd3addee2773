"""``spec.processor.decode`` / ``onError`` / ``deadLetter``: read field by field, checked by the
contract's own parser (the executor reads the pinned copy with the same one)."""

from __future__ import annotations

from typing import Any

from directstream.executor.contract import PoisonOptionsError, PoisonPolicy, parse_poison
from directstream.executor.contract.poison import DEAD_LETTER_OPTIONS

from .spec_fields import Problems, Section, check_topic_name, join


def read_poison(s: Section) -> PoisonPolicy:
    """The poison policy of the processor section ``s`` (problems go to ``s.problems``)."""
    doc: dict[str, Any] = {}
    decode = s.section("decode")
    formats = {name: decode.raw(name) for name in ("key", "value")}
    decode.close()
    if any(v is not None for v in formats.values()):
        doc["decode"] = {k: v for k, v in formats.items() if v is not None}
    if s.has("onError"):
        doc["onError"] = s.raw("onError")
    present = s.has("deadLetter")
    dead_letter = s.section("deadLetter")
    fields = {name: dead_letter.raw(name) for name in DEAD_LETTER_OPTIONS}
    dead_letter.close()
    if present:
        doc["deadLetter"] = {k: v for k, v in fields.items() if v is not None}
    try:
        policy = parse_poison(doc)
    except PoisonOptionsError as exc:
        s.problems.add(join(s.path, exc.option), exc.reason)
        return PoisonPolicy()
    if policy.dead_letter is not None:
        check_topic_name(policy.dead_letter.topic, s.at("deadLetter.topic"), s.problems)
    return policy


def check_dead_letter_loop(stream: Any, problems: Problems) -> None:
    """A dead-letter topic the stream itself reads would feed its poison back to it forever."""
    dead_letter = stream.processor.poison.dead_letter
    if dead_letter is None or dead_letter.bootstrap_servers is not None:
        return  # another cluster: its topics are not the stream's
    if stream.matches_topic(dead_letter.topic):
        problems.add(
            "spec.processor.deadLetter.topic",
            f"{dead_letter.topic!r} is one of the topics this stream reads: its dead letters would come back "
            "to it as poison again; use another topic",
        )


def describe_policy(policy: PoisonPolicy) -> str:
    """One line for ``directstream plan`` and the kubectl plugin."""
    decode = (
        ", ".join(f"{k} {v}" for k, v in (("key", policy.key), ("value", policy.value)) if v) or "default"
    )
    target = f" to {policy.dead_letter.topic}" if policy.dead_letter is not None else ""
    return f"onError {policy.on_error}{target}; decode {decode}"
