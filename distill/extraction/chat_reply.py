"""What an endpoint's answer body says: the completion it holds, or what kind of refusal it is.

``ChatClient`` (``distill.extraction.http_client``) reads a bounded body and hands it here.
Nothing here touches the network. ``parse_completion`` raises ``ReplyProblem``: ``kind``
``"malformed"`` when the body is not a chat completion at all (a proxy's page: treated as an
outage), ``"invalid"`` when it is one but cannot be trusted (nesting too deep to parse, token
counts no call can have): the model's answer is unusable, not the endpoint down.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from dataclasses import dataclass
from typing import Any

#: More tokens than any context window holds: usage above this is not a count, it is garbage.
MAX_USAGE_TOKENS = 10_000_000
_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "prompt_cache_hit_tokens",
                 "prompt_cache_miss_tokens")
#: Content part types that hold the model's reasoning, never its answer.
_REASONING_PARTS = frozenset({"reasoning", "thinking", "reasoning_content", "redacted_thinking"})
#: Phrases servers use when a request is longer than the model's context window:
#: OpenAI's code, vLLM's and OpenAI's message, llama.cpp's message and error type.
_CONTEXT_PHRASES = ("context_length_exceeded", "maximum context length", "exceeds the available context size",
                    "exceed_context_size_error", "exceed context window", "context window of",
                    "context length is")
_CONTEXT_NUMBERS = (re.compile(r"maximum context length is (\d+)"), re.compile(r"context size \((\d+) tokens\)"),
                    re.compile(r"context window of (\d+)"))
_PROMPT_NUMBERS = (re.compile(r"\((\d+) in the messages"), re.compile(r"messages resulted in (\d+) tokens"),
                   re.compile(r"has (\d+) input tokens"), re.compile(r"request \((\d+) tokens\)"))
#: Words in a 4xx body that say the endpoint refused the structured-output form it was asked for.
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "schema", "grammar", "structured output",
                 "guided_json")


class ReplyProblem(Exception):
    """A 200 body that cannot become a reply; ``kind`` is ``"malformed"`` or ``"invalid"``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Completion:
    """The parts of a chat completion the client keeps."""

    text: str
    finish_reason: str
    usage: dict[str, Any]


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise ReplyProblem("invalid", "the answer body is nested too deeply to read") from None
    except ValueError:
        raise ReplyProblem("malformed", "malformed response body (not a chat completion)") from None


def content_text(content: Any) -> str:
    """The answer text of a message's ``content``: a string as is, a list of parts joined (reasoning
    parts left out), null as empty (the repair prompt then asks again)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, dict) and str(part.get("type", "text")) not in _REASONING_PARTS:
                text = part.get("text")
                if isinstance(text, str):
                    pieces.append(text)
        return "".join(pieces)
    raise ReplyProblem("invalid", f"the answer's content is a JSON {type(content).__name__}, not text")


def _check_usage(usage: Any) -> dict[str, Any]:
    if usage is None:
        return {}
    if not isinstance(usage, dict):
        raise ReplyProblem("invalid", "the answer's usage is not an object")
    values = [usage.get(name) for name in _USAGE_FIELDS]
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        values.append(details.get("cached_tokens"))
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                or not 0 <= value <= MAX_USAGE_TOKENS:
            raise ReplyProblem("invalid", f"the answer's usage reports an impossible token count ({str(value)[:40]})")
    return usage


def parse_completion(body: bytes) -> Completion:
    """The answer text, finish reason and usage of a chat completion body; reasoning is never the text."""
    data = _loads(body)
    try:
        choice = data["choices"][0]
        message = choice["message"]
        if not isinstance(message, dict):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        raise ReplyProblem("malformed", "malformed response body (not a chat completion)") from None
    # ``reasoning_content`` (DeepSeek, vLLM, llama.cpp) and ``reasoning`` are drafts: never read here.
    text = content_text(message.get("content"))
    return Completion(text=text, finish_reason=str(choice.get("finish_reason") or ""),
                      usage=_check_usage(data.get("usage")))


def _error_fields(body: bytes) -> tuple[str, dict[str, Any]]:
    """The lower-cased error text and the error object of a refusal body (both empty when unreadable)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return body[:2000].decode("utf-8", "replace").lower(), {}
    error = data.get("error", data) if isinstance(data, dict) else data
    fields = error if isinstance(error, dict) else {}
    return json.dumps(data)[:4000].lower(), fields


def _first_number(patterns: tuple[re.Pattern[str], ...], text: str) -> int | None:
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            return int(match.group(1))
    return None


def _positive_count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_USAGE_TOKENS else None


def context_exceeded(status: int, body: bytes) -> tuple[int | None, int | None] | None:
    """``(context_tokens, prompt_tokens)`` as far as the server said them, when a 400/413 says the request
    is longer than the model's context window; ``None`` for any other answer."""
    if status not in (400, 413, 422):
        return None
    text, fields = _error_fields(body)
    if not any(phrase in text for phrase in _CONTEXT_PHRASES):
        return None
    context = _positive_count(fields.get("n_ctx")) or _first_number(_CONTEXT_NUMBERS, text)
    prompt = _positive_count(fields.get("n_prompt_tokens")) or _first_number(_PROMPT_NUMBERS, text)
    return context, prompt


def refuses_format(status: int, body: bytes) -> bool:
    """Whether an error answer says the structured-output form (``response_format``) was refused."""
    if status not in (400, 415, 422, 500, 501):
        return False
    text, _ = _error_fields(body)
    return any(word in text for word in _FORMAT_WORDS)


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date), or None."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def cached_tokens(usage: Any) -> int:
    """The prompt tokens an endpoint served from its prefix cache, from either usage shape it may send:
    ``prompt_tokens_details.cached_tokens`` (OpenAI, vLLM) or ``prompt_cache_hit_tokens`` (DeepSeek, which
    also sends ``prompt_cache_miss_tokens``; hit plus miss is the prompt). Zero when it sends neither."""
    if not isinstance(usage, dict):
        return 0
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        return as_count(details.get("cached_tokens"))
    return as_count(usage.get("prompt_cache_hit_tokens"))


def as_count(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError, OverflowError):
        return 0
