"""Masking secrets in text that is written or shown.

Two layers: every key value the configuration holds (registered at start-up)
is masked wherever it appears, even inside an answer a server echoed; and
anything merely shaped like a secret is masked in messages shown to people.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

#: Shorter values would mask ordinary words of a note; real keys are far longer.
MIN_KNOWN_LENGTH = 8
KNOWN_MASK = "[key redacted]"

_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer [redacted]"),
    (re.compile(r"(?i)\b(authorization|x-api-key)(\s*[:=]\s*|\s+)[\"']?[^\s\"',;]+"), r"\1\2[redacted]"),
    (re.compile(r"(?i)\b(api[_-]?key|access[_-]?token|token|secret|password)(\s*[:=]\s*)[\"']?[^\s\"',;&]+"),
     r"\1\2[redacted]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{4,}"), "sk-[redacted]"),
    # Long mixed letter-and-digit runs are keys far more often than anything else an error holds.
    (re.compile(r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{32,}\b"), "[redacted]"),
)

_known: tuple[str, ...] = ()
_known_lock = threading.Lock()


def register_secrets(values: Iterable[str | None]) -> None:
    """Add configured key values to the ones masked everywhere (longest first, so no key leaves a tail)."""
    global _known
    with _known_lock:
        merged = set(_known) | {v for v in values if v and len(v) >= MIN_KNOWN_LENGTH}
        _known = tuple(sorted(merged, key=len, reverse=True))


def known_secrets() -> tuple[str, ...]:
    return _known


def mask_known(text: str) -> str:
    """``text`` with every registered key value replaced by ``KNOWN_MASK``."""
    for value in _known:
        if value in text:
            text = text.replace(value, KNOWN_MASK)
    return text


def mask_known_bytes(data: bytes) -> bytes:
    """``mask_known`` for UTF-8 (or any ASCII-compatible) bytes, such as a JSON file about to be written."""
    for value in _known:
        raw = value.encode("utf-8")
        if raw in data:
            data = data.replace(raw, KNOWN_MASK.encode("utf-8"))
    return data


def scrub_secrets(text: str) -> str:
    """``text`` with registered keys and anything shaped like a bearer token, ``sk-...`` key or secret masked."""
    text = mask_known(text)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text
