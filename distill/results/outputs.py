"""Reading an output folder one report at a time, in report order.

``iter_outputs`` says what state each report is in (done, failed,
incomplete, corrupt) and why, so export and stats never trip over a damaged
file: it is named and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from distill.core.errors import ConfigError
from distill.core.teacher_id import TEACHER_ID_KEY, teacher_of_record
from distill.extraction.schemas import NormalizedFinding
from distill.results.store import FAILED_DIR, NORMALIZED_DIR, RAW_DIR, OutputStore

State = Literal["done", "failed", "incomplete", "corrupt"]
#: Called with (reports looked at, reports in the folder).
ProgressSink = Callable[[int, int], None]

MAX_PROBLEMS = 100  # problems a report keeps by name; all of them are counted

_NORMALIZED = TypeAdapter(list[NormalizedFinding])


# --- reading an output folder ------------------------------------------------------


@dataclass(frozen=True)
class OutputEntry:
    """One report number found in an output folder.

    ``done``: raw and normalized files parse (``raw`` and ``normalized`` set).
    ``failed``: a failure record and no complete result (``failure`` set).
    ``incomplete``: a raw result whose normalized file is missing.
    ``corrupt``: a file exists but cannot be used; ``problem`` says which and why.
    """

    number: int
    state: State
    raw: dict[str, Any] = field(default_factory=dict)
    normalized: list[NormalizedFinding] = field(default_factory=list)
    failure: dict[str, Any] = field(default_factory=dict)
    problem: str = ""
    path: Path | None = None


class _UnusableError(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def _load_json(path: Path) -> Any:
    """The parsed file; ``None`` when it does not exist; ``_UnusableError`` when it cannot be read or parsed."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _UnusableError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _UnusableError(path, f"not valid JSON ({exc})") from None


def _check_raw(path: Path, raw: Any, number: int) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("report"), dict):
        raise _UnusableError(path, "not a raw result (no 'report' object)")
    report = raw["report"]
    if report.get("number") != number:
        raise _UnusableError(path, f"names report {report.get('number')!r}, not {number}")
    digest = report.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise _UnusableError(path, "has no valid report.sha256")
    try:
        bytes.fromhex(digest)
    except ValueError:
        raise _UnusableError(path, "has no valid report.sha256") from None
    return raw


def _check_normalized(path: Path, data: Any) -> list[NormalizedFinding]:
    try:
        return _NORMALIZED.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise _UnusableError(path, f"not a normalized record list ({where}: {first['msg']})") from None


def require_output_dir(output_dir: Path) -> None:
    if not output_dir.is_dir():
        raise ConfigError(f"output folder {output_dir} does not exist or is not a folder (check --output-dir)")
    if not any((output_dir / name).is_dir() for name in (RAW_DIR, NORMALIZED_DIR, FAILED_DIR)):
        raise ConfigError(
            f"{output_dir} is not a diag-distill output folder: it has no {RAW_DIR}/, {NORMALIZED_DIR}/ "
            f"or {FAILED_DIR}/ (check --output-dir)"
        )


def iter_outputs(output_dir: Path, *, progress: ProgressSink | None = None) -> Iterator[OutputEntry]:
    """Yield one ``OutputEntry`` per report with a raw result or a failure record, in increasing number order.

    Reads one report's files at a time. Raises ``ConfigError`` when the folder
    is missing or is not an output folder; a bad file never raises, it yields
    a ``corrupt`` entry. A normalized file with neither a raw result nor a
    failure record is an interrupted commit (the report is still pending) and
    is not yielded.
    """
    require_output_dir(output_dir)
    store = OutputStore(output_dir)
    failed = store.failed_numbers()
    numbers = sorted(store.done_numbers() | failed)
    for index, number in enumerate(numbers, 1):
        yield _entry(store, number, number in failed)
        if progress is not None:
            progress(index, len(numbers))


def _entry(store: OutputStore, number: int, has_failure: bool) -> OutputEntry:
    raw_path, normalized_path = store.raw_path(number), store.normalized_path(number)
    try:
        raw = _load_json(raw_path)
        normalized = _load_json(normalized_path)
        if raw is not None and normalized is not None:
            return OutputEntry(number, "done", raw=_check_raw(raw_path, raw, number),
                               normalized=_check_normalized(normalized_path, normalized), path=raw_path)
        failure = _load_json(store.failed_path(number)) if has_failure else None
        if failure is not None:
            if not isinstance(failure, dict):
                raise _UnusableError(store.failed_path(number), "not a failure record (not a JSON object)")
            return OutputEntry(number, "failed", failure=failure, path=store.failed_path(number))
        return OutputEntry(number, "incomplete", path=raw_path)
    except _UnusableError as bad:
        return OutputEntry(number, "corrupt", problem=f"{bad.path}: {bad.reason}", path=bad.path)


def teacher_fields(raw: dict[str, Any]) -> dict[str, str]:
    """``teacher`` (endpoint name), ``teacher_kind``, ``model`` and ``teacher_id`` (the teacher's one spelling,
    ``distill.core.teacher_id``) of a raw result; empty strings when absent."""
    teacher = raw.get("teacher")
    if not isinstance(teacher, dict):
        teacher = {}
    identity = teacher_of_record(raw)
    return {
        "teacher": str(teacher.get("endpoint") or teacher.get("name") or ""),
        "teacher_kind": str(teacher.get("kind") or ""),
        "model": str(teacher.get("model") or ""),
        TEACHER_ID_KEY: identity.spelling if identity is not None else "",
    }
