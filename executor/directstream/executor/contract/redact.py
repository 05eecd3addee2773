"""One scrubber for every error text that leaves a process: ``scrub(text)`` before it reaches a
status (``status.pending.lastError``), a condition, an Event, a log line, a termination message or
the CLI.

It removes what libraries echo: passwords in URLs (``postgresql://user:PASS@host``), ``password=...``
pairs of key/value DSNs and client settings (``sasl.password=...``), and the secret values this
process has read (Secret data, DSNs), registered with :func:`remember`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Final

MASK: Final = "***"
# Shorter values would blank out ordinary words; such secrets are too weak to matter here.
MIN_SECRET_LENGTH: Final = 4

_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*):(?P<password>[^\s@/?#]*)@")
_KEY_VALUE = re.compile(
    r"""(?P<head>\b[\w.-]*(?:password|passwd|pwd|secret|passphrase)["']?\s*[=:]\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,;&)}\]]+)""",
    re.IGNORECASE,
)

_known: set[str] = set()
_lock = threading.Lock()


def remember(values: Iterable[str]) -> None:
    """Secret values this process holds (a Secret's data, a DSN): scrubbed from every text."""
    with _lock:
        _known.update(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without passwords, secret settings and known secret values."""
    with _lock:
        known = sorted(_known | {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
    for value in known:  # longest first, so a secret containing another is masked whole
        text = text.replace(value, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['head']}{MASK}", text)
