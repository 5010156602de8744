"""The LLM extractor: one step of one report, answered by an OpenAI-compatible endpoint.

``LLMExtractor.run`` asks once; when the answer is cut (``finish_reason``
"length"), holds no JSON, or does not fit the step's schema, it asks once more
with a repair prompt that says exactly what was wrong. A second bad answer
raises ``InvalidOutput``; the pipeline then decides what comes next. A note
longer than the note limit (``MAX_NOTE_CHARS``) is asked in parts (except for
the mapping step, which gets excerpts) and the parts' answers are merged.

Context windows: with the endpoint's window known (``context_tokens``, or what
a "context length exceeded" answer said), each request's ``max_tokens`` is cut
to what the window leaves after the prompt. When even ``MIN_ANSWER_TOKENS``
would not fit, the note limit halves (more, smaller parts) and the step starts
again; the smaller limit stays for the endpoint's later reports. Below
``MIN_NOTE_CHARS`` the report fails as ``too_long``, naming the window.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ValidationError

from distill.core.config import Endpoint
from distill.core.errors import ContextLengthExceeded, InvalidOutput, NoteTooLong, ReportError
from distill.extraction.extractor import CallRecord, EventSink, StepInput, StepResult, TeacherInfo, ignore_event
from distill.extraction.http_client import ChatClient, ChatReply
from distill.extraction.jsonextract import json_candidates
from distill.extraction.prompts import MAX_NOTE_CHARS, PROMPT_VERSION, build_messages, build_repair_messages, split_note
from distill.extraction.schemas import STEP_MODELS, FindingsOutput

_MAX_LISTED_ERRORS = 6
#: A request leaving less room than this for the answer is not sent: the note is cut smaller instead.
MIN_ANSWER_TOKENS = 512
#: The note limit never falls below this; a report that needs less still does not fit is ``too_long``.
MIN_NOTE_CHARS = 600
#: Prompt bytes per token assumed until the endpoint's usage says better (UTF-8 English runs about 4).
_BYTES_PER_TOKEN = 4.0
_SAFETY_TOKENS = 32
_MAX_FITS = 12


class _DoesNotFit(Exception):
    """This request cannot fit the window with its note: a smaller note limit is needed."""


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
    first: ValidationError | None = None
    candidates = json_candidates(reply.text)
    for value in candidates:  # an answer may hold several JSON values: the one fitting the schema counts
        if not isinstance(value, dict):
            continue
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            first = first or exc
    if first is None:
        raise InvalidOutput(f"step {step}: the answer is a JSON {type(candidates[0]).__name__}, not an object")
    raise InvalidOutput(f"step {step}: the JSON does not match the schema: {describe_validation_error(first)}")


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
        self._context: int | None = endpoint.context_tokens  # the window, once known
        self._max_tokens: int | None = None  # a smaller answer budget, once a server without numbers refused
        self._note_limit = MAX_NOTE_CHARS
        self._bytes_per_token = _BYTES_PER_TOKEN

    def run(self, step: str, data: StepInput) -> StepResult:
        """Answer ``step`` with a validated model; ``StepResult.calls`` holds every HTTP attempt.

        Raises ``InvalidOutput`` after a failed repair, ``NoteTooLong`` when the step cannot fit the
        endpoint's context window, or the ``EndpointError`` / ``StopRequested`` the client raised. A
        raised ``ReportError`` carries the step's attempts as ``exc.calls``; an unknown ``step`` raises
        ``ValueError`` (from ``build_messages``) before any request.
        """
        calls: list[CallRecord] = []
        try:
            for _ in range(_MAX_FITS):
                limit = self._note_limit
                try:
                    return self._run_within(step, data, calls, limit)
                except _DoesNotFit:
                    self._shrink_note_limit(limit)
            raise self._too_long()
        except ReportError as exc:
            # The calls a failed step cost still count toward usage: callers read them here.
            setattr(exc, "calls", calls)  # noqa: B010 - the error classes do not declare it
            raise

    def _run_within(self, step: str, data: StepInput, calls: list[CallRecord], limit: int) -> StepResult:
        if step == "mapping":
            return self._map_within(data, calls, limit)
        if len(data.text) <= limit:
            return self._run(step, data, calls, limit)
        parts = [self._run(step, replace(data, text=part), calls, limit) for part in split_note(data.text, limit)]
        return StepResult(output=merge_outputs(step, [p.output for p in parts]), calls=calls,
                          raw_text="\n".join(p.raw_text for p in parts))

    def _map_within(self, data: StepInput, calls: list[CallRecord], limit: int) -> StepResult:
        """Map every finding; when the findings do not fit one request, map them in halves (each half with
        the passages around its own quotes). Only a single finding that cannot fit asks for a smaller note."""
        try:
            return self._run("mapping", data, calls, limit)
        except _DoesNotFit:
            findings = data.findings.findings if data.findings else []
            if len(findings) < 2:
                raise
        half = len(findings) // 2
        parts = [self._map_within(replace(data, findings=FindingsOutput(findings=group)), calls, limit)
                 for group in (findings[:half], findings[half:])]
        return StepResult(output=merge_outputs("mapping", [p.output for p in parts]), calls=calls,
                          raw_text="\n".join(p.raw_text for p in parts))

    def _run(self, step: str, data: StepInput, calls: list[CallRecord], limit: int) -> StepResult:
        messages = build_messages(step, data, limit)
        problems: list[str] = []
        for purpose in ("answer", "repair"):
            asked = len(calls)
            try:
                reply = self._fitted_chat(messages, step, calls)
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
                messages = build_repair_messages(step, data, reply.text, problems[0], limit)
        problem, second = problems
        first = "the first answer had the same problem" if second == problem else f"first answer: {problem}"
        raise InvalidOutput(f"endpoint {self.endpoint.name}: {second} (after one repair retry; {first})")

    # --- fitting a request to the context window ------------------------------------

    def _fitted_chat(self, messages: list[dict[str, str]], step: str, calls: list[CallRecord]) -> ChatReply:
        size = sum(len(m["content"].encode("utf-8")) for m in messages)
        known_prompt: int | None = None
        for _ in range(3):
            max_tokens = self._answer_budget(size, known_prompt)
            try:
                reply = self._client.chat(messages, step=step, calls=calls, max_tokens=max_tokens)
            except ContextLengthExceeded as exc:
                self._learn(exc, size, max_tokens)
                known_prompt = exc.prompt_tokens
                continue
            if reply.prompt_tokens > 0:
                self._bytes_per_token = max(1.0, size / reply.prompt_tokens)
            return reply
        raise _DoesNotFit()

    def _answer_budget(self, prompt_bytes: int, prompt_tokens: int | None) -> int:
        """The request's max_tokens: the endpoint's, cut to what the window leaves after the prompt."""
        wanted = self.endpoint.max_tokens if self._max_tokens is None else self._max_tokens
        if self._context is None:
            return wanted
        prompt = prompt_tokens if prompt_tokens is not None else int(prompt_bytes / self._bytes_per_token) + 1
        room = self._context - prompt - _SAFETY_TOKENS - self._context // 50
        if room >= min(wanted, MIN_ANSWER_TOKENS):
            return min(wanted, room)
        raise _DoesNotFit()

    def _learn(self, exc: ContextLengthExceeded, prompt_bytes: int, max_tokens: int) -> None:
        if exc.prompt_tokens:
            self._bytes_per_token = max(1.0, prompt_bytes / exc.prompt_tokens)
        if exc.context_tokens:
            self._context = exc.context_tokens
        elif self._context is None:
            # The server gave no numbers: ask for half the answer, down to the least worth having.
            if max_tokens // 2 < MIN_ANSWER_TOKENS:
                raise _DoesNotFit()
            self._max_tokens = max_tokens // 2
        self._events("context_fit", {"endpoint": self.endpoint.name, "context_tokens": self._context})

    def _shrink_note_limit(self, limit: int) -> None:
        if limit <= MIN_NOTE_CHARS:
            raise self._too_long()
        self._note_limit = max(MIN_NOTE_CHARS, min(self._note_limit, limit // 2))
        self._events("note_limit", {"endpoint": self.endpoint.name, "note_chars": self._note_limit})

    def _too_long(self) -> NoteTooLong:
        window = f"{self._context} tokens" if self._context else "a size the server did not say"
        source = "context_tokens" if self.endpoint.context_tokens else "as the endpoint said"
        return NoteTooLong(f"endpoint {self.endpoint.name}: the request does not fit its context window of {window} "
                           f"({source}), even with the note in parts of {self._note_limit} characters")

    def close(self) -> None:
        """Release the HTTP session."""
        self._client.close()
