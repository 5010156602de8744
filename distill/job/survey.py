"""What ``start`` finds before any work: the reports of the range, who did the done ones, and what
this job will skip or redo; a warning when there are none."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from distill.core.config import Endpoint
from distill.core.teacher_id import TeacherId
from distill.extraction.identity import endpoint_teacher
from distill.job.claims import scan_range
from distill.results.provenance import (
    SUPERSEDED_DIR,
    UNKNOWN_TEACHER,
    changed_since_written,
    survey_done,
    teacher_folder,
)
from distill.results.store import OutputStore

EXAMPLE_NAMES = 3
CHANGED_RECHECK_S = 300.0  # a running job starts looking again for changed notes at most this often
CHANGED_CHUNK = 2_000  # done reports it looks at per status write
SHOWN_CHANGED = 20  # report numbers the status file lists


@dataclass(frozen=True)
class RangeSurvey:
    """The reports numbered in a job's range, as the folders show them at start."""

    start: int
    end: int | None
    existing: int
    done: int
    failed: int
    pending: int
    other_files: tuple[str, ...]  # a few names in the folder that are not reports of the range
    done_by_teacher: dict[str, int] = field(default_factory=dict)  # teacher spelling -> done reports
    endpoint_teachers: dict[str, str] = field(default_factory=dict)  # this job's endpoints -> teacher spelling
    changed: int = 0  # done reports whose note changed since
    redo: tuple[str, ...] = ()  # the --redo names given
    redo_changed: bool = False

    def lines(self, input_dir: Path, output_dir: Path | None = None) -> list[str]:
        """The summary line, then who made the done reports, this job's teachers, and what is skipped or redone;
        a warning when the range holds no report at all."""
        bound = f"{self.start}–{self.end}" if self.end is not None else f"{self.start} and up"
        by = ", ".join(f"{count} by {spelling}{self._fate(spelling)}" for spelling, count in self.done_by_teacher.items())
        found = (f"found {self.existing} report(s) numbered {bound} in {input_dir}: "
                 f"{self.done} done{f' ({by})' if by else ''}, {self.failed} failed, {self.pending} pending")
        if not self.existing:
            if self.other_files:
                hint = (f"; the folder holds other files ({', '.join(self.other_files)}); "
                        "notes must be named report_<N>.txt or report_<N>.json")
            else:
                hint = "; the folder is empty"
            return [found, f"warning: nothing to do yet{hint}. The workers wait for notes to arrive."]
        lines = [found]
        if self.endpoint_teachers:
            lines.append("teachers of this job: " + _by_teacher(self.endpoint_teachers))
        superseded = output_dir / SUPERSEDED_DIR if output_dir is not None else Path(SUPERSEDED_DIR)
        for spelling, count in self.done_by_teacher.items():
            flag = _redo_flag(spelling)
            if flag and self._redoing(spelling):
                lines.append(f"redoing {count} report(s) done by {spelling} ({flag}); each one's old outputs "
                             f"move to {superseded / teacher_folder(spelling)} when its new ones are committed")
        for name in self.redo:
            if not any(self._matches(spelling, name) for spelling in self.done_by_teacher):
                made = ", ".join(self.done_by_teacher) or "none"
                lines.append(f"--redo {name}: no done report of the range was made by that teacher "
                             f"(give a model name, 'local', or a spelling; teachers found: {made})")
        if self.changed:
            what = ("redoing them (--redo-changed)" if self.redo_changed
                    else "kept as they are; --redo-changed re-runs them")
            lines.append(f"changed: {self.changed} done report(s) whose note changed since it was done: {what}")
        return lines

    def _fate(self, spelling: str) -> str:
        """What this job does with the done reports of one teacher, said in the summary line."""
        flag = _redo_flag(spelling)
        if flag and self._redoing(spelling):
            return f" (redone: {flag})"
        if spelling in self.endpoint_teachers.values():
            return ""
        return f" (not a teacher of this job: skipped; {flag} re-runs them)" if flag else " (skipped)"

    def _redoing(self, spelling: str) -> bool:
        return any(self._matches(spelling, name) for name in self.redo)

    @staticmethod
    def _matches(spelling: str, name: str) -> bool:
        try:
            return TeacherId.parse(spelling).matches(name)
        except ValueError:
            return False


def _redo_flag(spelling: str) -> str:
    if spelling == UNKNOWN_TEACHER:
        return ""
    try:
        return f"--redo {TeacherId.parse(spelling).redo_name}"
    except ValueError:
        return ""


def _by_teacher(endpoint_teachers: Mapping[str, str]) -> str:
    apis: dict[str, list[str]] = {}
    for api, spelling in endpoint_teachers.items():
        apis.setdefault(spelling, []).append(api)
    return "; ".join(f"{spelling} ({', '.join(names) if len(names) <= 4 else f'{len(names)} endpoints'})"
                     for spelling, names in apis.items())


def survey_range(input_dir: Path, output_dir: Path, start: int, end: int | None, *,
                 endpoints: Iterable[Endpoint] = (), redo: Iterable[str] = (), redo_changed: bool = False,
                 ) -> RangeSurvey:
    """Count the range's reports by state (one listing of each folder) and read who made the done ones."""
    store = OutputStore(output_dir)
    scan = scan_range(input_dir, store, start, end)
    counts = scan.counts()
    others: list[str] = []
    if not counts["existing"]:
        with os.scandir(input_dir) as entries:
            for entry in entries:
                if not entry.name.startswith("."):
                    others.append(entry.name)
                    if len(others) >= EXAMPLE_NAMES:
                        break
    done = survey_done(store, input_dir, (n for n in scan.existing if n in scan.done))
    return RangeSurvey(start, end, counts["existing"], counts["done"], counts["failed"], counts["pending"],
                       tuple(sorted(others)),
                       done_by_teacher={spelling: len(numbers) for spelling, numbers in sorted(done.by_teacher.items())},
                       endpoint_teachers={e.name: endpoint_teacher(e).spelling for e in endpoints},
                       changed=len(done.changed), redo=tuple(redo), redo_changed=redo_changed)


class ChangedNotes:
    """The done reports of a range whose note changed since, for the status file (``start`` made the full check).

    Each call looks at the next ``chunk`` done reports (two ``stat`` calls each; a note is read only when it
    was modified after its raw file), cycling over the range at most once every ``every_s`` seconds, so a job
    with a million done reports costs the supervisor the same per status write as a small one.
    """

    def __init__(self, store: OutputStore, input_dir: Path, start: int, end: int | None, *,
                 chunk: int = CHANGED_CHUNK, every_s: float = CHANGED_RECHECK_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.input_dir, self.start, self.end = store, input_dir, start, end
        self.chunk, self.every_s, self.clock = chunk, every_s, clock
        self.found: set[int] = set()
        self._queue: list[int] = []  # the cycle's done reports not looked at yet, largest first
        self._next_cycle: float | None = None

    def numbers(self) -> list[int]:
        """The changed reports found so far, in order."""
        if not self._queue:
            now = self.clock()
            if self._next_cycle is None or now >= self._next_cycle:
                top = self.end if self.end is not None else sys.maxsize
                self._queue = sorted((n for n in self.store.done_numbers() if self.start <= n <= top), reverse=True)
                self._next_cycle = now + self.every_s
        batch = [self._queue.pop() for _ in range(min(self.chunk, len(self._queue)))]
        if batch:
            self.found.difference_update(batch)
            self.found.update(changed_since_written(self.store, self.input_dir, batch))
        return sorted(self.found)

    def add_to(self, status: dict[str, object]) -> None:
        """``counts.changed`` and ``changed_reports`` (the first ``SHOWN_CHANGED``) of a status document."""
        numbers = self.numbers()
        counts = status.get("counts")
        if isinstance(counts, dict):
            counts["changed"] = len(numbers)
        status["changed_reports"] = numbers[:SHOWN_CHANGED]
