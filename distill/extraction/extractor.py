"""The one interface both teachers implement: run one step of one report.

The pipeline chooses the text each step sees and the order of steps; an
``Extractor`` only answers a step. ``LLMExtractor`` (``distill.extraction.llm``) asks an
endpoint; ``LocalTeacher`` (``distill.extraction.teacher``) applies rules offline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    from distill.core.prices import Price
    from distill.extraction.report import Report
    from distill.extraction.schemas import FindingsOutput, OrgansOutput

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
