from __future__ import annotations

import json
import random
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from distill.bench.stub_server import CallInfo, Fault, StubServer, parse_call
from distill.core.config import Endpoint, Secret
from distill.core.errors import EndpointUnavailable, InvalidOutput
from distill.extraction.extractor import StepInput
from distill.extraction.http_client import ChatClient
from distill.extraction.llm import LLMExtractor, merge_outputs
from distill.extraction.prompts import (
    MAX_NOTE_CHARS,
    PROMPT_VERSION,
    build_messages,
    build_repair_messages,
    mapping_excerpt,
    split_note,
)
from distill.extraction.schemas import FindingsOutput, OrgansOutput
from distill.extraction.vocabulary import load_vocabulary

NOTE = "The patient reports chest pain and shortness of breath. No fever. Exam shows a systolic murmur."


def _plan(*faults: Fault) -> Any:
    def plan(call: CallInfo) -> Fault:
        return faults[call.n] if call.n < len(faults) else Fault()

    return plan


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    yield server
    server.stop()


def _extractor(server: StubServer, events: list[tuple[str, dict[str, Any]]] | None = None) -> LLMExtractor:
    endpoint = Endpoint("api_4", base_url=server.url, model="stub-model", api_key=Secret("k"), provider="openai",
                        max_attempts=2)
    sink = (lambda name, details: events.append((name, details))) if events is not None else (lambda n, d: None)
    client = ChatClient(endpoint, sleep=lambda s: None, rng=random.Random(1))
    return LLMExtractor(endpoint, client=client, events=sink)


def _input(text: str = NOTE, number: int = 77) -> StepInput:
    return StepInput(report=SimpleNamespace(number=number), text=text)  # type: ignore[arg-type]


def test_run_returns_validated_output_usage_and_raw_text(stub: StubServer) -> None:
    extractor = _extractor(stub)
    result = extractor.run("findings", _input())
    assert isinstance(result.output, FindingsOutput) and result.output.findings
    assert result.raw_text.startswith('{"findings"')
    assert len(result.calls) == 1 and result.calls[0].status == "ok"
    assert result.calls[0].prompt_tokens > 0 and result.calls[0].completion_tokens > 0
    assert extractor.info.kind == "llm" and extractor.info.name == "api_4" and extractor.info.model == "stub-model"
    assert stub.by_report_step[(77, "findings")] == 1


@pytest.mark.parametrize(
    ("kind", "told"),
    [
        pytest.param("length", "max_tokens", id="length"),
        pytest.param("not_json", "no JSON", id="not-json"),
        pytest.param("bad_schema", "findings: Field required", id="bad-schema"),
    ],
)
def test_one_repair_retry_tells_the_model_what_was_wrong(stub: StubServer, kind: str, told: str) -> None:
    prompts: list[str] = []

    def plan(call: CallInfo) -> Fault:
        return Fault(kind) if call.n == 0 else Fault()

    stub.fault_plan = plan
    stub.responder = lambda call: (prompts.append(call.note), {"findings": [{"quote": "chest pain"}]})[1]
    events: list[tuple[str, dict[str, Any]]] = []
    result = _extractor(stub, events).run("findings", _input())
    assert [f.quote for f in result.output.findings] == ["chest pain"]  # type: ignore[attr-defined]
    assert len(result.calls) == 2 and all(c.status == "ok" for c in result.calls)
    assert [name for name, _ in events] == ["repair"]
    assert told in events[0][1]["problem"]


def test_repair_prompt_keeps_the_markers(stub: StubServer) -> None:
    seen: list[CallInfo] = []
    stub.fault_plan = _plan(Fault("not_json"))
    stub.responder = lambda call: (seen.append(call), {"findings": []})[1]
    _extractor(stub).run("findings", _input())
    assert [(c.step, c.report, c.note) for c in seen] == [("findings", 77, NOTE)] * 2


def test_second_bad_answer_raises_invalid_output_with_calls(stub: StubServer) -> None:
    stub.fault_plan = _plan(Fault("length"), Fault("bad_schema"))
    with pytest.raises(InvalidOutput) as caught:
        _extractor(stub).run("findings", _input())
    message = str(caught.value)
    assert "api_4" in message and "after one repair retry" in message and "schema" in message
    assert len(caught.value.calls) == 2  # type: ignore[attr-defined]


def test_endpoint_errors_pass_through_with_calls(stub: StubServer) -> None:
    stub.fault_plan = lambda call: Fault("503")
    with pytest.raises(EndpointUnavailable) as caught:
        _extractor(stub).run("findings", _input())
    assert [c.status for c in caught.value.calls] == ["api_unavailable"] * 2  # type: ignore[attr-defined]


def test_long_note_is_asked_in_parts_and_merged(stub: StubServer) -> None:
    paragraph = "Patient reports knee pain today.\n" * 40
    note = (paragraph + "\n") * (MAX_NOTE_CHARS // len(paragraph) + 2)
    parts: list[str] = []
    stub.responder = lambda call: (parts.append(call.note), {"findings": [{"quote": "knee pain"}]})[1]
    result = _extractor(stub).run("findings", _input(note))
    assert len(note) > MAX_NOTE_CHARS
    assert len(parts) >= 2 and all(len(part) <= MAX_NOTE_CHARS for part in parts)
    assert "".join(parts).replace("\n", "") == note.replace("\n", "")  # nothing left out
    assert len(result.calls) == len(parts)
    assert [f.quote for f in result.output.findings] == ["knee pain"]  # type: ignore[attr-defined]


def test_merge_outputs_concatenates_and_drops_exact_repeats() -> None:
    a = FindingsOutput.model_validate({"findings": [{"quote": "x"}, {"quote": "y"}]})
    b = FindingsOutput.model_validate({"findings": [{"quote": "y"}, {"quote": "z"}]})
    merged = merge_outputs("findings", [a, b])
    assert [f.quote for f in merged.findings] == ["x", "y", "z"]  # type: ignore[attr-defined]


def test_unknown_step_is_refused(stub: StubServer) -> None:
    with pytest.raises(ValueError, match="unknown step"):
        _extractor(stub).run("diagnosis", _input())


# --- prompts: the texts the extractor sends ------------------------------------------------


def _mapping_input(text: str) -> StepInput:
    findings = FindingsOutput.model_validate({"findings": [{"quote": "systolic murmur"}]})
    organs = OrgansOutput.model_validate({"diagnoses": [{"organ": "heart", "diagnosis": "valve disease"}]})
    return StepInput(report=SimpleNamespace(number=12), text=text, findings=findings,  # type: ignore[arg-type]
                     organs=organs)


@pytest.mark.parametrize("step", ["findings", "organs", "mapping", "combined"])
def test_prompt_markers_are_exact_and_parse_back(step: str) -> None:
    data = _mapping_input(NOTE) if step == "mapping" else _input()
    messages = build_messages(step, data)
    assert messages[1]["content"].splitlines()[0] == f"[diag-distill step: {step}]"
    assert "[report: 12]" in messages[0]["content"].splitlines() or "[report: " in messages[0]["content"]
    call = parse_call({"messages": messages}, 0, "")
    assert (call.step, call.note) == (step, NOTE)
    if step == "mapping":
        assert json.loads(call.findings_json) == data.findings.model_dump(mode="json")  # type: ignore[union-attr]
        assert json.loads(call.diagnoses_json)["diagnoses"][0]["organ"] == "heart"


@pytest.mark.parametrize("step", ["organs", "combined"])
def test_organ_prompts_list_every_vocabulary_name_exactly(step: str) -> None:
    system = build_messages(step, _input())[0]["content"]
    assert all(f"- {name}\n" in system + "\n" for name in load_vocabulary().organs)


def test_mapping_prompt_lists_locations_of_step_two_organs_only() -> None:
    user = build_messages("mapping", _mapping_input(NOTE))[1]["content"]
    heart = load_vocabulary().locations("Heart (Cor)")
    assert f"- Heart (Cor): {'; '.join(heart)}" in user
    assert "Frontal Lobe" not in user  # Brain was not a step-2 organ


def test_note_up_to_max_note_chars_is_sent_whole_and_a_longer_one_is_not() -> None:
    note = "Line of the history with dyspnea.\n" * 300  # about 10,000 characters
    system = build_messages("mapping", _mapping_input(note))[0]["content"]
    assert note.strip("\n") in system
    at_limit = (note * 3)[:MAX_NOTE_CHARS]
    call = parse_call({"messages": build_messages("mapping", _mapping_input(at_limit))}, 0, "")
    assert len(at_limit) == MAX_NOTE_CHARS and call.note == at_limit.strip("\n")
    over = at_limit + "x"
    call = parse_call({"messages": build_messages("mapping", _mapping_input(over))}, 0, "")
    assert call.note != over.strip("\n") and len(call.note) <= MAX_NOTE_CHARS


def test_very_long_note_gets_passages_around_findings_for_mapping() -> None:
    filler = "Unremarkable sentence about nothing in particular.\n" * 400
    note = filler + "Exam reveals a systolic murmur at the apex.\n" + filler + filler
    call = parse_call({"messages": build_messages("mapping", _mapping_input(note))}, 0, "")
    assert len(note) > MAX_NOTE_CHARS and len(call.note) <= MAX_NOTE_CHARS + 20
    assert "Exam reveals a systolic murmur at the apex." in call.note
    assert call.note.startswith("[...]") and call.note.endswith("[...]")


def test_quote_split_by_a_line_break_is_found_for_a_long_note_excerpt() -> None:
    filler = "Unremarkable sentence about nothing in particular.\n" * 500
    note = filler + "Exam reveals a systolic\nmurmur at the apex.\n" + filler
    assert len(filler) > MAX_NOTE_CHARS  # a passage at the quote is the only way the murmur gets in
    call = parse_call({"messages": build_messages("mapping", _mapping_input(note))}, 0, "")
    assert "Exam reveals a systolic\nmurmur at the apex." in call.note
    assert call.note.startswith("[...]")


def test_mapping_excerpt_keeps_short_notes_whole() -> None:
    assert mapping_excerpt("short note", ["anything"]) == "short note"


def test_split_note_parts_are_bounded_and_join_back() -> None:
    note = "".join(f"Paragraph {i} says something.\n\n" for i in range(3000))
    parts = split_note(note, limit=5000)
    assert "".join(parts) == note and all(len(p) <= 5000 for p in parts) and len(parts) > 1


def test_repair_prompt_names_problem_and_bounds_previous_answer() -> None:
    previous = '{"findings": [' + '{"quote": "x"}, ' * 1000
    messages = build_repair_messages("findings", _input(), previous, "answer is truncated JSON")
    assert messages[:2] == build_messages("findings", _input())
    assert messages[2]["role"] == "assistant" and len(messages[2]["content"]) < len(previous)
    assert "answer is truncated JSON" in messages[3]["content"] and "too long" in messages[3]["content"]


def test_instruction_text_is_versioned_and_lists_organs() -> None:
    from distill.extraction.prompts import INSTRUCTION_TEXT

    assert PROMPT_VERSION == "diag-prompts-3" and PROMPT_VERSION in INSTRUCTION_TEXT
    assert "U_unit_set" in INSTRUCTION_TEXT and "Heart (Cor)" in INSTRUCTION_TEXT
