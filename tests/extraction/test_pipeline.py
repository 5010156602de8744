from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from distill.core.errors import EndpointAuthError, EndpointUnavailable, InvalidOutput, StopRequested
from distill.extraction.extractor import StepInput, StepResult
from distill.extraction.pipeline import process_report
from distill.extraction.schemas import (
    CombinedOutput,
    Finding,
    FindingsOutput,
)
from distill.results.atomic import read_json
from distill.results.store import OutputStore
from tests.helpers.fakes import FakeExtractor

NOTE = (
    "CHIEF COMPLAINT: Shortness of breath.\n"
    "HISTORY OF PRESENT ILLNESS: The patient reports shortness of breath on exertion and ankle swelling.\n"
    "ASSESSMENT: Congestive heart failure with left ventricular dysfunction.\n"
    "PLAN: Diuretics.\n"
)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, OutputStore]:
    note = tmp_path / "report_42.txt"
    note.write_text(NOTE, encoding="utf-8")
    store = OutputStore(tmp_path / "out")
    store.prepare()
    return note, store


def test_a_done_report_has_three_files_in_the_documented_shapes(setup: tuple[Path, OutputStore]) -> None:
    note, store = setup
    outcome = process_report(note, extractor=FakeExtractor(), store=store)
    assert outcome.status == "done" and outcome.findings == 2
    raw = read_json(store.raw_path(42))
    assert raw["format"] == "diag-distill/raw-v1"
    assert raw["report"]["number"] == 42 and len(raw["report"]["sha256"]) == 64
    assert raw["teacher"] == {"kind": "llm", "endpoint": "api_9", "model": "fake-model", "provider": "openai",
                              "prompt_version": ""}
    assert raw["teacher_id"] == "openai/fake-model"
    assert set(raw["steps"]) == {"findings", "organs", "mapping"}
    assert raw["usage"] == {"calls": 3, "prompt_tokens": 30, "completion_tokens": 15, "cached_tokens": 0,
                            "latency_s": 0.03}
    assert raw["prompt_version"]
    normalized = read_json(store.normalized_path(42))
    assert normalized == raw["normalized"]
    swelling = next(r for r in normalized if r["s_symptom"] == "ankle swelling")
    unit = swelling["U_unit_set"][0]["u_unit"]
    assert unit["o_organ"] == {"organName": "Heart (Cor)", "anatomicalLocations": ["Left Ventricle (LV)"]}
    log = store.log_path(42).read_text()
    assert "step mapping: ok" in log and NOTE not in log
    assert store.load_checkpoints(42) == {}


def test_a_restart_repeats_no_finished_step(setup: tuple[Path, OutputStore]) -> None:
    note, store = setup
    first = FakeExtractor({"mapping": StopRequested("stop now")})
    with pytest.raises(StopRequested):
        process_report(note, extractor=first, store=store)
    assert not store.is_done(42) and not store.is_failed(42)
    second = FakeExtractor()
    assert process_report(note, extractor=second, store=store).status == "done"
    assert second.calls == Counter({"mapping": 1})
    assert read_json(store.raw_path(42))["usage"]["calls"] == 3


def test_checkpoints_of_a_changed_note_are_not_reused(setup: tuple[Path, OutputStore]) -> None:
    note, store = setup
    with pytest.raises(StopRequested):
        process_report(note, extractor=FakeExtractor({"mapping": StopRequested("x")}), store=store)
    note.write_text(NOTE + "Follow up in two weeks.\n", encoding="utf-8")
    again = FakeExtractor()
    process_report(note, extractor=again, store=store)
    assert again.calls == Counter({"findings": 1, "organs": 1, "mapping": 1})


def test_invalid_output_falls_back_to_a_single_call(setup: tuple[Path, OutputStore]) -> None:
    note, store = setup
    extractor = FakeExtractor({"mapping": InvalidOutput("answer is truncated JSON")})
    outcome = process_report(note, extractor=extractor, store=store)
    assert outcome.status == "done"
    assert read_json(store.raw_path(42))["fallback_used"] is True
    assert extractor.calls["combined"] == 1


def test_invalid_output_everywhere_is_a_failure_not_an_empty_success(setup: tuple[Path, OutputStore]) -> None:
    note, store = setup
    bad = InvalidOutput("not JSON")
    outcome = process_report(note, extractor=FakeExtractor({"findings": bad, "combined": bad}), store=store)
    assert outcome.status == "failed" and outcome.error_class == "invalid_output"
    assert not store.is_done(42)
    record = read_json(store.failed_path(42))
    assert record["error_class"] == "invalid_output" and record["endpoint"] == "api_9"
    assert record["message"] == "not JSON" and record["report_number"] == 42


def test_an_unavailable_endpoint_gives_a_failure_record(setup: tuple[Path, OutputStore]) -> None:
    note, store = setup
    error = EndpointUnavailable("api_9: 503 after 5 attempts", endpoint="api_9", status=503)
    outcome = process_report(note, extractor=FakeExtractor({"organs": error}), store=store)
    assert outcome.status == "failed"
    record = read_json(store.failed_path(42))
    assert record["error_class"] == "api_unavailable" and record["step"] == "organs"
    assert "findings" in store.load_checkpoints(42)  # kept for --retry-failed


def test_an_auth_error_writes_nothing_and_propagates(setup: tuple[Path, OutputStore]) -> None:
    note, store = setup
    with pytest.raises(EndpointAuthError):
        process_report(note, extractor=FakeExtractor({"findings": EndpointAuthError("401")}), store=store)
    assert not store.is_done(42) and not store.is_failed(42)


@pytest.mark.parametrize(("content", "reason"), [(b"", "empty"), (b"   \n\t ", "whitespace"), (b"\x00\x01\x02" * 50, "binary")],
                         ids=["empty", "whitespace", "binary"])
def test_bad_input_is_a_bad_input_failure(tmp_path: Path, content: bytes, reason: str) -> None:
    note = tmp_path / "report_7.txt"
    note.write_bytes(content)
    store = OutputStore(tmp_path / "out")
    store.prepare()
    extractor = FakeExtractor()
    outcome = process_report(note, extractor=extractor, store=store)
    assert outcome.status == "failed" and outcome.error_class == "bad_input"
    message = read_json(store.failed_path(7))["message"]
    assert "report_7.txt" in message and reason in message
    assert sum(extractor.calls.values()) == 0


def test_a_sample_of_real_notes_gives_schema_valid_grounded_output(tmp_path: Path) -> None:
    from distill.extraction.normalize import quote_in_text
    from distill.extraction.schemas import NormalizedFinding
    from distill.extraction.teacher import LocalTeacher
    from distill.extraction.vocabulary import load_vocabulary
    from tests.helpers.notes import SHARED_NOTES

    if not SHARED_NOTES.is_dir():
        pytest.skip(f"the shared notes are not at {SHARED_NOTES}")
    notes = sorted(SHARED_NOTES.glob("report_*.txt"))[::20]
    store = OutputStore(tmp_path / "out")
    store.prepare()
    teacher = LocalTeacher("api_1")
    vocabulary = load_vocabulary()
    for note in notes:
        outcome = process_report(note, extractor=teacher, store=store)
        assert outcome.status == "done", (note.name, outcome.message)
        text = note.read_text(encoding="utf-8")
        for record in read_json(store.normalized_path(outcome.number)):
            NormalizedFinding.model_validate(record)
            assert quote_in_text(record["s_symptom"], text), (note.name, record["s_symptom"])
            for unit in record["U_unit_set"]:
                organ = unit["u_unit"]["o_organ"]
                assert organ["organName"] in vocabulary.organs
                assert set(organ["anatomicalLocations"]) <= set(vocabulary.locations(organ["organName"]))
    assert len(notes) >= 40


def test_an_unexpected_defect_costs_one_report_recorded_as_internal(setup: tuple[Path, OutputStore]) -> None:
    note, store = setup
    outcome = process_report(note, extractor=FakeExtractor({"organs": KeyError("diagnoses")}), store=store)
    assert outcome.status == "failed" and outcome.error_class == "internal"
    record = read_json(store.failed_path(42))
    assert record["error_class"] == "internal" and "KeyError" in record["message"]


class InventingExtractor(FakeExtractor):
    """Quotes findings that are not in the note in the three steps; the single call is grounded."""

    def run(self, step: str, data: StepInput) -> StepResult:
        result = super().run(step, data)
        if step == "findings":
            result.output = FindingsOutput(findings=[Finding(quote="crushing chest pain radiating to the jaw")])
        return result


def test_ungrounded_findings_get_the_single_call_fallback_before_a_failure(setup: tuple[Path, OutputStore]) -> None:
    note, store = setup
    extractor = InventingExtractor()
    outcome = process_report(note, extractor=extractor, store=store)
    assert outcome.status == "done" and extractor.calls["combined"] == 1
    assert read_json(store.raw_path(42))["fallback_used"] is True


def test_ungrounded_findings_everywhere_are_an_invalid_output_failure(setup: tuple[Path, OutputStore]) -> None:
    note, store = setup

    class AlwaysInventing(FakeExtractor):
        def run(self, step: str, data: StepInput) -> StepResult:
            result = super().run(step, data)
            invented = [Finding(quote="crushing chest pain radiating to the jaw")]
            if step == "findings":
                result.output = FindingsOutput(findings=invented)
            if step == "combined":
                result.output = CombinedOutput(findings=invented, diagnoses=[], mappings=[])
            return result

    outcome = process_report(note, extractor=AlwaysInventing(), store=store)
    assert outcome.status == "failed" and outcome.error_class == "invalid_output"
    assert "occur in the note" in read_json(store.failed_path(42))["message"]
