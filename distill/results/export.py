"""Turn an output folder into training data for a student model.

``export_dataset`` reads the output folder through ``distill.results.outputs`` and
streams the done reports into two JSONL files (train and validation) in one of two shapes:

- ``sft-chat``: one line per report, ``{"messages": [system, user, assistant],
  "metadata": {...}}``; the user turn is the note, the assistant turn the
  normalized record as compact JSON.
- ``records``: one flat line per (finding, organ, location) unit.
- ``llamafactory`` and ``prompt-completion``: shapes fine-tuning tools read
  as they are (``distill.results.export_formats``).

A folder holding the records of more than one teacher is exported only with
``teachers`` chosen (a teacher's name, or ``all``), so teachers are never
mixed by accident; the summary counts reports per teacher.

Memory stays flat in the number of reports: only report numbers and one
32-byte digest per exported note are held.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import IO, Any, Literal

from distill.core.config import DEFAULT_MAX_REPORT_BYTES
from distill.core.errors import BadInput, ConfigError, OutputWriteError
from distill.core.redact import mask_known
from distill.extraction.schemas import NormalizedFinding
from distill.results.atomic import fsync_folders, temporary_name
from distill.results.export_formats import (
    FORMATS,
    LLAMAFACTORY,
    NOTE_FORMATS,
    format_line,
    read_dataset_info,
    write_dataset_info,
)
from distill.results.outputs import (
    MAX_PROBLEMS,
    OutputEntry,
    ProgressSink,
    iter_outputs,
    require_output_dir,
    teacher_fields,
)
from distill.results.teachers import ALL_TEACHERS, describe_counts, teacher_of

logger = logging.getLogger(__name__)

class MixedTeachers(ConfigError):
    """The folder holds more than one teacher's records and no teacher was chosen."""


# --- the split ---------------------------------------------------------------------


def split_of(number: int, seed: str, val_fraction: float) -> Literal["train", "val"]:
    """``"val"`` or ``"train"`` for a report, from a hash of its number and ``seed`` only.

    The answer never depends on which other reports exist, so re-exporting
    after more reports are done moves no report between splits; raising
    ``val_fraction`` only moves reports from train to val.
    """
    digest = hashlib.sha256(f"{seed}\x00{number}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0**64
    return "val" if position < val_fraction else "train"


def validation_path(path: Path) -> Path:
    """Where the validation split goes: ``out.jsonl`` -> ``out.val.jsonl``; ``out`` -> ``out.val``."""
    if path.suffix:
        return path.with_name(f"{path.stem}.val{path.suffix}")
    return path.with_name(f"{path.name}.val")


# --- writing -----------------------------------------------------------------------


class _AtomicLines:
    """Lines written to a temporary file in the target's folder, renamed into place on ``commit``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = temporary_name(path)
        self.lines = 0
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            self.handle: IO[str] = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from None

    def write(self, obj: dict[str, Any]) -> None:
        try:
            self.handle.write(mask_known(json.dumps(obj, ensure_ascii=False)) + "\n")
        except OSError as exc:
            raise OutputWriteError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.lines += 1

    def commit(self) -> None:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise OutputWriteError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        fsync_folders([self.path])

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


# --- export ------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """A report left out for a reason a user should look at."""

    number: int
    kind: str  # "corrupt", "source_missing", "source_changed", "source_unreadable"
    detail: str


@dataclass
class ExportSummary:
    """What ``export_dataset`` wrote and what it left out (each report counted once)."""

    train_path: Path
    val_path: Path
    format: str
    reports_seen: int = 0
    exported: int = 0
    train_reports: int = 0
    val_reports: int = 0
    train_lines: int = 0
    val_lines: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    teachers_seen: Counter[str] = field(default_factory=Counter)  # done reports per teacher, exported or not
    by_teacher: Counter[str] = field(default_factory=Counter)  # exported reports per teacher
    dataset_info_path: Path | None = None

    def skip(self, reason: str, problem: Problem | None = None) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if problem is not None:
            logger.info("report %s left out: %s: %s", problem.number, problem.kind, problem.detail)
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(problem)


def _note_path(raw: dict[str, Any], source_dir: Path | None) -> Path:
    source = str(raw["report"].get("source") or "")
    if source_dir is not None:
        return source_dir / (PurePath(source).name or f"report_{raw['report']['number']}.txt")
    return Path(source)


def _read_note(entry: OutputEntry, source_dir: Path | None, summary: ExportSummary) -> str | None:
    from distill.extraction.report import read_report

    path = _note_path(entry.raw, source_dir)
    try:
        size = path.stat().st_size
    except OSError:
        summary.skip("source_missing", Problem(entry.number, "source_missing", f"{path} not found"))
        return None
    try:
        # The sha256 check below proves identity, so a note the job accepted under a larger size limit still reads.
        report = read_report(path, max_bytes=max(DEFAULT_MAX_REPORT_BYTES, size))
    except BadInput as exc:
        summary.skip("source_unreadable", Problem(entry.number, "source_unreadable", str(exc)))
        return None
    if report.sha256 != entry.raw["report"]["sha256"]:
        summary.skip("source_changed", Problem(
            entry.number, "source_changed", f"{path} differs from the note the results were made from"))
        return None
    return report.text


def sft_line(entry: OutputEntry, findings: list[NormalizedFinding], note: str, split: str, *,
             instruction: str, prompt_version: str) -> dict[str, Any]:
    """The ``sft-chat`` line of one report: chat messages plus a ``metadata`` object."""
    answer = json.dumps([f.model_dump(mode="json") for f in findings], ensure_ascii=False, separators=(",", ":"))
    return {
        "messages": [
            {"role": "system", "content": instruction},
            {"role": "user", "content": note},
            {"role": "assistant", "content": answer},
        ],
        "metadata": {
            "report": entry.number,
            "split": split,
            "prompt_version": prompt_version,
            "teacher_prompt_version": str(entry.raw.get("prompt_version") or ""),
            **teacher_fields(entry.raw),
            "note_sha256": entry.raw["report"]["sha256"],
        },
    }


def record_lines(entry: OutputEntry, findings: list[NormalizedFinding], split: str) -> Iterator[dict[str, Any]]:
    """The ``records`` lines of one report: one per (finding, organ, location); ``location`` is
    ``None`` for a unit that names an organ but no location. A finding with no unit yields nothing."""
    common = {
        **teacher_fields(entry.raw),
        "prompt_version": str(entry.raw.get("prompt_version") or ""),
        "note_sha256": entry.raw["report"]["sha256"],
    }
    for index, finding in enumerate(findings):
        for wrapper in finding.U_unit_set:
            unit = wrapper.u_unit
            locations: list[str | None] = list(unit.o_organ.anatomicalLocations) or [None]
            for location in locations:
                yield {
                    "report": entry.number,
                    "split": split,
                    "finding_index": index,
                    "finding_quote": finding.s_symptom,
                    "status": finding.status,
                    "organ": unit.o_organ.organName,
                    "location": location,
                    "diagnosis": unit.d_diagnosis,
                    "basis": unit.b_textual_basis.doctorsDiagnosisAndJudgment,
                    "inference": unit.b_textual_basis.medicalInference,
                    **common,
                }


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how; the defaults are the CLI's."""

    fmt: str = "sft-chat"
    val_fraction: float = 0.05
    seed: str = "0"
    min_units: int = 1
    include_absent: bool = True
    source_dir: Path | None = None  # look for notes here by file name instead of at the recorded path
    teachers: tuple[str, ...] = ()  # teachers to export (``all``: every one); none: the folder must hold one

    def check(self) -> None:
        """Raise ``ConfigError`` naming the first bad option."""
        if self.fmt not in FORMATS:
            raise ConfigError(f"unknown export format {self.fmt!r}: use one of {', '.join(FORMATS)}")
        if not 0.0 <= self.val_fraction <= 1.0:
            raise ConfigError(f"--val-fraction must be between 0 and 1, not {self.val_fraction}")
        if self.min_units < 0:
            raise ConfigError(f"--min-units must be 0 or more, not {self.min_units}")
        if any(not name.strip() for name in self.teachers):
            raise ConfigError("--teacher needs a teacher's name (a model name, local, or all)")
        if self.source_dir is not None and not self.source_dir.is_dir():
            raise ConfigError(f"note folder {self.source_dir} does not exist or is not a folder (check --input-dir)")


def _instruction() -> tuple[str, str]:
    """The student's system instruction and its version, read once per export."""
    from distill.extraction.prompts import INSTRUCTION_TEXT, PROMPT_VERSION

    return INSTRUCTION_TEXT, PROMPT_VERSION


def export_dataset(output_dir: Path, to: Path, options: ExportOptions | None = None, *,
                   progress: ProgressSink | None = None) -> ExportSummary:
    """Write the done reports of ``output_dir`` to ``to`` (train) and ``validation_path(to)`` (val).

    Both files are replaced atomically, and only when the whole export
    succeeded. Left out, and counted in ``ExportSummary.skipped``: failed,
    incomplete and corrupt reports; reports with fewer than ``min_units``
    units (``empty``; absent findings are dropped first when
    ``include_absent`` is false); notes whose sha256 was already exported
    (``duplicate``: the lowest report number is kept); and, for ``sft-chat``,
    notes that are missing, unreadable or changed since they were processed.
    Raises ``ConfigError`` for bad options or folders and ``OutputWriteError``
    when the files cannot be written.
    """
    options = options or ExportOptions()
    options.check()
    require_output_dir(output_dir)
    if not to.parent.is_dir():
        raise ConfigError(f"cannot write {to}: folder {to.parent} does not exist")
    summary = ExportSummary(train_path=to, val_path=validation_path(to), format=options.fmt)
    writers: dict[str, _AtomicLines] = {}
    try:
        writers["train"] = _AtomicLines(summary.train_path)
        writers["val"] = _AtomicLines(summary.val_path)
        exported: set[bytes] = set()
        instruction = _instruction() if options.fmt in NOTE_FORMATS else ("", "")
        known = read_dataset_info(to.parent) if options.fmt == LLAMAFACTORY else {}
        for entry in iter_outputs(output_dir, progress=progress):
            _export_one(entry, options, summary, writers, exported, instruction)
        _check_teachers(output_dir, options, summary)
        for writer in writers.values():
            writer.commit()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    summary.train_lines, summary.val_lines = writers["train"].lines, writers["val"].lines
    if options.fmt == LLAMAFACTORY:
        summary.dataset_info_path = write_dataset_info(summary.train_path, summary.val_path, known)
    return summary


def _check_teachers(output_dir: Path, options: ExportOptions, summary: ExportSummary) -> None:
    """Refuse a mix of teachers nobody chose, and a chosen teacher the folder does not hold."""
    seen = summary.teachers_seen
    if not options.teachers and len(seen) > 1:
        raise MixedTeachers(f"{output_dir} holds the records of {len(seen)} teachers ({describe_counts(seen)}); "
                            f"choose with --teacher NAME (repeatable) or --teacher {ALL_TEACHERS}")
    missing = [name for name in options.teachers if name != ALL_TEACHERS and name not in seen]
    if missing:
        held = describe_counts(seen) or "none"
        raise ConfigError(f"--teacher {', '.join(missing)}: no done reports of that teacher in {output_dir} "
                          f"(teachers there: {held})")


def _wanted(teacher: str, options: ExportOptions) -> bool:
    return not options.teachers or ALL_TEACHERS in options.teachers or teacher in options.teachers


def _export_one(entry: OutputEntry, options: ExportOptions, summary: ExportSummary,
                writers: dict[str, _AtomicLines], exported: set[bytes], instruction: tuple[str, str]) -> None:
    summary.reports_seen += 1
    if entry.state == "corrupt":
        return summary.skip("corrupt", Problem(entry.number, "corrupt", entry.problem))
    if entry.state != "done":
        return summary.skip(entry.state)
    teacher = teacher_of(entry.raw)
    summary.teachers_seen[teacher] += 1
    if not _wanted(teacher, options):
        return summary.skip("other_teacher")
    findings = [f for f in entry.normalized if options.include_absent or f.status != "absent"]
    if sum(len(f.U_unit_set) for f in findings) < options.min_units:
        return summary.skip("empty")
    digest = bytes.fromhex(entry.raw["report"]["sha256"])
    if digest in exported:
        return summary.skip("duplicate")
    split = split_of(entry.number, options.seed, options.val_fraction)
    if options.fmt in NOTE_FORMATS:
        note = _read_note(entry, options.source_dir, summary)
        if note is None:
            return None
        chat = sft_line(entry, findings, note, split, instruction=instruction[0], prompt_version=instruction[1])
        writers[split].write(format_line(options.fmt, chat))
    else:
        for line in record_lines(entry, findings, split):
            writers[split].write(line)
    exported.add(digest)
    summary.exported += 1
    summary.by_teacher[teacher] += 1
    if split == "val":
        summary.val_reports += 1
    else:
        summary.train_reports += 1
    return None
