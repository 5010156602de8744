"""The input folder as claims see it: which files are reports, and whether a note has stopped changing.

A report is ``report_<N>.txt`` or ``report_<N>.json`` with N in ASCII digits and no leading
zero (``distill.extraction.report.REPORT_NAME``). A file that looks like a report but is
not one (``report_007.txt``, ``report_².txt``), or the ``.json`` beside a ``.txt`` of the same
number, is not counted: the scan lists it with the reason, so that every file is accounted for.
"""

from __future__ import annotations

import os
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from distill.core.errors import InputDirMissing
from distill.extraction.report import REPORT_NAME, REPORT_SUFFIXES, shown_name, unused_name_reason
from distill.results.store import OutputStore

#: At most this many unused names are kept per scan (a folder of another naming scheme is one warning, not a flood).
UNUSED_KEPT = 200


def missing_input(folder: Path, what: str = "does not exist") -> InputDirMissing:
    return InputDirMissing(f"input folder {folder} {what} (INPUT_DIR / --input-dir)")


def require_input_dir(folder: Path) -> None:
    """Raise ``InputDirMissing`` naming the folder unless it is a folder."""
    if not folder.is_dir():
        raise missing_input(folder, "is not a folder" if folder.exists() else "does not exist")


@dataclass(frozen=True)
class InputScan:
    """One listing of the input folder: report numbers of the range, and files not used, with why."""

    numbers: array[int]
    unused: dict[str, str] = field(default_factory=dict)  # shown file name -> reason (at most UNUSED_KEPT)
    unused_count: int = 0

    def unused_lines(self) -> list[str]:
        return [f"{name}: not used: {reason}" for name, reason in self.unused.items()]


def scan_names(folder: Path, start: int, end: int | None) -> InputScan:
    """Sorted report numbers in ``folder`` within ``[start, end]`` and the report-like names not used."""
    found = array("q")
    unused: dict[str, str] = {}
    count = 0
    txt: set[int] = set()
    json_only: dict[int, str] = {}
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        raise missing_input(folder) from None
    except NotADirectoryError:
        raise missing_input(folder, "is not a folder") from None
    top = end if end is not None else sys.maxsize
    with entries:
        for entry in entries:
            name = entry.name
            if not name.startswith("report_"):
                continue
            match = REPORT_NAME.fullmatch(name)
            if match is None:
                reason = unused_name_reason(name)
                if reason is not None:
                    count += 1
                    if len(unused) < UNUSED_KEPT:
                        unused[shown_name(name)] = reason
                continue
            number = int(match.group(1))
            if start <= number <= top:
                found.append(number)
                if match.group(2) == "txt":
                    txt.add(number)
                else:
                    json_only[number] = name
    for number in sorted(n for n in json_only if n in txt):
        count += 1
        if len(unused) < UNUSED_KEPT:
            unused[json_only[number]] = f"report_{number}.txt has the same number and is the one used"
    return InputScan(array("q", sorted(set(found))), unused, count)


def scan_input(folder: Path, start: int, end: int | None) -> array[int]:
    """Sorted report numbers in ``folder`` within ``[start, end]`` (one listing)."""
    return scan_names(folder, start, end).numbers


@dataclass(frozen=True)
class RangeScan:
    """The reports of a range as the folders show them now: in the input folder, done, failed."""

    existing: array[int]
    done: set[int]
    failed: set[int]
    unused: dict[str, str] = field(default_factory=dict)
    unused_count: int = 0

    def pending(self) -> array[int]:
        return array("q", (n for n in self.existing if n not in self.done and n not in self.failed))

    def counts(self) -> dict[str, int]:
        done = sum(1 for n in self.existing if n in self.done)
        failed = sum(1 for n in self.existing if n in self.failed and n not in self.done)
        return {"existing": len(self.existing), "pending": len(self.existing) - done - failed,
                "done": done, "failed": failed, "unused": self.unused_count}


def scan_range(folder: Path, store: OutputStore, start: int, end: int | None) -> RangeScan:
    """One listing of the input folder and of the done and failed outputs."""
    names = scan_names(folder, start, end)
    return RangeScan(names.numbers, store.settled_numbers(), store.failed_numbers(), names.unused,
                     names.unused_count)


def report_path(folder: Path, number: int) -> Path | None:
    """The file of report ``number`` (``.txt`` preferred), or ``None`` when neither exists."""
    for suffix in REPORT_SUFFIXES:
        path = folder / f"report_{number}{suffix}"
        if os.path.lexists(path):
            return path
    return None


class SettleCheck:
    """Whether a note has stopped changing: same size and modification time for ``settle_s`` seconds.

    A note whose modification time is ``settle_s`` old has not changed since. A note stamped in the
    future (a clock ahead of ours, a copy that kept its source's time) is watched instead: it
    counts as settled once this process has seen the same size and time for ``settle_s``.
    """

    def __init__(self, settle_s: float, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settle_s = settle_s
        self.clock = clock
        self.monotonic = monotonic
        self._seen: dict[str, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, first seen, monotonic)

    def wait_left(self, path: Path) -> float:
        """Seconds until ``path`` may count as settled; ``0.0`` when it has (or cannot be looked at:
        reading it then gives the clear error)."""
        if self.settle_s <= 0:
            return 0.0
        try:
            info = os.stat(path)
        except OSError:
            return 0.0
        age = self.clock() - info.st_mtime
        key = str(path)
        if age >= self.settle_s:
            self._seen.pop(key, None)
            return 0.0
        if age >= 0:
            return self.settle_s - age
        now = self.monotonic()
        size, mtime, since = self._seen.get(key, (-1, -1, now))
        if (size, mtime) != (info.st_size, info.st_mtime_ns):
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[key] = (info.st_size, info.st_mtime_ns, now)
            return self.settle_s
        left = self.settle_s - (now - since)
        if left <= 0:
            self._seen.pop(key, None)
            return 0.0
        return left
