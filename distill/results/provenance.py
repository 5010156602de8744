"""Which teacher made each done report, which notes changed since, and releasing done reports to redo them.

``release_for_redo`` marks done reports to run again (``OutputStore.mark_for_redo``): their
outputs stay in place until the new ones are committed, which keeps the old ones under
``OUTPUT_DIR/superseded/<teacher>/`` (the teacher's spelling as a path, e.g.
``superseded/local/local-rules-2/``), never deleted. ``supersede`` moves a report's outputs
there at once (raw first: it is the done marker, so a crash in the middle leaves the report
not done).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.core.teacher_id import TeacherId, teacher_of_record
from distill.results.atomic import fsync_folders, read_json
from distill.results.store import (
    CHECKPOINT_DIR,
    LOG_DIR,
    NORMALIZED_DIR,
    RAW_DIR,
    SUPERSEDED_DIR,
    OutputStore,
    teacher_folder,
)

__all__ = ["SUPERSEDED_DIR", "DoneReports", "RedoSummary", "changed_notes", "changed_since_written",
           "release_for_redo", "supersede", "survey_done", "teacher_folder"]

UNKNOWN_TEACHER = "unknown"  # a raw file that names no teacher (hand-made, or damaged)
_HASH_CHUNK = 1 << 20
_HEAD_BYTES = 4096  # a raw file names its note and teacher in its first lines; the rest is read only when not
_HEAD_FIELDS = {name: re.compile(rf'"{name}":\s*("(?:[^"\\]|\\.)*")') for name in ("source", "sha256", "teacher_id")}


def _raw_head(path: Path) -> dict[str, Any] | None:
    """The raw file's note source, note sha256 and teacher spelling, from its first bytes when they hold all
    three (as every raw file this program writes does), else from the whole file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
    found = {name: pattern.search(head) for name, pattern in _HEAD_FIELDS.items()}
    if all(found.values()):
        try:
            values = {name: json.loads(match.group(1)) for name, match in found.items() if match}
        except ValueError:
            values = {}
        if values:
            return {"teacher_id": values["teacher_id"],
                    "report": {"source": values["source"], "sha256": values["sha256"]}}
    raw = read_json(path)
    return raw if isinstance(raw, dict) else None


def note_path(input_dir: Path, number: int) -> Path | None:
    """The note ``report_<N>.txt`` (or ``.json``) in ``input_dir``, when it is there."""
    for suffix in (".txt", ".json"):
        path = input_dir / f"report_{number}{suffix}"
        if path.is_file():
            return path
    return None


def file_sha256(path: Path) -> str | None:
    """The hex sha256 of a file's bytes (what a raw file records as ``report.sha256``); None when unreadable."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


@dataclass
class DoneReports:
    """The done reports of a range by teacher spelling, and those whose note changed since."""

    by_teacher: dict[str, list[int]] = field(default_factory=dict)
    changed: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(numbers) for numbers in self.by_teacher.values())

    def matching(self, names: Iterable[str]) -> dict[str, list[int]]:
        """The done reports of every teacher that one of ``names`` matches (``local`` or a model name)."""
        wanted = [name for name in names if name.strip()]
        found: dict[str, list[int]] = {}
        for spelling, numbers in self.by_teacher.items():
            teacher = _parse(spelling)
            if teacher is not None and any(teacher.matches(name) for name in wanted):
                found[spelling] = numbers
        return found


def _parse(spelling: str) -> TeacherId | None:
    try:
        return TeacherId.parse(spelling)
    except ValueError:
        return None


def survey_done(store: OutputStore, input_dir: Path | None, numbers: Iterable[int], *, check_changed: bool = True,
                quick: bool = False) -> DoneReports:
    """Read each done report's raw file: its teacher, and (``check_changed``) whether its note changed.

    A note changed when the sha256 of its bytes differs from the one the raw
    file recorded. The note is ``report_<N>`` in ``input_dir``, or (no
    ``input_dir``) the file the raw file names as its source. ``quick`` hashes
    only notes modified after their raw file was written (one ``stat`` each
    otherwise), for views that refresh often.
    """
    found = DoneReports()
    for number in sorted(numbers):
        raw = _raw_head(store.raw_path(number))
        if raw is None:
            continue
        teacher = teacher_of_record(raw)
        found.by_teacher.setdefault(teacher.spelling if teacher else UNKNOWN_TEACHER, []).append(number)
        if check_changed and _note_changed(store, input_dir, number, raw, quick=quick):
            found.changed.append(number)
    return found


def _note_changed(store: OutputStore, input_dir: Path | None, number: int, raw: dict[str, object], *,
                  quick: bool) -> bool:
    report = raw.get("report")
    recorded = report.get("sha256") if isinstance(report, dict) else None
    if input_dir is not None:
        note = note_path(input_dir, number)
    else:
        source = report.get("source") if isinstance(report, dict) else None
        note = Path(source) if isinstance(source, str) and Path(source).is_file() else None
    if not isinstance(recorded, str) or note is None:
        return False  # a note that is gone is not a changed note: its result stays as it is
    if quick:
        try:
            if os.stat(note).st_mtime_ns <= os.stat(store.raw_path(number)).st_mtime_ns:
                return False
        except OSError:
            return False
    return file_sha256(note) != recorded


def supersede(store: OutputStore, number: int, spelling: str) -> Path:
    """Move report ``number``'s outputs to ``superseded/<teacher>/`` (raw first); return that folder.

    Each file keeps its folder name and file name below it (``diagnostic_results/diagnostic_<N>.json``, …);
    when a file of that name is already there (a report superseded twice), the newer one gets a time stamp.
    """
    target = store.root / SUPERSEDED_DIR / teacher_folder(spelling)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    touched: list[Path] = []
    sources = [(store.raw_path(number), RAW_DIR), (store.normalized_path(number), NORMALIZED_DIR),
               (store.log_path(number), LOG_DIR), *((path, CHECKPOINT_DIR) for path in store.checkpoint_files(number))]
    for source, folder in sources:
        if source.exists():
            touched += [source, _move(source, target / folder, stamp)]
    fsync_folders(touched)
    return target


def _move(source: Path, folder: Path, stamp: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    destination = folder / source.name
    if destination.exists():
        stem, dot, suffix = source.name.partition(".")
        destination = folder / (f"{stem}.{stamp}.{suffix}" if dot else f"{stem}.{stamp}")
    os.replace(source, destination)  # the same file system: superseded/ is inside the output folder
    return destination


@dataclass
class RedoSummary:
    """What ``start --redo`` / ``--redo-changed`` moved aside: report numbers by teacher spelling."""

    by_teacher: dict[str, list[int]] = field(default_factory=dict)
    changed: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len({n for numbers in self.by_teacher.values() for n in numbers} | set(self.changed))

    def lines(self, root: Path) -> list[str]:
        lines = [f"redoing {len(numbers)} report(s) done by {spelling}; each one's old outputs move to "
                 f"{root / SUPERSEDED_DIR / teacher_folder(spelling)} when its new ones are committed"
                 for spelling, numbers in self.by_teacher.items()]
        if self.changed:
            lines.append(f"redoing {len(self.changed)} report(s) whose note changed since it was done "
                         f"(old outputs kept under {root / SUPERSEDED_DIR})")
        return lines


def release_for_redo(store: OutputStore, input_dir: Path, numbers: Iterable[int], *, teachers: Iterable[str] = (),
                     changed: bool = False) -> RedoSummary:
    """Mark the done reports among ``numbers`` that a name in ``teachers`` matches, and (``changed``) those
    whose note changed since, to run again; they become claimable, and keep their outputs until replaced."""
    names = [name for name in teachers if name.strip()]
    summary = RedoSummary()
    if not names and not changed:
        return summary
    done = survey_done(store, input_dir, numbers, check_changed=changed)
    chosen: dict[int, str] = {}
    for spelling, picked in done.matching(names).items():
        summary.by_teacher[spelling] = picked
        chosen.update((n, spelling) for n in picked)
    changed_set = set(done.changed)
    summary.changed = sorted(n for n in changed_set if n not in chosen)
    if changed_set:
        spelling_of = {n: s for s, ns in done.by_teacher.items() for n in ns}
        chosen.update((n, spelling_of[n]) for n in summary.changed)
    for number, spelling in sorted(chosen.items()):
        store.mark_for_redo(number, spelling)
    return summary


def changed_since_written(store: OutputStore, input_dir: Path, numbers: Iterable[int]) -> list[int]:
    """The quick look: of the done reports ``numbers``, those whose note was modified after its raw file was
    written and now has another sha256 (two ``stat`` calls per report; only those notes are read)."""
    found: list[int] = []
    for number in sorted(numbers):
        note = note_path(input_dir, number)
        try:
            newer = note is not None and os.stat(note).st_mtime_ns > os.stat(store.raw_path(number)).st_mtime_ns
        except OSError:
            continue
        if newer:
            raw = read_json(store.raw_path(number))
            if isinstance(raw, dict) and _note_changed(store, input_dir, number, raw, quick=False):
                found.append(number)
    return found


def changed_notes(output_dir: Path, input_dir: Path | None = None, *, quick: bool = False) -> list[int]:
    """The done reports of ``output_dir`` whose note changed since (``start --redo-changed`` redoes them)."""
    store = OutputStore(output_dir)
    return survey_done(store, input_dir, store.done_numbers(), quick=quick).changed
