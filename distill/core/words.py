"""Counts as people read them: ``1 finding``, ``2 findings``, ``1 diagnosis``, ``3 diagnoses``."""

from __future__ import annotations

_IRREGULAR = {"diagnosis": "diagnoses", "analysis": "analyses", "call(s)": "call(s)"}


def counted(n: int, singular: str) -> str:
    """``n`` and the noun, singular for exactly one."""
    if n == 1:
        return f"1 {singular}"
    return f"{n} {_IRREGULAR.get(singular, singular + 's')}"
