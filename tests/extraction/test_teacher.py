from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from distill.core.errors import ConfigError, ReportError
from distill.extraction.extractor import StepInput
from distill.extraction.lexicon import Matcher, Term, load_lexicon
from distill.extraction.report import read_report
from distill.extraction.schemas import (
    CombinedOutput,
    Finding,
    FindingsOutput,
    MappingOutput,
    OrganDiagnosis,
    OrgansOutput,
)
from distill.extraction.teacher import TEACHER_VERSION, LocalTeacher
from distill.extraction.vocabulary import Vocabulary, load_vocabulary

DEV_NOTES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mtsamples_dev"


@dataclass
class FakeReport:
    number: int
    text: str


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    return load_vocabulary()


@pytest.fixture(scope="module")
def teacher(vocabulary: Vocabulary) -> LocalTeacher:
    return LocalTeacher("api_3", vocabulary)


def organ(vocabulary: Vocabulary, key: str) -> str:
    name = vocabulary.match_organ(key)
    assert name is not None, key
    return name


def step(teacher: LocalTeacher, name: str, text: str, **earlier: object) -> object:
    result = teacher.run(name, StepInput(FakeReport(1, text), text, **earlier))  # type: ignore[arg-type]
    return result.output


def statuses(teacher: LocalTeacher, text: str) -> dict[str, str]:
    output = step(teacher, "findings", text)
    assert isinstance(output, FindingsOutput)
    return {f.quote: f.status for f in output.findings}


@pytest.mark.parametrize(
    ("text", "quote", "status"),
    [
        pytest.param("She reports palpitations.", "palpitations", "present", id="plain"),
        pytest.param("The patient denies chest pain.", "chest pain", "absent", id="denies"),
        pytest.param("No fever, chills, or cough.", "cough", "absent", id="no-reaches-the-list"),
        pytest.param("No fever but has a productive cough.", "productive cough", "present", id="but-ends-scope"),
        pytest.param("No fever. Severe headache since Monday.", "Severe headache", "present", id="sentence-ends-scope"),
        pytest.param("No edema; jaundice noted.", "jaundice", "present", id="semicolon-ends-scope"),
        pytest.param("Regular rhythm without murmur.", "murmur", "absent", id="without"),
        pytest.param("ROS: negative for nausea and vomiting.", "vomiting", "absent", id="negative-for"),
        pytest.param("Pneumothorax was ruled out.", "Pneumothorax", "absent", id="post-ruled-out"),
        pytest.param("Edema is absent.", "Edema", "absent", id="post-absent"),
        pytest.param("There is possible pleural effusion.", "pleural effusion", "uncertain", id="possible"),
        pytest.param("Cannot rule out hematuria.", "hematuria", "uncertain", id="cannot-rule-out"),
        pytest.param("CT is suspicious for pulmonary nodule.", "pulmonary nodule", "uncertain", id="suspicious-for"),
        pytest.param("Admitted with concern for hypoxia.", "hypoxia", "uncertain", id="concern-for"),
        pytest.param("患者心悸三天。", "心悸", "present", id="zh-plain"),
        pytest.param("患者无发热。", "发热", "absent", id="zh-wu"),
        pytest.param("否认胸痛、胸闷。", "胸闷", "absent", id="zh-list"),
        pytest.param("无发热，有咳嗽。", "咳嗽", "present", id="zh-comma-ends-scope"),
        pytest.param("双肺未闻及湿啰音。", "湿啰音", "absent", id="zh-weiwenji"),
        pytest.param("腹痛，不伴恶心。", "恶心", "absent", id="zh-buban"),
        pytest.param("可疑黄疸。", "黄疸", "uncertain", id="zh-keyi"),
        pytest.param("胸腔积液待排。", "胸腔积液", "uncertain", id="zh-post-daipai"),
    ],
)
def test_finding_status_follows_cues(teacher: LocalTeacher, text: str, quote: str, status: str) -> None:
    assert statuses(teacher, text).get(quote) == status


# Each text with the cue that makes its finding someone else's or hypothetical, and the same text without it.
OTHERS_OR_HYPOTHETICAL = [
    pytest.param("FAMILY HISTORY: Positive for hypertension.", "hypertension", "Positive for hypertension.",
                 id="family-history"),
    pytest.param("Her mother had breast cancer and jaundice.", "jaundice", "She had breast cancer and jaundice.",
                 id="relative"),
    pytest.param("Return if fever develops.", "fever", "Fever develops.", id="hypothetical"),
    pytest.param("家族史：母亲有胸痛。", "胸痛", "有胸痛。", id="zh-family"),
    pytest.param("家族史：有胸痛。", "胸痛", "有胸痛。", id="zh-family-header"),
    pytest.param("母亲有胸痛。", "胸痛", "有胸痛。", id="zh-relative"),
    pytest.param("如有胸痛及时就诊。", "胸痛", "胸痛及时就诊。", id="zh-hypothetical"),
]


@pytest.mark.parametrize(("text", "term", "without_cue"), OTHERS_OR_HYPOTHETICAL)
def test_findings_of_others_or_hypothetical_are_left_out(
    teacher: LocalTeacher, text: str, term: str, without_cue: str
) -> None:
    assert not any(term.lower() in quote.lower() for quote in statuses(teacher, text))


@pytest.mark.parametrize(("text", "term", "without_cue"), OTHERS_OR_HYPOTHETICAL)
def test_the_same_findings_without_the_cue_are_kept(
    teacher: LocalTeacher, text: str, term: str, without_cue: str
) -> None:
    assert any(term.lower() in quote.lower() for quote in statuses(teacher, without_cue))


@pytest.mark.parametrize(
    ("text", "quote"),
    [
        pytest.param("65 yo with mild bilateral lower extremity edema.", "mild bilateral lower extremity edema",
                     id="modifiers"),
        pytest.param("Heart: 2/6 systolic murmur.", "2/6 systolic murmur", id="grade"),
        pytest.param("IMPRESSIONChest pain, atypical.", "Chest pain", id="glued-header"),
        pytest.param("加重伴双下肢水肿1周。", "双下肢水肿", id="zh-modifier"),
    ],
)
def test_quote_is_the_finding_phrase(teacher: LocalTeacher, text: str, quote: str) -> None:
    assert quote in statuses(teacher, text)


def test_findings_are_deduplicated_in_order_of_first_mention(teacher: LocalTeacher) -> None:
    text = "Chest pain and cough. Chest pain again. No fever."
    output = step(teacher, "findings", text)
    assert isinstance(output, FindingsOutput)
    assert [(f.quote, f.status) for f in output.findings] == [
        ("Chest pain", "present"), ("cough", "present"), ("fever", "absent")]


def test_lexicon_phrases_that_are_no_finding_are_skipped(teacher: LocalTeacher) -> None:
    assert statuses(teacher, "Body mass index 31. Pain medication was given.") == {}


@pytest.mark.parametrize(
    ("text", "key", "diagnosis"),
    [
        pytest.param("ASSESSMENT: 1. Congestive heart failure.", "heart", "Congestive heart failure", id="chf"),
        pytest.param("2. Chronic kidney disease, stage 3.", "kidney", "Chronic kidney disease, stage 3",
                     id="tail"),
        pytest.param("Impression: acute pancreatitis.", "pancreas", "acute pancreatitis", id="pancreatitis"),
        pytest.param("History of CVA with residual weakness.", "brain", "CVA", id="abbreviation"),
        pytest.param("诊断：1.冠心病 2.肝硬化", "liver", "肝硬化", id="zh-cirrhosis"),
        pytest.param("考虑甲状腺功能减退。", "thyroid", "甲状腺功能减退", id="zh-uncertain-kept"),
    ],
)
def test_diagnoses_name_vocabulary_organs(
    teacher: LocalTeacher, vocabulary: Vocabulary, text: str, key: str, diagnosis: str
) -> None:
    output = step(teacher, "organs", text)
    assert isinstance(output, OrgansOutput)
    found = {(d.organ, d.diagnosis) for d in output.diagnoses}
    assert (organ(vocabulary, key), diagnosis) in found
    for d in output.diagnoses:
        assert d.organ in vocabulary.organs
        assert d.diagnosis in text and d.quote in text and d.diagnosis in d.quote


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Chest x-ray: no evidence of pneumonia.", id="no-evidence"),
        pytest.param("Pneumonia was ruled out.", id="ruled-out"),
        pytest.param("Family history of pneumonia.", id="family"),
        pytest.param("CVA tenderness is absent.", id="cva-tenderness"),
        pytest.param("无肺炎。", id="zh-negated"),
    ],
)
def test_negated_or_foreign_diagnoses_are_no_standing_diagnoses(teacher: LocalTeacher, text: str) -> None:
    output = step(teacher, "organs", text)
    assert isinstance(output, OrgansOutput)
    assert [d for d in output.diagnoses if d.certainty != "ruled_out"] == []


def mapping_input(vocabulary: Vocabulary, *findings: tuple[str, str], diagnoses: list[tuple[str, str, str]]) -> dict:
    return {
        "findings": FindingsOutput(findings=[Finding(quote=q, status=s) for q, s in findings]),  # type: ignore[arg-type]
        "organs": OrgansOutput(diagnoses=[
            OrganDiagnosis(organ=organ(vocabulary, key), diagnosis=d, quote=q) for key, d, q in diagnoses]),
    }


def test_mapping_links_only_to_organs_of_step_two(teacher: LocalTeacher, vocabulary: Vocabulary) -> None:
    note = "Chest pain and jaundice for a week. Assessment: heart failure."
    given = mapping_input(vocabulary, ("Chest pain", "present"), ("jaundice", "present"),
                          diagnoses=[("heart", "heart failure", "Assessment: heart failure")])
    output = step(teacher, "mapping", note, **given)
    assert isinstance(output, MappingOutput)
    assert [(m.finding, m.organ) for m in output.mappings] == [("Chest pain", organ(vocabulary, "heart"))]
    assert output.mappings[0].basis == "Assessment: heart failure"
    assert "heart failure" in output.mappings[0].inference


def test_mapping_skips_absent_findings(teacher: LocalTeacher, vocabulary: Vocabulary) -> None:
    note = "No chest pain. Assessment: heart failure."
    given = mapping_input(vocabulary, ("chest pain", "absent"), diagnoses=[("heart", "heart failure", "heart failure")])
    output = step(teacher, "mapping", note, **given)
    assert isinstance(output, MappingOutput)
    assert output.mappings == []


def test_no_location_without_textual_support(teacher: LocalTeacher, vocabulary: Vocabulary) -> None:
    note = "Chest pain for two days. Assessment: heart failure."
    given = mapping_input(vocabulary, ("Chest pain", "present"), diagnoses=[("heart", "heart failure", "heart failure")])
    output = step(teacher, "mapping", note, **given)
    assert isinstance(output, MappingOutput)
    assert [m.locations for m in output.mappings] == [[]]


def test_locations_come_from_the_text_near_the_finding(teacher: LocalTeacher, vocabulary: Vocabulary) -> None:
    note = "A 2/6 systolic murmur is heard over the aortic valve. Impression: aortic stenosis."
    heart = organ(vocabulary, "heart")
    given = mapping_input(vocabulary, ("2/6 systolic murmur", "present"),
                          diagnoses=[("heart", "aortic stenosis", "Impression: aortic stenosis")])
    output = step(teacher, "mapping", note, **given)
    assert isinstance(output, MappingOutput)
    (mapping,) = output.mappings
    assert mapping.locations
    assert set(mapping.locations) <= set(vocabulary.locations(heart))
    assert set(mapping.locations) <= set(vocabulary.locations_in_text(heart, note))
    assert mapping.locations == ["Aortic Valve"]


@pytest.mark.parametrize(
    ("finding", "diagnoses", "chosen"),
    [
        pytest.param("Mild tricuspid regurgitation", ["heart failure", "tricuspid regurgitation"],
                     "tricuspid regurgitation", id="shared-words"),
        pytest.param("Chest pain", ["heart failure", "atrial fibrillation"], "heart failure", id="first-on-tie"),
        pytest.param("反复胸闷", ["冠心病", "二尖瓣反流"], "冠心病", id="zh-single-shared-character-is-no-match"),
    ],
)
def test_mapping_picks_the_diagnosis_closest_to_the_finding(
    teacher: LocalTeacher, vocabulary: Vocabulary, finding: str, diagnoses: list[str], chosen: str
) -> None:
    note = f"{finding}. " + ". ".join(diagnoses) + "."
    given = mapping_input(vocabulary, (finding, "present"), diagnoses=[("heart", d, d) for d in diagnoses])
    output = step(teacher, "mapping", note, **given)
    assert isinstance(output, MappingOutput)
    assert [m.diagnosis for m in output.mappings] == [chosen]


NOTE = (
    "CHIEF COMPLAINT: Shortness of breath.\nHISTORY OF PRESENT ILLNESS: 70-year-old man with dyspnea on exertion, "
    "orthopnea and mild bilateral lower extremity edema. He denies chest pain or fever.\nPHYSICAL EXAMINATION: "
    "Lungs with bibasilar rales. Heart with a 2/6 systolic murmur at the mitral valve.\nASSESSMENT: 1. Congestive "
    "heart failure. 2. Mitral regurgitation. 3. No evidence of pneumonia."
)


def test_same_input_gives_the_same_output(teacher: LocalTeacher) -> None:
    first = step(teacher, "combined", NOTE)
    second = step(LocalTeacher(), "combined", NOTE)
    assert isinstance(first, CombinedOutput) and isinstance(second, CombinedOutput)
    assert first.model_dump() == second.model_dump()
    assert first.findings and first.diagnoses and first.mappings


def test_combined_equals_the_three_steps(teacher: LocalTeacher) -> None:
    findings = step(teacher, "findings", NOTE)
    organs = step(teacher, "organs", NOTE)
    mapping = step(teacher, "mapping", NOTE, findings=findings, organs=organs)
    combined = step(teacher, "combined", NOTE)
    assert isinstance(combined, CombinedOutput) and isinstance(mapping, MappingOutput)
    assert combined.findings == findings.findings  # type: ignore[attr-defined]
    assert combined.diagnoses == organs.diagnoses  # type: ignore[attr-defined]
    assert combined.mappings == mapping.mappings


def test_run_reports_one_ok_call_and_names_the_teacher(teacher: LocalTeacher) -> None:
    result = teacher.run("organs", StepInput(FakeReport(1, NOTE), NOTE))  # type: ignore[arg-type]
    assert teacher.info.kind == "local" and teacher.info.name == "api_3" and teacher.info.model == TEACHER_VERSION
    assert [(c.step, c.attempt, c.status) for c in result.calls] == [("organs", 1, "ok")]
    assert result.calls[0].latency_s >= 0 and result.raw_text == ""


def test_unknown_step_is_a_report_error(teacher: LocalTeacher) -> None:
    with pytest.raises(ReportError, match="no step 'summary'"):
        teacher.run("summary", StepInput(FakeReport(1, NOTE), NOTE))  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "   \n", "....;;;", "。。。", "a" * 5000, "No no no not without."])
def test_odd_texts_give_empty_answers(teacher: LocalTeacher, text: str) -> None:
    output = step(teacher, "combined", text)
    assert output == CombinedOutput(findings=[], diagnoses=[], mappings=[])


def test_every_lexicon_organ_key_resolves(teacher: LocalTeacher) -> None:
    lexicon = load_lexicon()
    keys = {key for term in lexicon.findings + lexicon.diagnoses for key in term.organs}
    assert keys and not [key for key in keys if teacher.resolve_organ(key) is None]


def test_matcher_prefers_the_longest_term_and_respects_case_of_abbreviations() -> None:
    matcher = Matcher([Term("chest pain", "symptom", ()), Term("pain", "symptom", ()), Term("CAD", "dx", ())])
    hits = matcher.find("Chest-pain, back pain; cad, CAD.")
    assert [h.term.text for h in hits] == ["chest pain", "pain", "CAD"]


def test_malformed_lexicon_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "lexicon.txt"
    bad.write_text("[findings]\nsymptom | heart\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"lexicon\.txt:2"):
        load_lexicon(bad)


def test_sample_of_dev_notes(teacher: LocalTeacher, vocabulary: Vocabulary) -> None:
    if not DEV_NOTES.is_dir():
        pytest.skip(f"dev notes not found at {DEV_NOTES}")
    paths = sorted(DEV_NOTES.glob("report_*.txt"))[::14][:60]
    totals = {"findings": 0, "diagnoses": 0, "mappings": 0}
    for path in paths:
        report = read_report(path)
        patient = report.sections.patient_text() or report.text
        physician = report.sections.physician_text() or report.text
        findings = teacher.run("findings", StepInput(report, patient)).output
        organs = teacher.run("organs", StepInput(report, physician)).output
        assert isinstance(findings, FindingsOutput) and isinstance(organs, OrgansOutput)
        mapping = teacher.run("mapping", StepInput(report, report.text, findings=findings, organs=organs)).output
        assert isinstance(mapping, MappingOutput)
        for f in findings.findings:
            assert f.quote in report.text, (path.name, f.quote)
        for d in organs.diagnoses:
            assert d.organ in vocabulary.organs and d.diagnosis in report.text and d.quote in report.text
        diagnosed = {d.organ for d in organs.diagnoses}
        for m in mapping.mappings:
            assert m.organ in diagnosed and m.finding in report.text
            assert set(m.locations) <= set(vocabulary.locations(m.organ))
        totals["findings"] += len(findings.findings)
        totals["diagnoses"] += len(organs.diagnoses)
        totals["mappings"] += len(mapping.mappings)
    assert len(paths) == 60 and all(totals.values())
