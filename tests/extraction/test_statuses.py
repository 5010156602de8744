"""Statuses that survive merging, normal-exam statements, and locations taken only from a finding's own words."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from distill.extraction.extractor import StepInput
from distill.extraction.normalize import normalize
from distill.extraction.schemas import (
    Finding,
    FindingsOutput,
    MappingOutput,
    OrganDiagnosis,
    OrgansOutput,
)
from distill.extraction.teacher import LocalTeacher
from distill.extraction.vocabulary import load_vocabulary

LUNG = "Lung (Pulmo)"
NOTE = "HISTORY: She denies cough.\nHOSPITAL COURSE: On day two she developed a cough.\nIMPRESSION: Pneumonia."


@dataclass
class FakeReport:
    number: int
    text: str


@pytest.fixture(scope="module")
def teacher() -> LocalTeacher:
    return LocalTeacher("api_1", load_vocabulary())


def _records(teacher: LocalTeacher, note: str) -> list[dict]:
    report = FakeReport(1, note)
    findings = teacher.run("findings", StepInput(report, note)).output  # type: ignore[arg-type]
    organs = teacher.run("organs", StepInput(report, note)).output  # type: ignore[arg-type]
    mapping = teacher.run("mapping", StepInput(report, note, findings=findings, organs=organs)).output  # type: ignore[arg-type]
    return normalize(note, findings, organs, mapping).records  # type: ignore[arg-type]


def test_the_same_words_stated_and_denied_stay_two_findings(teacher: LocalTeacher) -> None:
    records = _records(teacher, NOTE)
    coughs = [(r["s_symptom"].lower(), r["status"]) for r in records if r["s_symptom"].lower() == "cough"]
    assert sorted(coughs) == [("cough", "absent"), ("cough", "present")]
    present = next(r for r in records if r["s_symptom"].lower() == "cough" and r["status"] == "present")
    assert [w["u_unit"]["o_organ"]["organName"] for w in present["U_unit_set"]] == [LUNG]


@pytest.mark.parametrize("order", [("absent", "present"), ("present", "absent")], ids=["denied-first", "stated-first"])
def test_merging_parts_never_drops_a_present_finding_for_an_absent_one(order: tuple[str, str]) -> None:
    # Two parts of one note each quote "cough": one denies it, the other states it.
    findings = FindingsOutput(findings=[Finding(quote="cough", status=s) for s in order])  # type: ignore[arg-type]
    organs = OrgansOutput(diagnoses=[OrganDiagnosis(organ=LUNG, diagnosis="Pneumonia", quote="Pneumonia")])
    mapping = MappingOutput.model_validate({"mappings": [{"finding": "cough", "organ": LUNG}]})
    records = normalize(NOTE, findings, organs, mapping).records
    assert sorted(r["status"] for r in records) == ["absent", "present"]
    linked = {r["status"]: len(r["U_unit_set"]) for r in records}
    assert linked == {"absent": 0, "present": 1}  # the link is the stated finding's


@pytest.mark.parametrize(("text", "quote"), [
    ("EXAM: Lungs clear to auscultation bilaterally.", "Lungs clear to auscultation bilaterally"),
    ("HEART: Regular rate and rhythm.", "Regular rate and rhythm"),
    ("FINDINGS: Heart size is normal.", "Heart size is normal"),
    ("查体：双肺呼吸音清，心律齐。", "双肺呼吸音清"),
    ("患者精神可，食欲可。", "精神可"),
])
def test_a_normal_exam_statement_is_recorded_as_normal(teacher: LocalTeacher, text: str, quote: str) -> None:
    found = {f.quote: f for f in teacher.findings(text)}
    assert found[quote].normal and found[quote].status == "present"


def test_a_normal_statement_is_no_evidence_for_a_diagnosis(teacher: LocalTeacher) -> None:
    records = _records(teacher, "EXAM: Lungs are clear. Cough.\nIMPRESSION: Bronchitis and pneumonia.")
    normal = next(r for r in records if r["s_symptom"] == "Lungs are clear")
    assert normal["normal"] is True and normal["U_unit_set"] == []
    assert next(r for r in records if r["s_symptom"] == "Cough")["U_unit_set"]


def test_normalization_drops_a_link_from_a_normal_finding() -> None:
    note = "Lungs clear. IMPRESSION: Pneumonia."
    findings = FindingsOutput(findings=[Finding(quote="Lungs clear", normal=True)])
    organs = OrgansOutput(diagnoses=[OrganDiagnosis(organ=LUNG, diagnosis="Pneumonia", quote="Pneumonia")])
    mapping = MappingOutput.model_validate({"mappings": [{"finding": "Lungs clear", "organ": LUNG}]})
    result = normalize(note, findings, organs, mapping)
    assert result.records[0]["U_unit_set"] == [] and result.records[0]["normal"] is True
    assert [d["reason"].split(":")[0] for d in result.dropped] == ["normal_finding"]


def test_locations_never_come_from_the_diagnosis_sentence(teacher: LocalTeacher) -> None:
    records = _records(teacher, "HPI: Productive cough for a week.\nIMPRESSION: Right lower lobe pneumonia.")
    cough = next(r for r in records if r["s_symptom"] == "Productive cough")
    units = [w["u_unit"] for w in cough["U_unit_set"]]
    assert [u["o_organ"]["organName"] for u in units] == [LUNG]
    assert units[0]["o_organ"]["anatomicalLocations"] == []


def test_locations_come_from_the_findings_own_sentence(teacher: LocalTeacher) -> None:
    records = _records(teacher, "CXR: Consolidation in the right lower lobe.\nIMPRESSION: Pneumonia.")
    consolidation = next(r for r in records if r["s_symptom"] == "Consolidation")
    locations = consolidation["U_unit_set"][0]["u_unit"]["o_organ"]["anatomicalLocations"]
    assert "Inferior Lobe" in locations


def test_the_diagnosis_a_finding_supports_is_chosen_by_condition_not_by_shared_words(teacher: LocalTeacher) -> None:
    # The effusion supports the effusion diagnosis because it is that condition, though pneumonia comes first.
    note = "CXR: Fluid collection, a pleural effusion.\nIMPRESSION: Pneumonia. Pleural effusion."
    records = _records(teacher, note)
    effusion = next(r for r in records if r["s_symptom"] == "pleural effusion")
    assert effusion["U_unit_set"][0]["u_unit"]["d_diagnosis"].lower() == "pleural effusion"
    # ... while a cough, which is neither, supports the first stated diagnosis of the lung.
    cough = _records(teacher, "Cough with pleuritic pain.\nIMPRESSION: Pneumonia. Pleural effusion.")[0]
    assert cough["U_unit_set"][0]["u_unit"]["d_diagnosis"] == "Pneumonia"


def test_a_stated_finding_takes_its_locations_from_where_it_is_stated_not_where_it_is_denied(
        teacher: LocalTeacher) -> None:
    note = ("HISTORY: No cough, no pain in the left upper lobe.\n"
            "COURSE: Cough with sputum from the right lower lobe.\nIMPRESSION: Pneumonia.")
    records = _records(teacher, note)
    stated = next(r for r in records if r["s_symptom"] == "Cough" and r["status"] == "present")
    assert stated["U_unit_set"][0]["u_unit"]["o_organ"]["anatomicalLocations"] == ["Inferior Lobe"]


def test_a_chinese_finding_takes_the_sites_of_its_own_list_item(teacher: LocalTeacher) -> None:
    note = "肠镜提示：直乙交界腺癌、结肠多发息肉。\n诊断：直肠癌；结肠息肉。"
    polyps = next(r for r in _records(teacher, note) if r["s_symptom"] == "结肠多发息肉")
    assert polyps["U_unit_set"][0]["u_unit"]["o_organ"]["anatomicalLocations"] == ["Colon"]
