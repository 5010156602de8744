"""The one interface both teachers implement: run one step of one report.

The pipeline chooses the text each step sees and the order of steps; an
``Extractor`` only answers a step. ``LLMExtractor`` (``distill.extraction.llm``) asks an
endpoint; ``LocalTeacher`` (``distill.extraction.teacher``) applies rules offline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from distill.core.redact import mask_known, scrub_secrets
from distill.core.teacher_id import LOCAL, TeacherId

if TYPE_CHECKING:
    from distill.core.prices import Price
    from distill.extraction.report import Report
    from distill.extraction.schemas import FindingsOutput, OrgansOutput

#: Words without which no key-shaped pattern of ``scrub_secrets`` can match an answer (besides the configured
#: keys, which ``mask_known`` masks always).
_SECRET_HINTS = ("bearer", "sk-", "key", "token", "secret", "password", "authorization")

#: Called with an event name and details, e.g. ("backing_off", {"until": t, ...}).
EventSink = Callable[[str, dict[str, Any]], None]


def ignore_event(event: str, details: dict[str, Any]) -> None:
    """The default event sink."""


@dataclass(frozen=True)
class TeacherInfo:
    """Who produced a result; written into every raw output."""

    kind: str  # "llm" or "local"
    name: str  # endpoint name, e.g. "api_3"
    model: str  # model id, or the offline teacher's version
    price: Price | None = None  # what the model's tokens cost, when the configuration says
    prompt_version: str = ""  # of the prompts an LLM is asked with; the offline teacher reads none
    provider: str = "openai"  # of an LLM endpoint ("local" is implied by kind "local")
    host: str = ""  # the endpoint's base URL host[:port]: never its path, query or credentials

    @property
    def teacher(self) -> TeacherId:
        """The teacher identity of every record this extractor makes."""
        if self.kind == LOCAL:
            return TeacherId(LOCAL, self.model)
        return TeacherId(self.provider, self.model, self.prompt_version)


@dataclass
class CallRecord:
    """One HTTP call (or one offline step), for usage and latency accounting."""

    step: str
    attempt: int
    latency_s: float
    status: str  # "ok", or a failure class
    prompt_tokens: int = 0
    completion_tokens: int = 0
    http_status: int | None = None
    cached_tokens: int = 0  # of prompt_tokens, served from the endpoint's prefix cache
    error: str = ""
    # The audit trail of an answered call: why it was made, the answer text (keys masked, capped at
    # ``answer_chars`` characters of the original; ``answer_cut`` when the cap cut it), and why it was rejected.
    purpose: str = ""  # "answer", "repair" (the second ask of a step), or "" for an offline step
    answer: str | None = None
    answer_chars: int = 0
    answer_cut: bool = False
    rejected: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The record as written; the audit fields only where a call had an answer (not the offline teacher's)."""
        record = {name: getattr(self, name) for name in _CALL_FIELDS}  # every field is a scalar: no deep copy
        if self.answer is None:
            for name in ("answer", "answer_chars", "answer_cut", "rejected"):
                del record[name]
        if not self.purpose:
            del record["purpose"]
        return record

    def keep_answer(self, text: str, cap: int) -> None:
        """Record an answer's text: configured keys masked (and bearer tokens, ``sk-`` keys and
        ``token=``-like pairs), then cut after ``cap`` characters with the cut marked (``answer_chars``
        keeps the original length)."""
        masked = mask_known(text)
        lowered = masked.lower()
        if any(hint in lowered for hint in _SECRET_HINTS):  # the patterns cost ~1 ms per answer: only when needed
            masked = scrub_secrets(masked)
        self.answer_chars = len(text)
        self.answer_cut = len(masked) > cap
        self.answer = masked[:cap] + f"[... cut: {len(masked) - cap} more characters]" if self.answer_cut else masked


_CALL_FIELDS = tuple(f.name for f in fields(CallRecord))


@dataclass
class StepInput:
    """What a step may see: the report, the text chosen for it, earlier outputs."""

    report: Report
    text: str
    findings: FindingsOutput | None = None
    organs: OrgansOutput | None = None
    part: str = ""  # "2/5" when ``text`` is one part of a note read in parts; "" for the whole text


@dataclass
class StepResult:
    """A validated step output plus the calls it took."""

    output: BaseModel
    calls: list[CallRecord] = field(default_factory=list)
    raw_text: str = ""  # the model's last answer text (empty for the offline teacher)


class Extractor(Protocol):
    """Answers one step of one report.

    ``step`` is one of ``"findings"``, ``"organs"``, ``"mapping"`` or
    ``"combined"`` (the single-call fallback). Raises a ``ReportError``
    subclass when the step cannot be answered.
    """

    info: TeacherInfo

    def run(self, step: str, data: StepInput) -> StepResult: ...

    def close(self) -> None: ...
