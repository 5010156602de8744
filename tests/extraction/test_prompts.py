"""What the LLM teacher is asked: certainty, normal findings, and mapping that borrows nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass

from distill.extraction.extractor import StepInput
from distill.extraction.prompts import build_messages
from distill.extraction.schemas import Finding, FindingsOutput, OrganDiagnosis, OrgansOutput

NOTE = "HPI: Cough.\nIMPRESSION: Possible pneumonia. No evidence of pulmonary embolism."


@dataclass
class FakeReport:
    number: int
    text: str


def _messages(step: str) -> list[dict[str, str]]:
    findings = FindingsOutput(findings=[Finding(quote="Cough")])
    organs = OrgansOutput(diagnoses=[
        OrganDiagnosis(organ="Lung (Pulmo)", diagnosis="pneumonia", quote="Possible pneumonia", certainty="suspected"),
        OrganDiagnosis(organ="Lung (Pulmo)", diagnosis="pulmonary embolism", certainty="ruled_out",
                       quote="No evidence of pulmonary embolism")])
    return build_messages(step, StepInput(FakeReport(7, NOTE), NOTE, findings=findings, organs=organs))  # type: ignore[arg-type]


def test_every_step_shares_the_prefix_that_holds_the_whole_note() -> None:
    systems = {_messages(step)[0]["content"] for step in ("findings", "organs", "mapping")}
    assert len(systems) == 1
    assert NOTE in systems.pop()


def test_the_organs_step_asks_for_each_diagnosis_certainty() -> None:
    system = _messages("organs")[0]["content"]
    for word in ('"certainty": "confirmed" | "suspected" | "ruled_out"', "cannot exclude", "no evidence of"):
        assert word in system


def test_the_rules_cover_history_family_hypotheticals_impressions_and_several_organs() -> None:
    system = _messages("findings")[0]["content"]
    for phrase in ("Family history", "call if fever", "history item", "radiology impression", "several organs",
                   "pertinent negatives", '"normal": true'):
        assert phrase in system, phrase


def test_the_mapping_step_sees_the_ruled_out_certainty_and_is_told_not_to_borrow_locations() -> None:
    system, user = (m["content"] for m in _messages("mapping"))
    assert "never from the diagnosis sentence" in system
    diagnoses = json.loads(user.split("<<<DIAGNOSES\n", 1)[1].split("\nDIAGNOSES>>>", 1)[0])["diagnoses"]
    assert [d["certainty"] for d in diagnoses] == ["suspected", "ruled_out"]
