"""A summary of one output folder: what is done, what failed and why, what the teachers found, what it cost.

``collect_stats`` reads the folder one report at a time (``distill.results.outputs.iter_outputs``);
memory stays flat in the number of reports. ``RunStats.to_dict`` is the
``stats --json`` object (fields documented in docs/export.md); ``by_teacher``
holds the same figures for each teacher's records alone.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.extraction.normalize import DUPLICATE
from distill.results.outputs import MAX_PROBLEMS, OutputEntry, ProgressSink, iter_outputs, teacher_fields
from distill.results.teachers import teacher_of

TOP_FINDINGS = 20
#: Distinct findings tracked exactly; beyond this the rarest are pruned and the top list becomes approximate.
FINDING_CAPACITY = 100_000

_SPACES = re.compile(r"\s+")


def finding_key(text: str) -> str:
    """How findings are grouped for the frequency list: case-folded, whitespace collapsed, end punctuation off."""
    return _SPACES.sub(" ", text).strip().strip(".,;:").strip().casefold()


class BoundedCounter:
    """Counts strings, holding at most about ``2 * capacity`` of them.

    When full it keeps the ``capacity`` most frequent; counts of items seen
    after a prune are lower bounds, and ``exact`` turns false.
    """

    def __init__(self, capacity: int = FINDING_CAPACITY) -> None:
        self.capacity = capacity
        self.counts: Counter[str] = Counter()
        self.exact = True

    def add(self, key: str) -> None:
        self.counts[key] += 1
        if len(self.counts) > 2 * self.capacity:
            kept = heapq.nlargest(self.capacity, self.counts.items(), key=lambda item: item[1])
            self.counts = Counter(dict(kept))
            self.exact = False

    def most_common(self, n: int) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))[:n]


@dataclass
class Usage:
    """Reports and tokens attributed to one endpoint or one model."""

    reports_done: int = 0
    reports_failed: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost: float = 0.0  # from the raw outputs' and failure records' usage.cost (priced models only)

    def add_cost(self, usage: Any) -> None:
        value = usage.get("cost") if isinstance(usage, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.cost += float(value)

    def add_calls(self, calls: Iterable[Any]) -> None:
        for call in calls:
            if isinstance(call, dict):
                self.calls += 1
                self.prompt_tokens += _int(call.get("prompt_tokens"))
                self.completion_tokens += _int(call.get("completion_tokens"))
                self.cached_tokens += _int(call.get("cached_tokens"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "reports_done": self.reports_done,
            "reports_failed": self.reports_failed,
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost": round(self.cost, 6),
        }


@dataclass
class RunStats:
    """Everything ``stats`` reports about one output folder."""

    output_dir: Path
    reports: Counter[str] = field(default_factory=Counter)
    failed_by_class: Counter[str] = field(default_factory=Counter)
    findings_histogram: Counter[int] = field(default_factory=Counter)
    findings_by_status: Counter[str] = field(default_factory=Counter)
    units_total: int = 0
    organs: Counter[str] = field(default_factory=Counter)
    findings: BoundedCounter = field(default_factory=BoundedCounter)
    findings_in: int = 0
    findings_kept: int = 0
    findings_merged: int = 0
    dropped_by_reason: Counter[str] = field(default_factory=Counter)
    dropped_by_step: Counter[str] = field(default_factory=Counter)
    by_endpoint: dict[str, Usage] = field(default_factory=dict)
    by_model: dict[str, Usage] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    top: int = TOP_FINDINGS
    per_teacher: bool = True  # keep a ``RunStats`` of each teacher's records in ``by_teacher``
    by_teacher: dict[str, RunStats] = field(default_factory=dict)

    @property
    def findings_total(self) -> int:
        return sum(count * n for count, n in self.findings_histogram.items())

    @property
    def findings_dropped(self) -> int:
        """Findings proposed but not kept, other than repeats merged into a kept finding."""
        return max(0, self.findings_in - self.findings_kept - self.findings_merged)

    @property
    def dropped_share(self) -> float:
        """Share of the findings the teachers proposed that grounding dropped (0.0 when none were proposed)."""
        return self.findings_dropped / self.findings_in if self.findings_in > 0 else 0.0

    def findings_per_report(self) -> dict[str, Any]:
        done = sum(self.findings_histogram.values())
        return {
            "reports": done,
            "total": self.findings_total,
            "mean": round(self.findings_total / done, 3) if done else 0.0,
            "median": _quantile(self.findings_histogram, 0.5),
            "p90": _quantile(self.findings_histogram, 0.9),
            "max": max(self.findings_histogram, default=0),
            "histogram": {str(k): v for k, v in sorted(self.findings_histogram.items())},
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``stats --json`` object."""
        done = self.reports["done"]
        return {
            "output_dir": str(self.output_dir),
            "reports": {key: self.reports[key] for key in ("done", "failed", "incomplete", "corrupt")}
            | {"total": sum(self.reports.values())},
            "failed_by_class": dict(self.failed_by_class.most_common()),
            "findings_per_report": self.findings_per_report(),
            "findings_by_status": dict(self.findings_by_status.most_common()),
            "units": {"total": self.units_total, "mean_per_report": round(self.units_total / done, 3) if done else 0.0},
            "organs": dict(sorted(self.organs.items(), key=lambda item: (-item[1], item[0]))),
            "top_findings": [{"finding": key, "count": n} for key, n in self.findings.most_common(self.top)],
            "top_findings_exact": self.findings.exact,
            "grounding": {
                "findings_in": self.findings_in,
                "findings_kept": self.findings_kept,
                "findings_merged": self.findings_merged,
                "findings_dropped": self.findings_dropped,
                "dropped_share": round(self.dropped_share, 4),
                "dropped_by_reason": dict(self.dropped_by_reason.most_common()),
                "dropped_by_step": dict(self.dropped_by_step.most_common()),
            },
            "tokens_by_endpoint": {name: u.to_dict() for name, u in sorted(self.by_endpoint.items(), key=_api_order)},
            "tokens_by_model": {name: u.to_dict() for name, u in sorted(self.by_model.items())},
            "problems": list(self.problems),
        } | ({"by_teacher": {name: part.to_dict() for name, part in sorted(self.by_teacher.items())}}
             if self.per_teacher else {})

    # --- accumulation ---------------------------------------------------------

    def add(self, entry: OutputEntry) -> None:
        self.reports[entry.state] += 1
        if self.per_teacher and entry.state in ("done", "failed"):
            teacher = teacher_of(entry.raw if entry.state == "done" else entry.failure)
            part = self.by_teacher.get(teacher)
            if part is None:
                part = self.by_teacher[teacher] = RunStats(
                    output_dir=self.output_dir, top=self.top, per_teacher=False,
                    findings=BoundedCounter(self.findings.capacity))
            part.add(entry)
        if entry.state == "done":
            self._add_done(entry)
        elif entry.state == "failed":
            self._add_failed(entry.failure)
        elif entry.state == "corrupt" and len(self.problems) < MAX_PROBLEMS:
            self.problems.append(entry.problem)

    def _usage(self, endpoint: str, model: str) -> tuple[Usage, Usage]:
        return (self.by_endpoint.setdefault(endpoint or "unknown", Usage()),
                self.by_model.setdefault(model or "unknown", Usage()))

    def _add_done(self, entry: OutputEntry) -> None:
        raw = entry.raw
        self.findings_histogram[len(entry.normalized)] += 1
        for finding in entry.normalized:
            self.findings_by_status[finding.status] += 1
            self.findings.add(finding_key(finding.s_symptom))
            for wrapper in finding.U_unit_set:
                self.units_total += 1
                self.organs[wrapper.u_unit.o_organ.organName] += 1
        self._add_grounding(raw, kept_default=len(entry.normalized))
        teacher = teacher_fields(raw)
        for usage in self._usage(teacher["teacher"], teacher["model"]):
            usage.reports_done += 1
            usage.add_calls(raw.get("calls") or [])
            usage.add_cost(raw.get("usage"))

    def _add_grounding(self, raw: dict[str, Any], kept_default: int) -> None:
        validation = _object(raw.get("validation"))
        dropped = validation.get("dropped")
        if not isinstance(dropped, list):
            dropped = []
        dropped_findings = 0
        for item in dropped:
            if not isinstance(item, dict):
                continue
            step = str(item.get("step") or "unknown")
            reason = str(item.get("reason") or "unknown").split(":", 1)[0].strip()
            self.dropped_by_step[step] += 1
            self.dropped_by_reason[reason] += 1
            if step == "findings":
                dropped_findings += 1
                self.findings_merged += reason == DUPLICATE
        numbers = _object(validation.get("stats"))
        found_in, kept = numbers.get("findings_in"), numbers.get("findings_kept")
        if isinstance(found_in, int) and isinstance(kept, int):
            self.findings_in += found_in
            self.findings_kept += kept
        else:
            self.findings_in += kept_default + dropped_findings
            self.findings_kept += kept_default

    def _add_failed(self, failure: dict[str, Any]) -> None:
        self.failed_by_class[str(failure.get("error_class") or "unknown")] += 1
        for usage in self._usage(str(failure.get("endpoint") or ""), str(failure.get("model") or "")):
            usage.reports_failed += 1
            usage.add_calls(failure.get("calls") or [])
            usage.add_cost(failure.get("usage"))


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _quantile(histogram: Counter[int], q: float) -> int:
    """The smallest value with at least ``q`` of the reports at or below it."""
    total = sum(histogram.values())
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= q * total:
            return value
    return 0


def _api_order(item: tuple[str, Usage]) -> tuple[int, str]:
    name = item[0]
    number = name.rsplit("_", 1)[-1]
    return (int(number), name) if number.isdigit() else (1 << 30, name)


def collect_stats(output_dir: Path, *, top: int = TOP_FINDINGS, progress: ProgressSink | None = None,
                  finding_capacity: int = FINDING_CAPACITY) -> RunStats:
    """Summarize ``output_dir``. Raises ``ConfigError`` when it is not an output folder; bad files are counted
    as ``corrupt`` and named in ``problems`` (the first 100), never fatal."""
    stats = RunStats(output_dir=output_dir, top=top, findings=BoundedCounter(finding_capacity))
    for entry in iter_outputs(output_dir, progress=progress):
        stats.add(entry)
    return stats
