"""What the stub endpoint reads from a call and what it answers: the call's markers, the faults it can
inject, and a valid answer grounded in the note for each step."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from distill.bench.stub_odd import ODD_KINDS, TRANSPORT_KINDS

#: Kinds whose 200 answer is a valid completion of the step's schema (``ungrounded`` included:
#: its quotes are invented, but its shape is right, so a client accepts it).
ACCEPTED_KINDS = ("ok", "latency", "ungrounded", "no_json_mode", "no_json_schema", "think", "reasoning_content",
                  "list_content", "several_json", "gzip")
FAULT_KINDS = ("ok", "latency", "400", "429", "500", "502", "503", "hang", "reset", "not_json", "bad_body", "length",
               "bad_schema", "ungrounded", "no_json_mode", *ODD_KINDS, *TRANSPORT_KINDS)
STUB_ORGAN = "Heart (Cor)"
_STEP = re.compile(r"\[diag-distill step: ([a-z_]+)\]")
_PART = re.compile(r"^\[note part: ([^\]]+)\]$", re.MULTILINE)
_REPORT = re.compile(r"^\[report: (-?\d+)\]$", re.MULTILINE)
_PHRASE = re.compile(r"[^\W\d_]+(?: [^\W\d_]+){1,3}")


@dataclass
class Fault:
    """What the server does with one call.

    ``kind`` is one of ``FAULT_KINDS``: ``not_json`` answers prose instead of
    JSON; ``bad_body`` sends an HTTP 200 whose body is not JSON at all;
    ``hang`` holds the call ``delay_s`` seconds (default 30) then closes;
    ``latency`` adds ``delay_s`` before a normal answer; ``no_json_mode``
    refuses a request that sets ``response_format`` (400) and answers one that
    does not; ``no_json_schema`` refuses only ``json_schema``. ``retry_after`` / ``retry_after_ms`` set
    the 429's headers. ``trickle`` sends a valid answer one byte every ``delay_s`` seconds (default 1);
    ``gzip`` sends a normal answer gzip-encoded; ``huge``, ``gzip_bomb`` and ``deep_body`` send bodies no
    client should hold; the kinds in
    ``distill.bench.stub_odd.ODD_KINDS`` shape the message as reasoning models and servers do.
    """

    kind: str = "ok"
    retry_after: float | None = None
    delay_s: float = 0.0
    retry_after_ms: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")


@dataclass
class CallInfo:
    """One call as the server understood it."""

    step: str
    report: int | None
    note: str
    n: int  # 0-based index of this call among all calls the server received
    model: str
    api_key: str
    findings_json: str = ""
    diagnoses_json: str = ""
    json_mode: bool = False  # the request set response_format (any type)
    response_format: str = ""  # its type: "json_schema", "json_object" or "" (none)
    schema: bool = False  # it carried a JSON schema (json_schema, or json_object with "schema")
    max_tokens: int = 0
    prompt: str = ""  # every message's role and content, in order: what a prefix cache compares
    part: str = ""  # "2/5" when the call reads one part of a note

    @property
    def counted_step(self) -> str:
        """The step as the counters name it: each part of a note read in parts counts on its own."""
        return f"{self.step}#{self.part}" if self.part else self.step


#: The stub counts about this many characters per token (prompt and answer alike).
CHARS_PER_TOKEN = 4
#: A prefix cache matches whole blocks of this many characters, as vLLM and llama.cpp match token blocks.
CACHE_BLOCK_CHARS = 256


class PrefixCache:
    """The prompt prefixes one model has seen recently, in blocks (``CACHE_BLOCK_CHARS``), least recently
    used dropped past ``max_blocks``: ``lookup`` says how many leading characters of a prompt were cached and
    remembers the prompt's blocks, the way an endpoint's automatic prefix cache bills a repeated prefix."""

    def __init__(self, max_blocks: int = 50_000) -> None:
        self.max_blocks = max_blocks
        self._blocks: dict[int, None] = {}  # chained block hashes, oldest first

    def lookup(self, prompt: str) -> int:
        """The length of the longest cached prefix of ``prompt``, in characters (whole blocks only)."""
        cached = 0
        chained = 0
        still_cached = True
        for start in range(0, len(prompt) - CACHE_BLOCK_CHARS + 1, CACHE_BLOCK_CHARS):
            chained = hash((chained, prompt[start:start + CACHE_BLOCK_CHARS]))
            if still_cached and chained in self._blocks:
                cached = start + CACHE_BLOCK_CHARS
                del self._blocks[chained]  # moved to the young end below
            else:
                still_cached = False
            self._blocks[chained] = None
        while len(self._blocks) > self.max_blocks:
            del self._blocks[next(iter(self._blocks))]
        return cached


def _between(text: str, start: str, end: str, *, last: bool = False) -> str:
    i = text.find(start + "\n")
    if i < 0:
        return ""
    i += len(start) + 1
    j = text.rfind("\n" + end) if last else text.find("\n" + end, i)
    return text[i:j] if j >= i else ""


def _format_type(form: Any) -> str:
    return str(form.get("type") or "") if isinstance(form, dict) else ""


def _has_schema(form: Any) -> bool:
    if not isinstance(form, dict):
        return False
    inner = form.get("json_schema")
    return isinstance(form.get("schema"), dict) or (isinstance(inner, dict) and isinstance(inner.get("schema"), dict))


def parse_call(body: dict[str, Any], n: int, api_key: str) -> CallInfo:
    """Read the step, report number, note and earlier outputs from a chat request."""
    messages = body.get("messages") or []
    system = next((m.get("content", "") for m in messages if m.get("role") == "system"), "")
    user = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    # The step marker leads the user message (after the shared prefix); an older layout had it in the system
    # message. The report number and the note sit in the shared prefix, or in the user message before.
    step = _STEP.match(user) or _STEP.search(system) or _STEP.search(user)
    both = system + "\n" + user
    report = _REPORT.search(both)
    part = _PART.search(user)
    return CallInfo(
        step=step.group(1) if step else "",
        report=int(report.group(1)) if report else None,
        note=_between(user, "<<<PART", "PART>>>") or _between(both, "<<<NOTE", "NOTE>>>", last=True),
        part=part.group(1) if part else "",
        n=n,
        model=str(body.get("model", "")),
        api_key=api_key,
        findings_json=_between(user, "<<<FINDINGS", "FINDINGS>>>"),
        diagnoses_json=_between(user, "<<<DIAGNOSES", "DIAGNOSES>>>"),
        json_mode=bool(body.get("response_format")),
        response_format=_format_type(body.get("response_format")),
        schema=_has_schema(body.get("response_format")),
        max_tokens=int(body.get("max_tokens") or 0) if isinstance(body.get("max_tokens"), int) else 0,
        prompt="".join(f"{m.get('role', '')}\n{m.get('content', '')}\n" for m in messages if isinstance(m, dict)),
    )


def _phrases(note: str, limit: int = 5) -> list[str]:
    """Up to ``limit`` short word runs copied verbatim from the start of the note."""
    head = note[:800]
    found = [m.group(0)[:60].strip() for m in _PHRASE.finditer(head)]
    if not found:  # scripts without spaces between words (Chinese): take short slices
        found = [w[:12] for w in re.findall(r"[^\W\d_]{2,}", head)]
    seen: list[str] = []
    for phrase in found:
        if phrase and phrase not in seen:
            seen.append(phrase)
        if len(seen) >= limit:
            break
    return seen


def _finding_quotes(call: CallInfo) -> list[str]:
    try:
        data = json.loads(call.findings_json)
        return [str(f["quote"]) for f in data["findings"] if f.get("quote")]
    except (ValueError, KeyError, TypeError, AttributeError):
        return _phrases(call.note)


def default_answer(call: CallInfo) -> dict[str, Any]:
    """A valid, grounded answer for the call's step, built cheaply from the note."""
    phrases = _phrases(call.note)
    findings = [{"quote": p, "status": "present", "kind": "symptom"} for p in phrases]
    diagnoses = [{"organ": STUB_ORGAN, "diagnosis": phrases[0], "quote": phrases[0]}] if phrases else []
    if call.step == "findings":
        return {"findings": findings}
    if call.step == "organs":
        return {"diagnoses": diagnoses}
    quotes = _finding_quotes(call) if call.step == "mapping" else phrases
    mappings = [{"finding": q, "organ": STUB_ORGAN, "diagnosis": phrases[0] if phrases else q, "locations": [],
                 "basis": q, "inference": ""} for q in quotes]
    if call.step == "mapping":
        return {"mappings": mappings}
    return {"findings": findings, "diagnoses": diagnoses, "mappings": mappings}


def faulty_answer(kind: str, call: CallInfo, answer: dict[str, Any]) -> tuple[str, str]:
    """The answer text and finish_reason for answer-level faults."""
    text = json.dumps(answer)
    if kind == "not_json":
        return "Sorry, I cannot produce JSON for this note.", "stop"
    if kind == "length":
        return text[: max(1, len(text) // 2)], "length"
    if kind == "bad_schema":
        return json.dumps({"result": "done", "items": [{"text": "no quote field"}]}), "stop"
    if kind == "ungrounded":
        fake = "zzq invented finding"
        made_up = {
            "findings": [{"quote": fake, "status": "present", "kind": "symptom"}],
            "diagnoses": [{"organ": STUB_ORGAN, "diagnosis": fake, "quote": fake}],
            "mappings": [{"finding": fake, "organ": STUB_ORGAN, "locations": ["Left ventricle"], "basis": fake}],
        }
        keys = {"findings": ["findings"], "organs": ["diagnoses"], "mapping": ["mappings"]}.get(call.step)
        return json.dumps({k: v for k, v in made_up.items() if keys is None or k in keys}), "stop"
    return text, "stop"
