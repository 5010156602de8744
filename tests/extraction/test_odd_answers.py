"""Answers as models write them, end to end through the LLM extractor against the stub: reasoning is never
the answer, content in parts is joined, null content is repaired, the schema's JSON value is taken, absurd
nesting is invalid output."""

from __future__ import annotations

import random
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from distill.bench.stub_odd import DRAFT
from distill.bench.stub_server import CallInfo, Fault, StubServer
from distill.core.config import Endpoint, Secret
from distill.core.errors import InvalidOutput
from distill.extraction.extractor import StepInput
from distill.extraction.http_client import ChatClient, ChatReply
from distill.extraction.jsonextract import extract_json, json_candidates, strip_reasoning
from distill.extraction.llm import LLMExtractor, parse_answer
from distill.extraction.schemas import FindingsOutput

NOTE = "The patient reports chest pain and shortness of breath. No fever. Exam shows a systolic murmur."
DRAFT_QUOTE = DRAFT["findings"][0]["quote"]


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    yield server
    server.stop()


def _extractor(server: StubServer) -> LLMExtractor:
    endpoint = Endpoint("api_5", base_url=server.url, model="stub-model", api_key=Secret("k"), provider="openai",
                        max_attempts=2)
    return LLMExtractor(endpoint, client=ChatClient(endpoint, sleep=lambda s: None, rng=random.Random(1)))


def _input() -> StepInput:
    return StepInput(report=SimpleNamespace(number=12, text=NOTE), text=NOTE)  # type: ignore[arg-type]


def _always(kind: str) -> Any:
    return lambda call: Fault(kind)


def _first(kind: str) -> Any:
    return lambda call: Fault(kind) if call.n == 0 else Fault()


@pytest.mark.parametrize("kind", ["think", "reasoning_content", "list_content", "several_json"])
def test_an_odd_but_valid_answer_gives_the_real_answer_and_never_the_draft(stub: StubServer, kind: str) -> None:
    stub.fault_plan = _always(kind)
    result = _extractor(stub).run("findings", _input())
    assert isinstance(result.output, FindingsOutput)
    quotes = [f.quote for f in result.output.findings]
    assert quotes and DRAFT_QUOTE not in quotes
    assert all(q in NOTE for q in quotes)
    assert [c.status for c in result.calls] == ["ok"]  # no repair was needed


@pytest.mark.parametrize("kind", ["null_content", "reasoning_only"])
def test_null_content_is_repaired_not_an_outage(stub: StubServer, kind: str) -> None:
    stub.fault_plan = _first(kind)
    result = _extractor(stub).run("findings", _input())
    assert isinstance(result.output, FindingsOutput) and result.output.findings
    assert [c.status for c in result.calls] == ["ok", "ok"] and stub.total == 2  # one repair, no backoff


@pytest.mark.parametrize("kind", ["null_content", "reasoning_only", "deep_nesting"])
def test_an_answer_that_stays_unusable_is_invalid_output(stub: StubServer, kind: str) -> None:
    stub.fault_plan = _always(kind)
    with pytest.raises(InvalidOutput) as caught:
        _extractor(stub).run("findings", _input())
    assert caught.value.failure_class == "invalid_output"
    assert len(caught.value.calls) == 2  # type: ignore[attr-defined]


def _reply(text: str) -> ChatReply:
    return ChatReply(text=text, finish_reason="stop", prompt_tokens=1, completion_tokens=1, latency_s=0.0,
                     http_status=200)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('<think>{"findings": []}</think>{"findings": [{"quote": "chest pain"}]}', "chest pain",
                     id="draft-in-think"),
        pytest.param('<think>a stray { here</think>\n{"findings": [{"quote": "fever"}]}', "fever",
                     id="stray-brace-in-think"),
        pytest.param('thinking without an opening tag {"findings": []}</think>{"findings": [{"quote": "murmur"}]}',
                     "murmur", id="orphan-close"),
        pytest.param('<THINKING>x</THINKING>```json\n{"findings": [{"quote": "pain"}]}\n```', "pain",
                     id="upper-case-tag-and-fence"),
        pytest.param('{"status": "ok"} then {"findings": [{"quote": "cough"}]} and {"done": 1}', "cough",
                     id="schema-value-among-several"),
    ],
)
def test_parse_answer_takes_the_answer_not_the_reasoning(text: str, expected: str) -> None:
    output = parse_answer("findings", _reply(text))
    assert isinstance(output, FindingsOutput) and [f.quote for f in output.findings] == [expected]


def test_an_answer_cut_while_thinking_holds_only_reasoning() -> None:
    with pytest.raises(InvalidOutput, match="only reasoning"):
        extract_json('<think>{"findings": [{"quote": "chest pain"}]} and then')


def test_strip_reasoning_keeps_text_outside_the_blocks() -> None:
    assert strip_reasoning("a<think>b</think>c<think>d</think>e") == "ace"


def test_deep_nesting_in_the_answer_is_invalid_output_not_a_crash() -> None:
    with pytest.raises(InvalidOutput, match="nested too deeply"):
        json_candidates("[" * 100_000 + "]" * 100_000)


def test_no_value_matching_the_schema_names_the_first_problem() -> None:
    with pytest.raises(InvalidOutput, match="does not match the schema: findings"):
        parse_answer("findings", _reply('{"items": 1} {"other": 2}'))


def test_the_request_asks_for_the_schema_by_default(stub: StubServer) -> None:
    seen: list[CallInfo] = []
    stub.fault_plan = lambda call: (seen.append(call), Fault())[1]
    _extractor(stub).run("findings", _input())
    assert (seen[0].response_format, seen[0].schema) == ("json_object", True)
