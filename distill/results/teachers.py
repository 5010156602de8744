"""Which teacher made a record, spelled one way: its model's name, or ``local`` for the offline teacher.

Every command that filters or groups by teacher reads the name through
``teacher_of`` only, so the record format can change in one place.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from distill.core.teacher_id import teacher_of_record

LOCAL_TEACHER = "local"
ALL_TEACHERS = "all"  # ``export --teacher all``: every teacher at once
UNKNOWN_TEACHER = "unknown"


def teacher_of(record: dict[str, Any]) -> str:
    """The teacher of a raw result or a failure record: the model's name, ``local`` for the offline teacher."""
    teacher = teacher_of_record(record)
    return teacher.redo_name if teacher is not None and teacher.redo_name else UNKNOWN_TEACHER


def endpoint_teacher(*, is_local: bool, model: str) -> str:
    """The name ``teacher_of`` gives the records an endpoint will write."""
    return LOCAL_TEACHER if is_local else (model or UNKNOWN_TEACHER)


def describe_counts(counts: Counter[str] | dict[str, int]) -> str:
    """``"glm-4 120, local 3"``: teachers by count, most first."""
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
