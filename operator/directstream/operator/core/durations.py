"""Durations as users write them in a spec: ``500ms``, ``5s``, ``1m30s``, ``1h``, or bare seconds.

Values are summed with exact fractions so that a millisecond-grid value survives a
``format_duration`` / ``parse_duration`` round trip bit for bit.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_UNIT_SECONDS = {"h": Fraction(3600), "m": Fraction(60), "s": Fraction(1), "ms": Fraction(1, 1000)}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
# "ms" is listed before "m" so that "5ms" is five milliseconds, not five minutes and a stray "s".
_PART = re.compile(rf"({_NUMBER})(ms|h|m|s)")
_WHOLE = re.compile(rf"(?:{_NUMBER}(?:ms|h|m|s))+")
_BARE = re.compile(_NUMBER)


def parse_duration(text: str) -> float:
    """Seconds in ``text``: unit parts such as ``1h``, ``1m30s``, ``1.5s``, ``500ms``, or bare seconds.

    Raises ``ValueError`` for anything else (negative values included).
    """
    stripped = text.strip()
    if _BARE.fullmatch(stripped):
        return float(Fraction(stripped))
    if not _WHOLE.fullmatch(stripped):
        raise ValueError(f"{text!r} is not a duration such as 500ms, 5s, 1m30s or 1h")
    total = sum(
        (Fraction(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(stripped)), Fraction(0)
    )
    return float(total)


def format_duration(seconds: float) -> str:
    """``seconds`` rounded to the millisecond in unit form, e.g. ``1m30s``, ``1s500ms``, ``0s``."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format {seconds!r} as a duration")
    millis = round(Fraction(seconds) * 1000)
    if millis == 0:
        return "0s"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis_left = divmod(rest, 1000)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s"), (millis_left, "ms")]
    return "".join(f"{amount}{unit}" for amount, unit in parts if amount)
