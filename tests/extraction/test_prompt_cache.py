"""The calls of one report share a cacheable prefix, and cached prompt tokens are read and summed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from distill.bench.stub_answers import CACHE_BLOCK_CHARS, PrefixCache
from distill.bench.stub_server import CallInfo, StubServer, default_answer, parse_call
from distill.core.config import Endpoint, Secret
from distill.extraction.extractor import StepInput
from distill.extraction.http_client import ChatClient, cached_tokens
from distill.extraction.llm import LLMExtractor
from distill.extraction.pipeline import _usage
from distill.extraction.schemas import FindingsOutput, OrgansOutput

NOTE = ("HISTORY: The patient reports chest pain and shortness of breath on exertion. She denies fever.\n"
        "EXAM: A systolic murmur is heard at the apex. Mild ankle edema.\n"
        "ASSESSMENT: Mitral regurgitation; suspected heart failure.\n")


@pytest.fixture
def recorded() -> Iterator[tuple[StubServer, list[CallInfo]]]:
    seen: list[CallInfo] = []

    def responder(call: CallInfo) -> dict[str, Any]:
        seen.append(call)
        return default_answer(call)

    server = StubServer(responder=responder).start()
    yield server, seen
    server.stop()


def _extractor(server: StubServer, model: str = "stub-model") -> LLMExtractor:
    endpoint = Endpoint("api_1", base_url=server.url, model=model, api_key=Secret("k"), provider="openai",
                        max_attempts=1)
    return LLMExtractor(endpoint, client=ChatClient(endpoint, sleep=lambda s: None, rng=random.Random(1)))


def _three_steps(extractor: LLMExtractor, number: int, note: str = NOTE) -> list[Any]:
    report = SimpleNamespace(number=number)
    findings = extractor.run("findings", StepInput(report=report, text=note))  # type: ignore[arg-type]
    organs = extractor.run("organs", StepInput(report=report, text=note))  # type: ignore[arg-type]
    assert isinstance(findings.output, FindingsOutput) and isinstance(organs.output, OrgansOutput)
    mapping = extractor.run("mapping", StepInput(report=report, text=note, findings=findings.output,  # type: ignore[arg-type]
                                                 organs=organs.output))
    return [*findings.calls, *organs.calls, *mapping.calls]


def test_the_three_calls_of_a_report_share_their_leading_part_byte_for_byte(
        recorded: tuple[StubServer, list[CallInfo]]) -> None:
    server, seen = recorded
    _three_steps(_extractor(server), 10001)
    assert [c.step for c in seen] == ["findings", "organs", "mapping"] and {c.report for c in seen} == {10001}
    first = seen[0].prompt
    shared = min(len(_common_prefix(first, c.prompt)) for c in seen[1:])
    # The shared part ends after the note; everything step-specific comes after it.
    assert first[:shared].endswith("NOTE>>>\nuser\n[diag-distill step: ") and NOTE.strip() in first[:shared]
    assert all(c.prompt.startswith(first[:shared]) for c in seen)
    assert all(c.note == NOTE.strip("\n") for c in seen)


def test_two_reports_differ_only_after_the_common_rules(recorded: tuple[StubServer, list[CallInfo]]) -> None:
    server, seen = recorded
    extractor = _extractor(server)
    extractor.run("findings", StepInput(report=SimpleNamespace(number=1), text=NOTE))  # type: ignore[arg-type]
    extractor.run("findings", StepInput(report=SimpleNamespace(number=2), text=NOTE))  # type: ignore[arg-type]
    common = _common_prefix(seen[0].prompt, seen[1].prompt)
    assert "Allowed organ names:" in common and common.endswith("\n[report: ") and NOTE not in common


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def test_stub_reports_cached_tokens_for_a_repeated_prefix_in_the_openai_shape(
        recorded: tuple[StubServer, list[CallInfo]]) -> None:
    server, _ = recorded
    calls = _three_steps(_extractor(server), 10002)
    assert calls[0].cached_tokens == 0  # nothing seen yet for this model
    assert all(c.cached_tokens > 0 for c in calls[1:])
    assert all(c.cached_tokens < c.prompt_tokens for c in calls)
    # Another model has its own cache: the same report is not cached there.
    other = _three_steps(_extractor(server, model="other-model"), 10002)
    assert other[0].cached_tokens == 0
    stats = server.stats()
    assert stats["cached_tokens"] == sum(c.cached_tokens for c in calls + other)
    assert stats["prompt_tokens"] == sum(c.prompt_tokens for c in calls + other)


def test_prefix_cache_matches_whole_blocks_of_the_longest_common_prefix() -> None:
    cache = PrefixCache()
    base = "a" * (CACHE_BLOCK_CHARS * 3)
    assert cache.lookup(base + "first tail") == 0
    assert cache.lookup(base + "second tail") == CACHE_BLOCK_CHARS * 3
    changed = "a" * CACHE_BLOCK_CHARS + "b" * (CACHE_BLOCK_CHARS * 2)
    assert cache.lookup(changed) == CACHE_BLOCK_CHARS
    assert cache.lookup("short") == 0


def test_prefix_cache_forgets_the_least_recently_used_blocks() -> None:
    cache = PrefixCache(max_blocks=2)
    old, new = "x" * (CACHE_BLOCK_CHARS * 2), "y" * (CACHE_BLOCK_CHARS * 2)
    cache.lookup(old)
    cache.lookup(new)
    assert cache.lookup(old) == 0


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        pytest.param({"prompt_tokens": 900, "prompt_tokens_details": {"cached_tokens": 640}}, 640, id="openai-vllm"),
        pytest.param({"prompt_tokens": 900, "prompt_cache_hit_tokens": 512, "prompt_cache_miss_tokens": 388}, 512,
                     id="deepseek"),
        pytest.param({"prompt_tokens": 900}, 0, id="no-cache-fields"),
        pytest.param({"prompt_tokens": 900, "prompt_tokens_details": None}, 0, id="details-null"),
        pytest.param({"prompt_tokens_details": {"cached_tokens": "bad"}}, 0, id="not-a-number"),
    ],
)
def test_cached_tokens_are_read_from_either_usage_shape(usage: dict[str, Any], expected: int) -> None:
    assert cached_tokens(usage) == expected


@pytest.mark.parametrize("shape", ["openai", "deepseek"])
def test_cached_tokens_reach_the_call_record_and_are_summed_per_report(shape: str) -> None:
    def usage(call: CallInfo) -> dict[str, Any]:
        if shape == "openai":
            return {"prompt_tokens": 1000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 700}}
        return {"completion_tokens": 10, "prompt_cache_hit_tokens": 700, "prompt_cache_miss_tokens": 300}

    server = StubServer(usage=usage).start()
    try:
        calls = _three_steps(_extractor(server), 7)
    finally:
        server.stop()
    assert [(c.prompt_tokens, c.cached_tokens) for c in calls] == [(1000, 700)] * 3
    totals = _usage(calls)
    assert (totals["prompt_tokens"], totals["cached_tokens"]) == (3000, 2100)


def test_a_step_marker_inside_the_note_does_not_fool_the_stub() -> None:
    from distill.bench.stub_answers import parse_call
    from distill.extraction.prompts import build_messages

    note = "[diag-distill step: mapping]\n[report: 999]\nThe patient reports chest pain."
    data = StepInput(report=SimpleNamespace(number=5), text=note)  # type: ignore[arg-type]
    call = parse_call({"messages": build_messages("organs", data)}, 0, "")
    assert (call.step, call.report, call.note) == ("organs", 5, note)


def test_a_note_read_in_parts_keeps_the_whole_note_in_the_shared_prefix() -> None:
    from distill.extraction.prompts import build_messages

    report = SimpleNamespace(text="HISTORY: cough for days.\n\nEXAM: crackles at the left base.\n", number=7)
    part = StepInput(report, "EXAM: crackles at the left base.", part="2/2")  # type: ignore[arg-type]
    whole = StepInput(report, report.text)  # type: ignore[arg-type]
    findings, organs = build_messages("findings", part), build_messages("organs", whole)
    assert findings[0] == organs[0] and "cough for days" in findings[0]["content"]
    user = findings[1]["content"]
    assert "[note part: 2/2]" in user and "<<<PART\nEXAM: crackles at the left base.\nPART>>>" in user
    call = parse_call({"messages": findings, "model": "m"}, 0, "")
    assert call.step == "findings" and call.part == "2/2" and call.counted_step == "findings#2/2"
    assert call.note == "EXAM: crackles at the left base."
