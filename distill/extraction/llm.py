"""The LLM extractor: one step of one report, answered by an OpenAI-compatible endpoint.

``LLMExtractor.run`` asks once; when the answer is cut (``finish_reason``
"length"), holds no JSON, or does not fit the step's schema, it asks once more
with a repair prompt that says exactly what was wrong. A second bad answer
raises ``InvalidOutput``; the pipeline then decides what comes next. A note
longer than ``MAX_NOTE_CHARS`` is asked in parts (except for the mapping step,
which gets excerpts) and the parts' answers are merged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ValidationError

from distill.core.config import Endpoint
from distill.core.errors import InvalidOutput, ReportError
from distill.extraction.extractor import CallRecord, EventSink, StepInput, StepResult, TeacherInfo, ignore_event
from distill.extraction.http_client import ChatClient, ChatReply
from distill.extraction.jsonextract import extract_json
from distill.extraction.prompts import MAX_NOTE_CHARS, PROMPT_VERSION, build_messages, build_repair_messages, split_note
from distill.extraction.schemas import STEP_MODELS

_MAX_LISTED_ERRORS = 6


def describe_validation_error(exc: ValidationError, limit: int = _MAX_LISTED_ERRORS) -> str:
    """The failing fields of a pydantic error as one line ("findings.0.quote: Field required; ...")."""
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "(top level)"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def parse_answer(step: str, reply: ChatReply) -> BaseModel:
    """Validate one answer against the step's model; raise ``InvalidOutput`` saying what is wrong."""
    model = STEP_MODELS[step]
    if reply.finish_reason == "length":
        raise InvalidOutput(
            f"step {step}: the answer was cut at the max_tokens limit ({reply.completion_tokens} tokens), "
            "so its JSON is truncated"
        )
    value = extract_json(reply.text)
    if not isinstance(value, dict):
        raise InvalidOutput(f"step {step}: the answer is a JSON {type(value).__name__}, not an object")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        detail = describe_validation_error(exc)
        raise InvalidOutput(f"step {step}: the JSON does not match the schema: {detail}") from None


def merge_outputs(step: str, outputs: list[BaseModel]) -> BaseModel:
    """One output from the outputs of a long note's parts: lists concatenated, exact repeats dropped."""
    merged: dict[str, list[Any]] = {}
    seen: set[str] = set()
    for output in outputs:
        for name, items in output.model_dump(mode="json").items():
            bucket = merged.setdefault(name, [])
            for item in items if isinstance(items, list) else []:
                key = name + json.dumps(item, sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    bucket.append(item)
    return STEP_MODELS[step].model_validate(merged)


class LLMExtractor:
    """Answers steps through one endpoint (implements ``distill.extraction.extractor.Extractor``)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        client: ChatClient | None = None,
        events: EventSink = ignore_event,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.info = TeacherInfo(kind="llm", name=endpoint.name, model=endpoint.model, price=endpoint.price,
                                prompt_version=PROMPT_VERSION, provider=endpoint.provider, host=endpoint.host)
        self.endpoint = endpoint
        self._events = events
        self._client = client or ChatClient(endpoint, events=events, should_stop=should_stop)

    def run(self, step: str, data: StepInput) -> StepResult:
        """Answer ``step`` with a validated model; ``StepResult.calls`` holds every HTTP attempt.

        Raises ``InvalidOutput`` after a failed repair, or the ``EndpointError``
        / ``StopRequested`` the client raised. A raised ``ReportError`` carries
        the step's attempts as ``exc.calls``; an unknown ``step`` raises ``ValueError``
        (from ``build_messages``) before any request.
        """
        calls: list[CallRecord] = []
        try:
            if step == "mapping" or len(data.text) <= MAX_NOTE_CHARS:
                return self._run(step, data, calls)
            parts = [self._run(step, replace(data, text=part), calls) for part in split_note(data.text)]
            return StepResult(output=merge_outputs(step, [p.output for p in parts]), calls=calls,
                              raw_text="\n".join(p.raw_text for p in parts))
        except ReportError as exc:
            # The calls a failed step cost still count toward usage: callers read them here.
            setattr(exc, "calls", calls)  # noqa: B010 - the error classes do not declare it
            raise

    def _run(self, step: str, data: StepInput, calls: list[CallRecord]) -> StepResult:
        messages = build_messages(step, data)
        problems: list[str] = []
        for purpose in ("answer", "repair"):
            asked = len(calls)
            try:
                reply = self._client.chat(messages, step=step, calls=calls)
            finally:
                for call in calls[asked:]:
                    call.purpose = purpose
            answered = calls[-1]  # the attempt that got the reply
            answered.keep_answer(reply.text, self.endpoint.answer_record_chars)
            try:
                return StepResult(output=parse_answer(step, reply), calls=calls, raw_text=reply.text)
            except InvalidOutput as exc:
                problems.append(str(exc))
                answered.rejected = str(exc)
            if len(problems) == 1:
                self._events("repair", {"endpoint": self.endpoint.name, "step": step, "problem": problems[0]})
                messages = build_repair_messages(step, data, reply.text, problems[0])
        problem, second = problems
        first = "the first answer had the same problem" if second == problem else f"first answer: {problem}"
        raise InvalidOutput(f"endpoint {self.endpoint.name}: {second} (after one repair retry; {first})")

    def close(self) -> None:
        """Release the HTTP session."""
        self._client.close()
