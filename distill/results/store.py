"""The output folder: results, failure records and per-step checkpoints.

Layout (the names users and their scripts rely on)::

    OUTPUT_DIR/diagnostic_results/diagnostic_<N>.json             raw
    OUTPUT_DIR/diagnostic_results_normalized/diagnostic_<N>.json  normalized
    OUTPUT_DIR/logs/diagnostic_<N>.log                            log
    OUTPUT_DIR/failed/diagnostic_<N>.json                         failure record
    OUTPUT_DIR/checkpoints/<N>.jsonl                              finished steps of an unfinished report
    OUTPUT_DIR/superseded/<teacher>/...                           outputs a redo replaced (kept, never deleted)
    OUTPUT_DIR/superseded/.redo/<N>.json                          a done report marked to run again

A report is done when its raw and normalized files exist and it is not marked
to run again; the raw file is written last, so a crash in the middle of a
commit leaves a report not done, and its checkpoints let the next attempt
finish it without new calls.

A report's checkpoints are one JSON Lines file, a line appended per finished
step (a later line of a step replaces an earlier one). They are saved work, not
results: not fsynced, and a line cut short by a crash is skipped (its step is
paid for again), so saving a step creates no file after the report's first. After the
commit the file is emptied and kept as the process's spare (``checkpoints/.spare-<pid>``), which the
next report's first step links in under its own name: a stream of reports frees no checkpoint inode.

A redo (``start --redo``) marks done reports: their outputs stay in place, so
readers keep seeing them, until the new ones are committed; then each old file
is first linked under ``superseded/<teacher>/`` and then replaced by a rename.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.core.errors import OutputWriteError
from distill.core.redact import mask_known_bytes
from distill.results.atomic import (
    TMP_MARK,
    SettledFile,
    StagedFile,
    dumps,
    fsync_folders,
    read_json,
    read_json_folder,
    remove_stale_temporaries,
    stage_file,
    write_atomic,
    write_json,
)
from distill.results.journal import OpenLog, SpareFile, append_record, clear_spares, read_records

RAW_DIR = "diagnostic_results"
NORMALIZED_DIR = "diagnostic_results_normalized"
LOG_DIR = "logs"
FAILED_DIR = "failed"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_SUFFIX = ".jsonl"
CHECKPOINT_STEP_KEY = "step"  # each checkpoint line: {"step": <name>, <the step's saved data>}
RETRIED_DIR = "retried"
SUPERSEDED_DIR = "superseded"
REDO_DIR = ".redo"  # inside SUPERSEDED_DIR: one marker (and the redo's log so far) per report to run again
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def teacher_folder(spelling: str) -> Path:
    """``superseded/<teacher>``'s relative path: one folder per part of the spelling, each made safe."""
    parts = [_UNSAFE.sub("_", part) for part in spelling.split("/")]
    return Path(*[part if part.strip(".") else "_" for part in parts])


def _number_of(name: str, prefix: str = "diagnostic_", suffix: str = ".json") -> int | None:
    if name.startswith(prefix) and name.endswith(suffix):
        digits = name[len(prefix) : -len(suffix)]
        if digits.isdigit():
            return int(digits)
    return None


@dataclass
class PendingCommit:
    """A done report's outputs, written but not yet published (see ``OutputStore.stage_done``)."""

    store: OutputStore
    number: int
    files: list[StagedFile | SettledFile]

    def finish(self) -> None:
        """fsync and rename each file (raw last), fsync the folders, drop checkpoints; or raise, leaving it not done.

        A report marked to run again first keeps its old outputs under ``superseded/<teacher>/``."""
        redo = self.store.redo_teacher(self.number)
        try:
            if redo is not None:
                self.store._keep_superseded(self.number, redo)
            for item in self.files:
                item.publish()
        except OutputWriteError:
            self.abandon()
            raise
        fsync_folders([item.path for item in self.files])
        self.store._after_done(self.number)
        if redo is not None:
            self.store._clear_redo(self.number)

    @property
    def size(self) -> int:
        """Bytes of the three outputs."""
        return sum(item.size for item in self.files)

    def abandon(self) -> None:
        for item in self.files:
            item.discard()


@dataclass(frozen=True)
class OutputStore:
    """Reads and writes one output folder. All writes are atomic and private (0600)."""

    root: Path
    host: str = ""  # set when several hosts share the folder: every record then names the host that wrote it
    _log: OpenLog = field(default_factory=OpenLog, init=False, repr=False, compare=False, hash=False)
    _spare: SpareFile = field(default_factory=SpareFile, init=False, repr=False, compare=False, hash=False)

    def prepare(self, *, job_start: bool = False) -> None:
        """Create the folders (0700) and remove what dead writers left: temporaries, checkpoints of done reports,
        and at a job's start (``job_start``) the spare checkpoint files of its earlier workers."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in (RAW_DIR, NORMALIZED_DIR, LOG_DIR, FAILED_DIR, CHECKPOINT_DIR):
            folder = self.root / name
            folder.mkdir(exist_ok=True, mode=0o700)
            remove_stale_temporaries(folder)
        remove_stale_temporaries(self.root / SUPERSEDED_DIR / REDO_DIR)  # no folder yet: nothing to do
        self._clear_stale_redo_markers()
        self._clear_orphan_checkpoints()
        if job_start:
            self.clear_spares()

    def clear_spares(self) -> None:
        """Remove the spare checkpoint files workers keep between reports (a job's start and end)."""
        clear_spares(self.root / CHECKPOINT_DIR)

    def _clear_orphan_checkpoints(self) -> None:
        """A writer killed between a report's commit and its clean-up leaves checkpoints of a done report."""
        try:
            names = os.listdir(self.root / CHECKPOINT_DIR)
        except OSError:
            return
        for name in names:
            number = name.removesuffix(CHECKPOINT_SUFFIX)
            if number.isdigit() and self.is_done(int(number)):
                self.clear_checkpoints(int(number))

    def raw_path(self, number: int) -> Path:
        return self.root / RAW_DIR / f"diagnostic_{number}.json"

    def normalized_path(self, number: int) -> Path:
        return self.root / NORMALIZED_DIR / f"diagnostic_{number}.json"

    def log_path(self, number: int) -> Path:
        return self.root / LOG_DIR / f"diagnostic_{number}.log"

    def failed_path(self, number: int) -> Path:
        return self.root / FAILED_DIR / f"diagnostic_{number}.json"

    def checkpoint_path(self, number: int) -> Path:
        return self.root / CHECKPOINT_DIR / f"{number}{CHECKPOINT_SUFFIX}"

    def _legacy_checkpoint_dir(self, number: int) -> Path:
        """Where earlier versions kept a report's checkpoints, a file per step: still read, so a job
        upgraded in the middle of a report pays for none of its finished steps again."""
        return self.root / CHECKPOINT_DIR / str(number)

    # --- status of one report ------------------------------------------------

    def is_done(self, number: int) -> bool:
        return (self.raw_path(number).is_file() and self.normalized_path(number).is_file()
                and not self.redo_marker(number).exists())

    def settled_numbers(self) -> set[int]:
        """Every report number with a raw result that is not marked to run again (what claims skip)."""
        return self.done_numbers() - self.redo_numbers()

    # --- redo: done reports marked to run again ---------------------------------

    def redo_marker(self, number: int) -> Path:
        return self.root / SUPERSEDED_DIR / REDO_DIR / f"diagnostic_{number}.json"

    def redo_numbers(self) -> set[int]:
        return self._numbers(os.path.join(SUPERSEDED_DIR, REDO_DIR))

    def redo_teacher(self, number: int) -> str | None:
        """The teacher spelling a marked report's old outputs belong to; None when it is not marked."""
        marker = read_json(self.redo_marker(number))
        if not isinstance(marker, dict):
            return None
        return str(marker.get("teacher_id") or "unknown")

    def mark_for_redo(self, number: int, teacher_id: str) -> bool:
        """Make a done report claimable again; its outputs stay until the new ones replace them. False when
        it was marked already."""
        marker = self.redo_marker(number)
        if marker.exists():
            return False
        marker.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            stat = os.stat(self.raw_path(number))
        except FileNotFoundError:
            return False
        write_json(marker, {"teacher_id": teacher_id, "raw_ino": stat.st_ino, "raw_mtime_ns": stat.st_mtime_ns})
        return True

    def _redo_log(self, number: int) -> Path:
        return self.redo_marker(number).with_suffix(".log")

    def _live_log(self, number: int) -> Path:
        """Where a running attempt's log lines go: beside the marker while the old log still stands."""
        return self._redo_log(number) if self.redo_marker(number).exists() else self.log_path(number)

    def _keep_superseded(self, number: int, teacher_id: str) -> None:
        """Link the old outputs under ``superseded/<teacher>/`` (a second copy gets a time stamp)."""
        target = self.root / SUPERSEDED_DIR / teacher_folder(teacher_id)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        kept: list[Path] = []
        for source, folder in ((self.raw_path(number), RAW_DIR), (self.normalized_path(number), NORMALIZED_DIR),
                               (self.log_path(number), LOG_DIR)):
            if not source.exists():
                continue
            (target / folder).mkdir(parents=True, exist_ok=True, mode=0o700)
            destination = target / folder / source.name
            if destination.exists():
                destination = destination.with_name(f"{destination.stem}.{stamp}{destination.suffix}")
            try:
                os.link(source, destination)
            except OSError as exc:
                raise OutputWriteError(f"{destination}: cannot keep the superseded output: {exc.strerror}") from None
            kept.append(destination)
        fsync_folders(kept)

    def _clear_redo(self, number: int) -> None:
        for path in (self.redo_marker(number), self._redo_log(number)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _clear_stale_redo_markers(self) -> None:
        """A writer killed between a redo's commit and its clean-up leaves a marker on the new raw file."""
        for number in self.redo_numbers():
            marker = read_json(self.redo_marker(number))
            try:
                stat = os.stat(self.raw_path(number))
            except FileNotFoundError:
                self._clear_redo(number)
                continue
            if isinstance(marker, dict) and (marker.get("raw_ino"), marker.get("raw_mtime_ns")) != (
                    stat.st_ino, stat.st_mtime_ns):
                self._clear_redo(number)

    def is_failed(self, number: int) -> bool:
        return self.failed_path(number).is_file()

    def done_numbers(self) -> set[int]:
        """Every report number with a raw result (one folder listing)."""
        return self._numbers(RAW_DIR)

    def failed_numbers(self) -> set[int]:
        return self._numbers(FAILED_DIR)

    def _numbers(self, folder: str) -> set[int]:
        found: set[int] = set()
        try:
            with os.scandir(self.root / folder) as entries:
                for entry in entries:
                    number = _number_of(entry.name)
                    if number is not None:
                        found.add(number)
        except OSError:
            pass
        return found

    # --- commits -------------------------------------------------------------

    def stage_done(self, number: int, raw: dict[str, Any], normalized: list[dict[str, Any]],
                   log_text: str) -> PendingCommit:
        """Write the three outputs under temporary names; ``finish()`` on the result makes them durable and visible.

        Splitting the commit lets a worker pay for the fsyncs while its next
        report's first call is in flight; a full disk still shows here, at once.
        """
        if self.host:
            raw = {**raw, "host": self.host}
        self.close_log(number)
        staged: list[StagedFile | SettledFile] = []
        try:
            # The log was appended to line by line as it happened: when it holds every line, it stays as it is
            # (during a redo it holds the old teacher's log, so it is rewritten).
            staged.append(stage_file(self.log_path(number), log_text.encode("utf-8")))
            staged.append(StagedFile(self.normalized_path(number), dumps(normalized)))
            staged.append(StagedFile(self.raw_path(number), dumps(raw)))  # published last: the done marker
        except OutputWriteError:
            for item in staged:
                item.discard()
            raise
        return PendingCommit(self, number, staged)

    def commit_done(self, number: int, raw: dict[str, Any], normalized: list[dict[str, Any]], log_text: str) -> None:
        """Write the three outputs (raw last), then drop checkpoints and any old failure record."""
        self.stage_done(number, raw, normalized, log_text).finish()

    def _after_done(self, number: int) -> None:
        self.clear_checkpoints(number)
        if self.failed_path(number).exists():
            self._archive_failed(number)

    def read_log(self, number: int) -> str:
        """The report's log so far (earlier attempts), or "" when it has none."""
        try:
            return self._live_log(number).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def append_log(self, number: int, line: str) -> None:
        """Add a line to the report's log as it happens (the commit then rewrites the whole log atomically).

        The file stays open from the attempt's first line until its commit (``close_log``). Best effort:
        a full disk costs the line here, not the report (the commit still writes it, or says why not).
        """
        data = mask_known_bytes(line.encode("utf-8"))
        with self._log.lock:
            fd = self._log.fd_for(number, self._live_log)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.write(fd, data)

    def close_log(self, number: int | None = None) -> None:
        """Close the log appended to for ``number`` (any report when ``None``): its commit replaces the file."""
        with self._log.lock:
            self._log.close(number)

    def commit_failed(self, number: int, record: dict[str, Any], log_text: str) -> None:
        """Write the failure record and the log. Checkpoints are kept for a retry."""
        self.close_log(number)
        if self.host:
            record = {**record, "host": self.host}
        write_atomic(self._live_log(number), log_text.encode("utf-8"))  # a redo's failure leaves the old log
        write_json(self.failed_path(number), record)

    def _archive_failed(self, number: int) -> None:
        """Move a failure record aside (kept, never deleted) so the report can run again."""
        target = self.root / FAILED_DIR / RETRIED_DIR
        target.mkdir(exist_ok=True, mode=0o700)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.failed_path(number), target / f"diagnostic_{number}.{stamp}.json")

    def release_failed(self) -> list[int]:
        """Archive every failure record so ``start --retry-failed`` runs those reports again."""
        numbers = sorted(self.failed_numbers())
        for number in numbers:
            self._archive_failed(number)
        return numbers

    # --- checkpoints ---------------------------------------------------------

    def save_checkpoint(self, number: int, step: str, data: dict[str, Any]) -> None:
        # Appended, not fsynced: a checkpoint must survive the process (SIGKILL, crash), and the page
        # cache does; after a power loss the step is simply paid for again. Results stay fully durable.
        path = self.checkpoint_path(number)
        self._spare.take(path)
        append_record(path, {CHECKPOINT_STEP_KEY: step, **data})

    def load_checkpoints(self, number: int) -> dict[str, dict[str, Any]]:
        """The finished steps of an unfinished report, by step name (the last line of each step)."""
        steps: dict[str, dict[str, Any]] = {}
        for record in read_records(self.checkpoint_path(number)):
            step = record.pop(CHECKPOINT_STEP_KEY, None)
            if isinstance(step, str):
                steps[step] = record
        return steps or self._load_legacy_checkpoints(number)

    def _load_legacy_checkpoints(self, number: int) -> dict[str, dict[str, Any]]:
        folder = self._legacy_checkpoint_dir(number)
        try:
            if any(name.startswith(TMP_MARK) for name in os.listdir(folder)):
                remove_stale_temporaries(folder)  # a writer killed mid-checkpoint: its attempt is repeated now
        except OSError:
            return {}
        return read_json_folder(folder)

    def clear_checkpoints(self, number: int) -> None:
        """Drop a report's checkpoints. The file, emptied, becomes this process's spare for its next report
        (no inode freed and taken again per report); one that cannot be kept is removed."""
        path = self.checkpoint_path(number)
        if not self._spare.keep(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        shutil.rmtree(self._legacy_checkpoint_dir(number), ignore_errors=True)

    def checkpoint_files(self, number: int) -> list[Path]:
        """The checkpoint file of ``number`` and an earlier version's checkpoint folder, those that exist."""
        return [path for path in (self.checkpoint_path(number), self._legacy_checkpoint_dir(number))
                if path.exists()]

    def counts(self) -> dict[str, int]:
        """Files per output folder (lists folders: for summaries, not for every refresh)."""
        result: dict[str, int] = {}
        for key, folder in (("raw", RAW_DIR), ("normalized", NORMALIZED_DIR), ("failed", FAILED_DIR)):
            result[key] = len(self._numbers(folder))
        try:
            result["logs"] = sum(1 for e in os.scandir(self.root / LOG_DIR) if e.name.endswith(".log"))
        except OSError:
            result["logs"] = 0
        return result
