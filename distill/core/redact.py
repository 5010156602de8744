"""Masking what looks like a secret in text shown to people (defence in depth: keys never reach files,
but an error message from a server might echo one)."""

from __future__ import annotations

import re

_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer [redacted]"),
    (re.compile(r"(?i)\b(authorization|x-api-key)(\s*[:=]\s*|\s+)[\"']?[^\s\"',;]+"), r"\1\2[redacted]"),
    (re.compile(r"(?i)\b(api[_-]?key|access[_-]?token|token|secret|password)(\s*[:=]\s*)[\"']?[^\s\"',;&]+"),
     r"\1\2[redacted]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{4,}"), "sk-[redacted]"),
    # Long mixed letter-and-digit runs are keys far more often than anything else an error holds.
    (re.compile(r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{32,}\b"), "[redacted]"),
)


def scrub_secrets(text: str) -> str:
    """``text`` with anything shaped like a bearer token, ``sk-...`` key or ``key=value`` secret masked."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text
