"""One report through the three steps: report file -> steps -> normalized result -> store.

``process_report`` never leaves a report half-written: it ends ``done`` (all
outputs committed), ``failed`` (a failure record naming the reason), or raises
``EndpointAuthError`` / ``StopRequested`` with the report untouched except for
per-step checkpoints, so the next attempt pays for no finished step again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from distill.core.clock import utc_now
from distill.core.errors import (
    BadInput,
    EndpointAuthError,
    EndpointUnavailable,
    InvalidOutput,
    OutputWriteError,
    ReportError,
    StopRequested,
)
from distill.core.prices import Price
from distill.core.teacher_id import TEACHER_ID_KEY
from distill.core.words import counted
from distill.extraction.extractor import (
    CallRecord,
    EventSink,
    Extractor,
    StepInput,
    StepResult,
    TeacherInfo,
    ignore_event,
)
from distill.extraction.normalize import normalize, quote_in_text
from distill.extraction.parts import Part, Piece, finding_parts
from distill.extraction.report import Report, read_report, report_number
from distill.extraction.schemas import STEP_MODELS, CombinedOutput, FindingsOutput, MappingOutput, OrgansOutput

RAW_FORMAT = "diag-distill/raw-v1"
FAILED_FORMAT = "diag-distill/failed-v1"
MIN_STEP_TEXT = 40  # characters: a shorter section is not worth a call of its own


class StagedCommit(Protocol):
    """A done report's outputs, written under temporary names, not yet visible."""

    @property
    def size(self) -> int: ...

    def finish(self) -> None: ...

    def abandon(self) -> None: ...


class ReportStore(Protocol):
    """Where the pipeline keeps checkpoints and commits outcomes (the output store implements it)."""

    def load_checkpoints(self, number: int) -> dict[str, dict[str, Any]]: ...

    def save_checkpoint(self, number: int, step: str, data: dict[str, Any]) -> None: ...

    def commit_failed(self, number: int, record: dict[str, Any], log_text: str) -> None: ...

    def stage_done(self, number: int, raw: dict[str, Any], normalized: list[dict[str, Any]],
                   log_text: str) -> StagedCommit: ...

    def read_log(self, number: int) -> str: ...

    def append_log(self, number: int, line: str) -> None: ...


def _prompt_version() -> str:
    from distill.extraction.prompts import PROMPT_VERSION

    return PROMPT_VERSION


@dataclass
class Outcome:
    """What happened to one report."""

    number: int
    status: str  # "done" or "failed"
    findings: int = 0
    units: int = 0
    error_class: str = ""
    message: str = ""
    calls: list[CallRecord] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def tokens(self) -> int:
        return sum(c.prompt_tokens + c.completion_tokens for c in self.calls)


class ReportLog:
    """The per-report log: what happened, step by step; never a key, never the whole note.

    With a ``store``, every line is appended to the report's log file as it is
    written, after the lines of earlier attempts, so an attempt that is killed
    keeps its lines and the next attempt adds its own.
    """

    def __init__(self, number: int, events: EventSink, store: ReportStore | None = None) -> None:
        self.number = number
        self.lines: list[str] = []
        self._events = events
        self._store = store
        self._earlier = store.read_log(number) if store is not None else ""

    def __call__(self, message: str, **details: Any) -> None:
        line = f"{utc_now()} report {self.number}: {message}"
        self.lines.append(line)
        if self._store is not None:
            self._store.append_log(self.number, line + "\n")
        self._events("log", {"report": self.number, "message": message, **details})

    def text(self) -> str:
        """Every attempt's lines: the earlier attempts' then this one's."""
        return self._earlier + "\n".join(self.lines) + "\n"


def attempt_line(info: TeacherInfo) -> str:
    """The first line of each attempt: endpoint, teacher, model and host (never the key, path or query)."""
    host = f", host {info.host}" if info.host else ""
    return f"attempt by endpoint {info.name}: teacher {info.teacher.spelling}, model {info.model}{host}"


def _step_text(report: Report, step: str) -> str:
    # Diagnoses are read where the physician concludes (assessment, impression, diagnoses, plan).
    if step == "organs":
        text = report.sections.conclusion_text()
        if text.strip():
            return text
    return report.text


def _finding_parts(report: Report) -> list[Part]:
    """Every part of the note that can hold a finding; the whole note when they are too short to matter."""
    parts = finding_parts(report.sections)
    if sum(len(p.text.strip()) for p in parts) >= MIN_STEP_TEXT:
        return parts
    return [Part((Piece("note", 0, len(report.text), report.text),))]


def _checkpoint_names(count: int) -> list[str]:
    return ["findings"] if count == 1 else [f"findings_part_{i}" for i in range(1, count + 1)]


def _base_step(name: str) -> str:
    return "findings" if name.startswith("findings_part_") else name


def _section_of(quote: str, part: Part) -> str:
    for piece in part.pieces:
        if quote_in_text(quote, piece.text):
            return piece.section
    return ""


def _usage(calls: list[CallRecord], price: Price | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "calls": len(calls),
        "prompt_tokens": sum(c.prompt_tokens for c in calls),
        "completion_tokens": sum(c.completion_tokens for c in calls),
        "cached_tokens": sum(c.cached_tokens for c in calls),
        "latency_s": round(sum(c.latency_s for c in calls), 4),
    }
    if price is not None:  # only a priced model has a cost
        usage["cost"] = round(price.cost(usage["prompt_tokens"], usage["cached_tokens"], usage["completion_tokens"]), 8)
    return usage


class _Run:
    """The state of one attempt at one report."""

    def __init__(self, report: Report, extractor: Extractor, store: ReportStore, log: ReportLog,
                 events: EventSink) -> None:
        self.report = report
        self.extractor = extractor
        self.store = store
        self.log = log
        self.events = events
        self.calls: list[CallRecord] = []
        self.outputs: dict[str, BaseModel] = {}
        self.teacher_id = extractor.info.teacher.spelling
        # A checkpoint is reused only by the teacher that made it, on the same note text.
        self.checkpoints = {
            step: data
            for step, data in store.load_checkpoints(report.number).items()
            if data.get("sha256") == report.sha256 and data.get(TEACHER_ID_KEY) == self.teacher_id
            and _base_step(step) in STEP_MODELS
        }
        self.finding_parts: list[dict[str, Any]] = []
        self.finding_sections: list[dict[str, Any]] = []

    def step(self, step: str, data: StepInput, checkpoint: str | None = None) -> BaseModel:
        """Run ``step`` (or reuse its checkpoint, saved under ``checkpoint``, the step's name by default)."""
        name = checkpoint or step
        saved = self.checkpoints.get(name)
        if saved is not None:
            try:
                output = STEP_MODELS[step].model_validate(saved["output"])
            except (KeyError, ValidationError):
                output = None
            if output is not None:
                self.calls.extend(CallRecord(**c) for c in saved.get("calls", []))
                self.log(f"step {name}: resumed from checkpoint (no new call)", step=step)
                if checkpoint is None:
                    self.outputs[step] = output
                return output
        self.events("step", {"report": self.report.number, "step": step})
        started = time.monotonic()
        try:
            result: StepResult = self.extractor.run(step, data)
        except ReportError as exc:
            # A failed step's calls were paid for: they count in the report's usage and failure record.
            self.calls.extend(getattr(exc, "calls", []))
            self.log(f"step {name}: {exc.failure_class}: {exc}", step=step)
            raise
        self.calls.extend(result.calls)
        latency = time.monotonic() - started
        self.store.save_checkpoint(self.report.number, name, {
            "sha256": self.report.sha256,
            TEACHER_ID_KEY: self.teacher_id,
            "output": result.output.model_dump(mode="json"),
            "calls": [c.to_dict() for c in result.calls],
        })
        self.log(f"step {name}: ok in {latency:.2f} s, {len(result.calls)} call(s){_summary(result.output)}",
                 step=step, latency_s=latency)
        if checkpoint is None:
            self.outputs[step] = result.output
        return result.output

    def findings_step(self) -> FindingsOutput:
        """Step 1 over every part of the note, one call and one checkpoint per part."""
        parts = _finding_parts(self.report)
        found = []
        self.finding_parts, self.finding_sections = [], []
        for index, (part, name) in enumerate(zip(parts, _checkpoint_names(len(parts)), strict=True), start=1):
            label = f"{index}/{len(parts)}" if len(parts) > 1 else ""
            output = self.step("findings", StepInput(self.report, part.text, part=label), checkpoint=name)
            assert isinstance(output, FindingsOutput)
            self.finding_parts.append({"part": index, "sections": part.sections(), "chars": len(part.text)})
            for finding in output.findings:
                found.append(finding)
                self.finding_sections.append({"quote": finding.quote, "status": finding.status,
                                              "section": _section_of(finding.quote, part), "part": index})
        merged = FindingsOutput(findings=found)
        self.outputs["findings"] = merged
        return merged

    def three_steps(self) -> tuple[FindingsOutput, OrgansOutput, MappingOutput, bool]:
        report = self.report
        try:
            findings = self.findings_step()
            organs = self.step("organs", StepInput(report, _step_text(report, "organs")))
            assert isinstance(findings, FindingsOutput) and isinstance(organs, OrgansOutput)
            mapping = self.step("mapping", StepInput(report, report.text, findings=findings, organs=organs))
            assert isinstance(mapping, MappingOutput)
            return findings, organs, mapping, False
        except InvalidOutput as exc:
            return self.single_call(f"invalid output: {exc}")

    def single_call(self, why: str) -> tuple[FindingsOutput, OrgansOutput, MappingOutput, bool]:
        """The fallback: all three steps in one call."""
        self.log(f"falling back to a single call after {why}")
        combined = self.step("combined", StepInput(self.report, self.report.text))
        assert isinstance(combined, CombinedOutput)
        return (FindingsOutput(findings=combined.findings), OrgansOutput(diagnoses=combined.diagnoses),
                MappingOutput(mappings=combined.mappings), True)


def _summary(output: BaseModel) -> str:
    for name, singular in (("findings", "finding"), ("diagnoses", "diagnosis"), ("mappings", "mapping")):
        value = getattr(output, name, None)
        if isinstance(value, list):
            return f", {counted(len(value), singular)}"
    return ""


def _failure_record(number: int, source: Path, exc: ReportError, run: _Run | None, extractor: Extractor,
                    step: str) -> dict[str, Any]:
    calls = run.calls if run else []
    return {
        "format": FAILED_FORMAT,
        "report_number": number,
        "source": str(source.resolve()),
        "error_class": exc.failure_class,
        "message": str(exc),
        "attempts": len(calls),
        "endpoint": extractor.info.name,
        "model": extractor.info.model,
        "teacher_kind": extractor.info.kind,
        TEACHER_ID_KEY: extractor.info.teacher.spelling,
        "step": step,
        "failed_at": utc_now(),
        "calls": [c.to_dict() for c in calls],
        "usage": _usage(calls, getattr(extractor.info, "price", None)),
    }


def process_report(
    path: Path,
    *,
    extractor: Extractor,
    store: ReportStore,
    max_bytes: int = 2_000_000,
    events: EventSink = ignore_event,
    publish: Callable[[StagedCommit, Outcome], None] | None = None,
    follow_symlinks: bool = False,
    on_unavailable: Callable[[EndpointUnavailable], str | None] | None = None,
) -> Outcome:
    """Run one report end to end and commit the result or a failure record.

    Raises ``EndpointAuthError`` (the endpoint must be disabled; nothing is
    written), ``StopRequested`` (checkpoints kept) and ``OutputWriteError``
    (the disk refused a write; the report is not done).

    A done report's outputs are written here; making them durable and visible
    is ``StagedCommit.finish()``, called here, or by ``publish`` when given
    (the worker finishes commits on a thread while its next report starts).

    ``on_unavailable`` decides about an endpoint that gave up (``EndpointUnavailable``):
    ``None`` re-raises it, so the report goes back to the pool untouched but for its
    checkpoints (an outage is not data); a string fails the report, the string added
    to the failure's message. Without it, the report fails.
    """
    started = time.monotonic()
    started_at = utc_now()
    number = report_number(path)
    if number is None:
        raise BadInput(f"{path.name}: not a report file name (report_<N>.txt or report_<N>.json)")
    log = ReportLog(number, events, store)
    log(attempt_line(extractor.info))
    run: _Run | None = None
    try:
        report = read_report(path, max_bytes=max_bytes, follow_symlinks=follow_symlinks, inside=path.parent)
        log(f"read {path.name}: {len(report.text)} characters, {report.encoding}, "
            f"sections: {', '.join(report.sections.names()) or 'none'}")
        run = _Run(report, extractor, store, log, events)
        findings, organs, mapping, fallback = run.three_steps()
        result = normalize(report.text, findings, organs, mapping)
        if findings.findings and not result.records and not fallback:
            quoted = len(findings.findings)
            findings, organs, mapping, fallback = run.single_call(f"none of the {quoted} quoted findings occur in the note")
            result = normalize(report.text, findings, organs, mapping)
        if findings.findings and not result.records:
            raise InvalidOutput(f"none of the {len(findings.findings)} findings the teacher quoted occur in the note")
    except (EndpointAuthError, StopRequested, OutputWriteError):
        raise
    except Exception as caught:  # a defect costs one report (recorded as a failure), never the run
        verdict = ""
        if isinstance(caught, EndpointUnavailable) and on_unavailable is not None:
            decided = on_unavailable(caught)
            if decided is None:
                raise
            verdict = decided
        exc = caught if isinstance(caught, ReportError) else ReportError(
            f"internal error: {type(caught).__name__}: {caught}")
        message = f"{exc}; {verdict}" if verdict else str(exc)
        step = next((s for s in ("findings", "organs", "mapping", "combined") if run and s not in run.outputs), "read")
        log(f"failed: {exc.failure_class}: {message}")
        record = _failure_record(number, path, exc, run, extractor, step)
        record["message"] = message
        store.commit_failed(number, record, log.text())
        return Outcome(number, "failed", error_class=exc.failure_class, message=message,
                       calls=run.calls if run else [], duration_s=time.monotonic() - started)
    units = sum(len(r["U_unit_set"]) for r in result.records)
    log(f"normalized: {counted(len(result.records), 'finding')} kept, {counted(units, 'unit')}, "
        f"{counted(len(result.dropped), 'item')} dropped")
    duration = time.monotonic() - started
    raw = {
        "format": RAW_FORMAT,
        "report": {"number": number, "source": str(report.path.resolve()), "sha256": report.sha256,
                   "encoding": report.encoding, "chars": len(report.text)},
        "teacher": {"kind": extractor.info.kind, "endpoint": extractor.info.name, "model": extractor.info.model,
                    "provider": extractor.info.teacher.provider,
                    "prompt_version": extractor.info.teacher.prompt_version},
        TEACHER_ID_KEY: extractor.info.teacher.spelling,
        "prompt_version": _prompt_version(),
        "steps": {step: output.model_dump(mode="json") for step, output in run.outputs.items()},
        "fallback_used": fallback,
        "finding_parts": run.finding_parts,
        "finding_sections": [] if fallback else run.finding_sections,
        "calls": [c.to_dict() for c in run.calls],
        "usage": _usage(run.calls, getattr(extractor.info, "price", None)),
        "attempts": len(run.calls),
        "timings": {"started_at": started_at, "finished_at": utc_now(), "duration_s": round(duration, 4)},
        "validation": {"stats": result.stats, "dropped": result.dropped},
        "normalized": result.records,
    }
    log(f"saved in {duration:.2f} s")
    pending = store.stage_done(number, raw, result.records, log.text())
    outcome = Outcome(number, "done", findings=len(result.records), units=units, calls=run.calls,
                      duration_s=duration)
    if publish is None:
        pending.finish()
    else:
        publish(pending, outcome)
    return outcome
