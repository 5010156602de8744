"""Clinical reading rules of the offline teacher: radiology and examination language, negation and
hypothetical cues, Chinese terms, and organs that findings name in their own words."""

from __future__ import annotations

import pytest

from distill.extraction.teacher import LocalTeacher
from distill.extraction.vocabulary import load_vocabulary


@pytest.fixture(scope="module")
def teacher() -> LocalTeacher:
    return LocalTeacher("api_1", load_vocabulary())


@pytest.mark.parametrize(("text", "quote", "status"), [
    ("FINDINGS: Mild cardiomegaly.", "Mild cardiomegaly", "present"),
    ("The aorta is tortuous. Tortuous aorta.", "Tortuous aorta", "present"),
    ("Calcified granuloma in the right upper lobe.", "Calcified granuloma", "present"),
    ("Lungs are hyperexpanded. Hyperexpansion of the lungs.", "Hyperexpansion", "present"),
    ("Degenerative changes of the thoracic spine.", "Degenerative changes", "present"),
    ("Left basilar consolidation.", "consolidation", "present"),
    ("He has not had fever since Monday.", "fever", "absent"),
    ("Lungs are clear of infiltrates.", "infiltrates", "absent"),
    ("Opacity may be due to atelectasis.", "atelectasis", "uncertain"),
    ("患者不伴有胸痛。", "胸痛", "absent"),
    ("查体：皮肤黄染，肝区叩痛阳性。", "皮肤黄染", "present"),
    ("肝区叩痛阳性。", "肝区叩痛", "present"),
    ("体重明显减轻。", "体重明显减轻", "present"),
])
def test_clinical_phrases_are_found_with_their_status(teacher: LocalTeacher, text: str, quote: str,
                                                      status: str) -> None:
    found = {(f.quote, f.status) for f in teacher.findings(text)}
    assert (quote, status) in found


@pytest.mark.parametrize("text", [
    "Call if fever develops.",
    "Report any chest pain to the clinic.",
    "Return if there is vomiting.",
])
def test_hypothetical_findings_are_left_out(teacher: LocalTeacher, text: str) -> None:
    assert teacher.findings(text) == []


def test_no_frequency_is_not_read_as_anuria(teacher: LocalTeacher) -> None:
    found = [(f.quote, f.status) for f in teacher.findings("无尿频、尿急。")]
    assert ("尿频", "absent") in found
    assert all(quote != "无尿" for quote, _ in found)


@pytest.mark.parametrize(("text", "organ"), [
    ("IMPRESSION: Cardiomegaly.", "Heart (Cor)"),
    ("IMPRESSION: Tortuous aorta.", "Artery (Arteria)"),
    ("IMPRESSION: Calcified granuloma.", "Lung (Pulmo)"),
])
def test_an_imaging_abnormality_links_to_the_organ_it_names(teacher: LocalTeacher, text: str, organ: str) -> None:
    findings = teacher.findings(text)
    diagnoses = teacher.diagnoses(text)
    mappings = teacher.mappings(findings, diagnoses, text)
    assert organ in {m.organ for m in mappings}


def test_a_denied_imaging_abnormality_is_no_diagnosis(teacher: LocalTeacher) -> None:
    diagnoses = teacher.diagnoses("IMPRESSION: No cardiomegaly. No pleural effusion.")
    assert {d.certainty for d in diagnoses} <= {"ruled_out"}


@pytest.mark.parametrize(("text", "quote"), [("门诊以“肝癌？”收入我科。", "肝癌"), ("前列腺占位？", "前列腺占位")])
def test_a_question_mark_after_a_finding_makes_it_uncertain(teacher: LocalTeacher, text: str, quote: str) -> None:
    assert (quote, "uncertain") in {(f.quote, f.status) for f in teacher.findings(text)}
