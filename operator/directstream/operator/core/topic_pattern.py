"""``spec.topicPattern`` as an RE2 expression: matched in time linear in the topic name whatever the
pattern (no backtracking), since the operator matches every topic name against it each batch.

RE2 has no backreferences or lookaround; a pattern that needs them is refused with RE2's reason.
"""

from __future__ import annotations

import functools

import re2

RE2_NOTE = "topicPattern is an RE2 expression: no backreferences or lookaround"
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the reason goes into the spec error, not to stderr


class PatternError(ValueError):
    """A pattern RE2 cannot compile."""


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> re2._Regexp[str]:
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise PatternError(f"{text} ({RE2_NOTE})") from exc


def fullmatch(pattern: str, topic: str) -> bool:
    """Whether ``pattern`` matches the whole of ``topic`` (as Java's ``Matcher.matches``)."""
    return compile_pattern(pattern).fullmatch(topic) is not None
