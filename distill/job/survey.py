"""What ``start`` finds before any work: the reports of the range, and a warning when there are none."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from distill.job.claims import scan_range
from distill.results.store import OutputStore

EXAMPLE_NAMES = 3
UNUSED_SHOWN = 10  # lines about files not used; the rest are counted (workers say each once as they scan)


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
    unused: tuple[str, ...] = ()  # one line per report-like file that is not used, with why
    unused_count: int = 0

    def lines(self, input_dir: Path) -> list[str]:
        """One summary line, and a warning when the range holds no report at all."""
        bound = f"{self.start}–{self.end}" if self.end is not None else f"{self.start} and up"
        found = (f"found {self.existing} report(s) numbered {bound} in {input_dir}: "
                 f"{self.done} done, {self.failed} failed, {self.pending} pending")
        unused = [*self.unused[:UNUSED_SHOWN]]
        if self.unused_count > len(unused):
            unused.append(f"... and {self.unused_count - len(unused)} more file(s) not used")
        if self.existing:
            return [found, *unused]
        if self.other_files:
            hint = (f"; the folder holds other files ({', '.join(self.other_files)}); "
                    "notes must be named report_<N>.txt or report_<N>.json")
        else:
            hint = "; the folder is empty"
        return [found, *unused, f"warning: nothing to do yet{hint}. The workers wait for notes to arrive."]


def survey_range(input_dir: Path, output_dir: Path, start: int, end: int | None) -> RangeSurvey:
    """Count the range's reports by state (one listing of each folder)."""
    scan = scan_range(input_dir, OutputStore(output_dir), start, end)
    counts = scan.counts()
    others: list[str] = []
    if not counts["existing"]:
        with os.scandir(input_dir) as entries:
            for entry in entries:
                if not entry.name.startswith("."):
                    others.append(entry.name)
                    if len(others) >= EXAMPLE_NAMES:
                        break
    lines = tuple(f"{name}: not used: {reason}" for name, reason in scan.unused.items())
    return RangeSurvey(start, end, counts["existing"], counts["done"], counts["failed"], counts["pending"],
                       tuple(sorted(others)), lines, scan.unused_count)
