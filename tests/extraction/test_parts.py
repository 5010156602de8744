"""The findings step reads every part of a note that can hold a finding, one checkpointed part at a time."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from distill.bench.stub_server import StubServer
from distill.core.config import Endpoint, Secret
from distill.extraction.http_client import ChatClient, ChatReply
from distill.extraction.llm import LLMExtractor
from distill.extraction.parts import MAX_PART_CHARS, finding_parts
from distill.extraction.pipeline import process_report
from distill.extraction.sections import detect_sections
from distill.results.atomic import read_json
from distill.results.store import OutputStore
from tests.helpers.fakes import RecordingExtractor

SECTIONED = (
    "Seen today on the ward for ankle swelling.\n\n"
    "HISTORY OF PRESENT ILLNESS: The patient reports shortness of breath on exertion.\n"
    "MEDICATIONS: Furosemide 40 mg daily.\n"
    "FAMILY HISTORY: Mother with diabetes.\n"
    "PHYSICAL EXAMINATION: Jugular venous distension and bibasilar crackles.\n"
    "LABORATORY DATA: BNP 1450, creatinine 1.8.\n"
    "IMAGING: Chest x-ray shows cardiomegaly with small bilateral effusions.\n"
    "IMPRESSION: Congestive heart failure with left ventricular dysfunction.\n"
    "PLAN: Diuretics and call if chest pain.\n"
)


class Crash(BaseException):
    """Stands for the process dying mid-call: nothing in the pipeline may catch it."""


def _store(tmp_path: Path) -> OutputStore:
    store = OutputStore(tmp_path / "out")
    store.prepare()
    return store


def test_findings_input_holds_exam_labs_imaging_impression_and_preamble(tmp_path: Path) -> None:
    note = tmp_path / "report_7.txt"
    note.write_text(SECTIONED, encoding="utf-8")
    extractor = RecordingExtractor()
    assert process_report(note, extractor=extractor, store=_store(tmp_path)).status == "done"
    (text,) = extractor.inputs["findings"]
    for expected in ("Seen today on the ward for ankle swelling", "shortness of breath on exertion",
                     "Jugular venous distension", "BNP 1450", "cardiomegaly with small bilateral effusions",
                     "Congestive heart failure with left ventricular dysfunction"):
        assert expected in text
    for left_out in ("Furosemide", "Mother with diabetes", "call if chest pain"):
        assert left_out not in text


def test_raw_output_records_the_section_each_finding_came_from(tmp_path: Path) -> None:
    note = tmp_path / "report_7.txt"
    note.write_text(SECTIONED, encoding="utf-8")
    store = _store(tmp_path)
    process_report(note, extractor=RecordingExtractor(), store=store)
    raw = read_json(store.raw_path(7))
    sections = {item["quote"]: item["section"] for item in raw["finding_sections"]}
    assert sections == {"shortness of breath": "history of present illness", "ankle swelling": "preamble"}
    assert raw["finding_parts"][0]["sections"][:2] == ["preamble", "history of present illness"]


def _long_note(parts: int) -> str:
    paragraph = ("On examination the abdomen is soft and there is no guarding in any quadrant today. " * 12).strip()
    per_part = MAX_PART_CHARS // (len(paragraph) + 2)
    # The history is a part of its own; the examination fills the others; the impression joins the last.
    body = "\n\n".join(paragraph for _ in range(per_part * (parts - 2) + 1))
    return ("HISTORY OF PRESENT ILLNESS: Shortness of breath and ankle swelling for a week.\n\n"
            f"PHYSICAL EXAMINATION: {body}\n\nIMPRESSION: Congestive heart failure with left ventricular dysfunction.\n")


def test_a_long_note_is_cut_at_paragraph_breaks_into_bounded_parts() -> None:
    text = _long_note(5)
    parts = finding_parts(detect_sections(text))
    assert len(parts) == 5
    for part in parts:
        assert len(part.text) <= MAX_PART_CHARS
        for piece in part.pieces:
            assert text[piece.start:piece.end] == piece.text
            assert piece.text.endswith((".", "today."))


def test_a_crash_in_part_4_of_5_repays_only_part_4(tmp_path: Path) -> None:
    note = tmp_path / "report_9.txt"
    note.write_text(_long_note(5), encoding="utf-8")
    store = _store(tmp_path)
    first = RecordingExtractor(fail_on={"findings": (4, Crash())})
    with pytest.raises(Crash):
        process_report(note, extractor=first, store=store)
    assert len(first.inputs["findings"]) == 4
    second = RecordingExtractor()
    assert process_report(note, extractor=second, store=store).status == "done"
    assert second.calls == Counter({"findings": 2, "organs": 1, "mapping": 1})
    assert second.inputs["findings"][0] == first.inputs["findings"][3]
    assert read_json(store.raw_path(9))["usage"]["calls"] == 3 + 2 + 2


class _DiesAfterPart4(ChatClient):
    """A client whose process dies once the answer to part 4 of the findings step has arrived, unsaved."""

    def chat(self, messages: list[dict[str, str]], **kwargs: Any) -> ChatReply:
        reply = super().chat(messages, **kwargs)
        if kwargs.get("step") == "findings" and any("[note part: 4/5]" in m["content"] for m in messages):
            raise Crash()
        return reply


def test_a_crash_in_part_4_of_5_repays_only_part_4_at_the_stub(tmp_path: Path) -> None:
    note = tmp_path / "report_9.txt"
    note.write_text(_long_note(5), encoding="utf-8")
    store = _store(tmp_path)
    stub = StubServer().start()
    try:
        endpoint = Endpoint("api_1", base_url=stub.url, model="stub-model", api_key=Secret("k"), provider="openai")

        def extractor(client_type: type[ChatClient]) -> LLMExtractor:
            return LLMExtractor(endpoint, client=client_type(endpoint, sleep=lambda s: None))

        with pytest.raises(Crash):
            process_report(note, extractor=extractor(_DiesAfterPart4), store=store)
        asked = dict(stub.stats()["answered_by_report_step"])
        assert asked == {f"9/findings#{i}/5": 1 for i in range(1, 5)}
        assert process_report(note, extractor=extractor(ChatClient), store=store).status == "done"
        answered = stub.stats()["answered_by_report_step"]
    finally:
        stub.stop()
    assert answered == {"9/findings#1/5": 1, "9/findings#2/5": 1, "9/findings#3/5": 1, "9/findings#4/5": 2,
                        "9/findings#5/5": 1, "9/organs#excerpt": 1, "9/mapping": 1}
