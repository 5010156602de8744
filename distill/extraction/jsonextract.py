"""Find the JSON value in a model's answer.

Models wrap JSON in prose or Markdown fences, and reasoning models think aloud
first. ``extract_json`` returns the whole top-level object or array, never an
inner fragment of it, and tells a truncated answer (cut by ``max_tokens``)
apart from an answer with no JSON. ``json_candidates`` returns every top-level
value, so a caller can take the one that fits its schema. Reasoning
(``<think>`` blocks) is removed before anything is looked for, so a draft or a
stray brace inside it never counts.
"""

from __future__ import annotations

import json
import re
from typing import Any

from distill.core.errors import InvalidOutput

_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\r?\n?(.*?)```", re.DOTALL)
_CLOSERS = {"{": "}", "[": "]"}
_EXCERPT_CHARS = 60
_TAGS = "think|thinking|reasoning"
_REASONING_BLOCK = re.compile(rf"<({_TAGS})>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_REASONING_CLOSE = re.compile(rf"</(?:{_TAGS})\s*>", re.IGNORECASE)
_REASONING_OPEN = re.compile(rf"<(?:{_TAGS})>", re.IGNORECASE)
_TOO_DEEP = "JSON nested too deeply to read"


def strip_reasoning(text: str) -> str:
    """``text`` without the model's reasoning: every ``<think>…</think>`` block (also ``<thinking>``,
    ``<reasoning>``); everything before a closing tag whose opening tag a chat template left out; everything
    after an opening tag that never closes (the model ran out of tokens while thinking)."""
    text = _REASONING_BLOCK.sub("", text)
    closes = list(_REASONING_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    opened = _REASONING_OPEN.search(text)
    if opened:
        text = text[:opened.start()]
    return text


def _excerpt(text: str) -> str:
    """At most ``_EXCERPT_CHARS`` characters of an answer, for error messages."""
    flat = " ".join(text.split())
    return repr(flat[:_EXCERPT_CHARS] + ("..." if len(flat) > _EXCERPT_CHARS else ""))


def _balanced_end(text: str, start: int) -> tuple[int, str]:
    """Scan the value opened at ``start``.

    Returns ``(end, outcome)``: ``outcome`` is ``"closed"`` with ``end`` just
    past the matching bracket, ``"mismatch"`` with ``end`` at the offending
    bracket, or ``"open"`` when the text ends first (``end == len(text)``).
    Brackets inside JSON strings, including escaped quotes, do not count.
    """
    stack = [_CLOSERS[text[start]]]
    in_string = False
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif ch in "}]":
            if ch != stack.pop():
                return i, "mismatch"
            if not stack:
                return i + 1, "closed"
        i += 1
    return n, "open"


def _is_structured(value: Any) -> bool:
    """An object, or an array holding objects or arrays.

    A bare ``[1]`` or ``[]`` in prose ("see [1]") parses as JSON too; such
    scalar-only arrays are taken only when nothing more structured follows.
    """
    if isinstance(value, dict):
        return True
    return isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)


class _Scan:
    """The outcome of scanning one piece of text for top-level JSON values."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.truncated_at: int | None = None
        self.parse_error: str = ""


def _scan(text: str) -> _Scan:
    scan = _Scan()
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch not in _CLOSERS:
            i += 1
            continue
        end, outcome = _balanced_end(text, i)
        if outcome == "open":
            # Every later bracket lies inside this unclosed value: taking one of
            # them would return an inner fragment, the defect this module avoids.
            scan.truncated_at = i
            return scan
        if outcome == "mismatch":
            scan.parse_error = scan.parse_error or f"brackets do not match at character {end}"
            i = end + 1
            continue
        try:
            scan.values.append(json.loads(text[i:end]))
        except json.JSONDecodeError as exc:
            scan.parse_error = scan.parse_error or f"{exc.msg} at character {i + exc.pos}"
        except RecursionError:
            scan.parse_error = scan.parse_error or f"{_TOO_DEEP} at character {i}"
        i = end  # a balanced value, valid or not, is skipped whole: never descend into it
    return scan


def _pick(values: list[Any]) -> Any:
    for value in values:
        if _is_structured(value):
            return value
    return values[0]


def _direct(text: str) -> tuple[bool, Any]:
    stripped = text.strip()
    if stripped[:1] in _CLOSERS:
        try:
            return True, json.loads(stripped)
        except (json.JSONDecodeError, RecursionError):
            pass
    return False, None


def _no_json(text: str, scan: _Scan) -> InvalidOutput:
    if scan.truncated_at is not None:
        return InvalidOutput(
            f"answer is truncated JSON (the value opened at character {scan.truncated_at} never closes; "
            f"was it cut by max_tokens?): starts {_excerpt(text)}"
        )
    if scan.parse_error:
        return InvalidOutput(f"answer holds no valid JSON ({scan.parse_error}): starts {_excerpt(text)}")
    return InvalidOutput(f"answer holds no JSON object or array: starts {_excerpt(text)}")


def _answer(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidOutput("answer is empty: expected a JSON object")
    answer = strip_reasoning(text)
    if not answer.strip():
        raise InvalidOutput("answer holds only reasoning (a <think> block), no JSON object after it")
    return answer


def json_candidates(text: str) -> list[Any]:
    """Every whole top-level JSON value in ``text`` after its reasoning, in the order ``extract_json``
    prefers them: the whole answer, fenced blocks in order, then the values of the prose, structured
    ones first. Raises ``InvalidOutput`` as ``extract_json`` does when there is none."""
    text = _answer(text)
    found, value = _direct(text)
    if found:
        return [value]
    values: list[Any] = []
    for block in _FENCE.finditer(text):
        found, value = _direct(block.group(1))
        values += [value] if found else _scan(block.group(1)).values
    scan = _scan(text)
    values += [v for v in scan.values if _is_structured(v)] + [v for v in scan.values if not _is_structured(v)]
    if values:
        return values
    raise _no_json(text, scan)


def extract_json(text: str) -> Any:
    """Return the first whole top-level JSON object or array in ``text``.

    Reasoning (``<think>`` blocks) is dropped first. Fenced blocks (```json ... ``` or ``` ... ```) are
    tried first, in order; the first one holding JSON wins. Otherwise the text is scanned for the
    first complete, balanced value (brackets inside strings ignored), and the
    outermost value is returned, never a fragment inside it. Raises
    ``InvalidOutput`` when the JSON is truncated (an opened value never
    closes), nested too deeply to read, or when there is no JSON at all; messages quote at most 60
    characters of the answer.
    """
    text = _answer(text)
    found, value = _direct(text)
    if found:
        return value
    for block in _FENCE.finditer(text):
        found, value = _direct(block.group(1))
        if found:
            return value
        scan = _scan(block.group(1))
        if scan.values:
            return _pick(scan.values)
    scan = _scan(text)
    if scan.values:
        return _pick(scan.values)
    raise _no_json(text, scan)
