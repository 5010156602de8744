"""Wall-clock time as every file of the project writes it."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-01-02T03:04:05+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
