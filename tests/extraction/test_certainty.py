"""How sure a diagnosis is: the offline teacher's certainty, and what it does to the links and the unit."""

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


@dataclass
class FakeReport:
    number: int
    text: str


@pytest.fixture(scope="module")
def teacher() -> LocalTeacher:
    return LocalTeacher("api_1", load_vocabulary())


@pytest.mark.parametrize(("text", "diagnosis", "certainty"), [
    pytest.param("ASSESSMENT: Community-acquired pneumonia.", "pneumonia", "confirmed", id="stated"),
    pytest.param("IMPRESSION: Possible pneumonia.", "pneumonia", "suspected", id="possible"),
    pytest.param("Assessment: probable pneumonia.", "pneumonia", "suspected", id="probable"),
    pytest.param("Cannot exclude pneumonia.", "pneumonia", "suspected", id="cannot-exclude"),
    pytest.param("Differential diagnosis includes pulmonary embolism.", "pulmonary embolism", "suspected",
                 id="differential"),
    pytest.param("Rule out myocardial infarction.", "myocardial infarction", "suspected", id="rule-out"),
    pytest.param("No evidence of pneumonia.", "pneumonia", "ruled_out", id="no-evidence-of"),
    pytest.param("Blood cultures negative for endocarditis.", "endocarditis", "ruled_out", id="negative-for"),
    pytest.param("Pulmonary embolism is unlikely.", "Pulmonary embolism", "ruled_out", id="unlikely"),
    pytest.param("Myocardial infarction was ruled out.", "Myocardial infarction", "ruled_out", id="was-ruled-out"),
    pytest.param("诊断：社区获得性肺炎。", "社区获得性肺炎", "confirmed", id="zh-stated"),
    pytest.param("考虑肺炎。", "肺炎", "suspected", id="zh-kaolv"),
    pytest.param("肺癌待排。", "肺癌", "suspected", id="zh-daipai"),
    pytest.param("不能排除肺栓塞。", "肺栓塞", "suspected", id="zh-cannot-exclude"),
    pytest.param("已排除心肌梗死。", "心肌梗死", "ruled_out", id="zh-excluded"),
    pytest.param("病理确诊为肺癌。", "肺癌", "confirmed", id="zh-confirmed-by-pathology"),
    pytest.param("Biopsy-proven lung cancer, possibly metastatic.", "lung cancer", "confirmed", id="biopsy-proven"),
])
def test_each_diagnosis_gets_the_certainty_its_wording_gives(teacher: LocalTeacher, text: str, diagnosis: str,
                                                             certainty: str) -> None:
    found = {(d.diagnosis, d.certainty) for d in teacher.diagnoses(text)}
    assert any(d.endswith(diagnosis) and c == certainty for d, c in found), found


def test_someone_elses_or_a_hypothetical_diagnosis_is_none_at_all(teacher: LocalTeacher) -> None:
    assert teacher.diagnoses("Family history of lung cancer. Call if signs of pneumonia.") == []


def _through_teacher(teacher: LocalTeacher, note: str) -> list[dict]:
    report = FakeReport(1, note)
    outputs = {}
    for name in ("findings", "organs"):
        outputs[name] = teacher.run(name, StepInput(report, note)).output  # type: ignore[arg-type]
    mapping = teacher.run("mapping", StepInput(report, note, findings=outputs["findings"],  # type: ignore[arg-type]
                                               organs=outputs["organs"])).output
    assert isinstance(mapping, MappingOutput)
    return normalize(note, outputs["findings"], outputs["organs"], mapping).records  # type: ignore[arg-type]


def test_a_ruled_out_diagnosis_gets_no_finding_linked(teacher: LocalTeacher) -> None:
    records = _through_teacher(teacher, "HPI: Cough and fever.\nIMPRESSION: No evidence of pneumonia.")
    cough = next(r for r in records if r["s_symptom"] == "Cough")
    assert cough["U_unit_set"] == []


def test_a_suspected_diagnosis_is_marked_in_the_unit(teacher: LocalTeacher) -> None:
    records = _through_teacher(teacher, "HPI: Productive cough.\nIMPRESSION: Possible pneumonia.")
    units = [w["u_unit"] for r in records for w in r["U_unit_set"]]
    assert units and all(u["d_certainty"] == "suspected" for u in units)
    assert {u["o_organ"]["organName"] for u in units} == {LUNG}


def test_a_unit_keeps_the_predecessors_keys_and_adds_only_the_certainty(teacher: LocalTeacher) -> None:
    records = _through_teacher(teacher, "HPI: Productive cough.\nIMPRESSION: Pneumonia.")
    unit = records[0]["U_unit_set"][0]["u_unit"]
    assert list(unit) == ["d_diagnosis", "o_organ", "b_textual_basis", "d_certainty"]
    assert list(unit["o_organ"]) == ["organName", "anatomicalLocations"]
    assert list(unit["b_textual_basis"]) == ["doctorsDiagnosisAndJudgment", "medicalInference"]
    assert unit["d_certainty"] == "confirmed"
    assert list(records[0]) == ["s_symptom", "status", "U_unit_set", "normal"]


NOTE = "Cough for a week. IMPRESSION: Pneumonia ruled out. Bronchitis."


def test_normalization_drops_a_mapping_that_names_a_ruled_out_diagnosis() -> None:
    findings = FindingsOutput(findings=[Finding(quote="Cough")])
    organs = OrgansOutput(diagnoses=[
        OrganDiagnosis(organ=LUNG, diagnosis="Pneumonia", quote="Pneumonia ruled out", certainty="ruled_out")])
    mapping = MappingOutput.model_validate({"mappings": [
        {"finding": "Cough", "organ": LUNG, "diagnosis": "Pneumonia"}]})
    result = normalize(NOTE, findings, organs, mapping)
    assert result.records[0]["U_unit_set"] == []
    assert [d["reason"].split(":")[0] for d in result.dropped] == ["diagnosis_ruled_out"]


def test_normalization_links_to_a_standing_diagnosis_of_the_organ_not_the_ruled_out_one() -> None:
    findings = FindingsOutput(findings=[Finding(quote="Cough")])
    organs = OrgansOutput(diagnoses=[
        OrganDiagnosis(organ=LUNG, diagnosis="Pneumonia", quote="Pneumonia ruled out", certainty="ruled_out"),
        OrganDiagnosis(organ=LUNG, diagnosis="Bronchitis", quote="Bronchitis", certainty="possible")])  # type: ignore[arg-type]
    mapping = MappingOutput.model_validate({"mappings": [{"finding": "Cough", "organ": LUNG}]})
    unit = normalize(NOTE, findings, organs, mapping).records[0]["U_unit_set"][0]["u_unit"]
    assert (unit["d_diagnosis"], unit["d_certainty"]) == ("Bronchitis", "suspected")


def test_a_record_of_the_predecessors_shape_dumps_to_exactly_that_shape() -> None:
    from distill.extraction.schemas import NormalizedFinding

    old = {"s_symptom": "cough", "status": "present", "U_unit_set": [{"u_unit": {
        "d_diagnosis": "Pneumonia", "o_organ": {"organName": LUNG, "anatomicalLocations": []},
        "b_textual_basis": {"doctorsDiagnosisAndJudgment": "Pneumonia", "medicalInference": ""}}}]}
    assert NormalizedFinding.model_validate(old).model_dump(mode="json") == old


def test_the_organs_step_reads_the_physicians_conclusions() -> None:
    from distill.extraction.sections import detect_sections

    note = ("HISTORY OF PRESENT ILLNESS: Cough for a week; treated for pneumonia last year.\n"
            "PHYSICAL EXAMINATION: Crackles at the right base.\n"
            "ASSESSMENT: Acute bronchitis.\nPLAN: Rule out pulmonary embolism.\n")
    text = detect_sections(note).conclusion_text()
    assert "Acute bronchitis" in text and "pulmonary embolism" in text
    assert "pneumonia" not in text and "Crackles" not in text


def test_a_test_reading_without_history_counts_its_findings_as_conclusions() -> None:
    from distill.extraction.sections import detect_sections

    note = "INDICATION: Cough.\nFINDINGS: Mild cardiomegaly.\nIMPRESSION: No acute disease.\n"
    assert "Mild cardiomegaly" in detect_sections(note).conclusion_text()


def test_a_chinese_narrative_sentence_is_no_diagnosis_line(teacher: LocalTeacher) -> None:
    diagnoses = teacher.diagnoses("于2019-09-04到我院就诊，行电子结肠镜检查提示：直乙交界腺癌；诊断：直肠癌。")
    assert diagnoses and not any("就诊" in d.diagnosis or "提示" in d.diagnosis for d in diagnoses)
