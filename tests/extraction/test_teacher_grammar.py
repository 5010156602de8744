"""Negation scope over Chinese lists, functional items with their descriptor, pending work-up, and
stated condition lines: the offline teacher's clause-level reading rules."""

from __future__ import annotations

import pytest

from distill.extraction.teacher import LocalTeacher
from distill.extraction.vocabulary import load_vocabulary


@pytest.fixture(scope="module")
def teacher() -> LocalTeacher:
    return LocalTeacher("api_1", load_vocabulary())


def found(teacher: LocalTeacher, text: str) -> dict[str, tuple[str, bool]]:
    return {f.quote: (f.status, f.normal) for f in teacher.findings(text)}


@pytest.mark.parametrize(("text", "quote", "status"), [
    pytest.param("无恶心、呕吐，腹痛、腹胀等不适。", "腹胀", "absent", id="list-closed-by-deng-buShi"),
    pytest.param("无发热、盗汗，胸闷、胸痛等，遂来我院。", "胸痛", "absent", id="list-closed-by-deng"),
    pytest.param("无发热，咳嗽明显，遂来我院。", "咳嗽", "present", id="open-list-ends-at-the-comma"),
    pytest.param("无发热，伴咳嗽等不适。", "咳嗽", "present", id="ban-ends-the-scope"),
    pytest.param("发现无痛性肿块。", "肿块", "present", id="painless-is-no-negation"),
    pytest.param("患者无意中发现颈部包块。", "颈部包块", "present", id="by-chance-is-no-negation"),
    pytest.param("门诊以“便血待查”收入。", "便血", "present", id="symptom-under-work-up"),
    pytest.param("门诊以“肝癌待查”收入。", "肝癌", "uncertain", id="disease-under-work-up"),
    pytest.param("无意识障碍。", "意识障碍", "absent", id="wu-before-yishi"),
    pytest.param("否认发作前有胸闷。", "胸闷", "absent", id="denial-reaches-over-you"),
    pytest.param("患者未予以重视，咳嗽、咳痰较前加重，并出现气促等。", "咳嗽", "present",
                 id="a-closing-deng-past-narrative-does-not-count"),
    pytest.param("无咳嗽、咳痰，小便正常，遂来诊。", "小便正常", "present", id="a-normal-statement-is-no-list-item"),
    pytest.param("门静脉内低回声（栓子？）。", "低回声", "present", id="a-question-in-an-aside-is-the-asides"),
    pytest.param("门诊以“右肺门占位：肿瘤？”收入。", "肺门占位", "present", id="a-question-in-a-gloss-is-the-gloss"),
    pytest.param("活检提示淋巴瘤（弥漫大b细胞型）可能性大。", "淋巴瘤", "uncertain", id="a-hedge-after-an-aside-counts"),
    pytest.param("考虑诊断直肠腺癌明确。", "直肠腺癌", "present", id="confirmed-outweighs-consider"),
    pytest.param("右下肺块影，肿瘤性病变待除外。", "病变", "uncertain", id="still-to-be-excluded"),
    pytest.param("无发热，有咳嗽。", "咳嗽", "present", id="you-ends-a-plain-negation"),
])
def test_chinese_clause_grammar_gives_the_status(teacher: LocalTeacher, text: str, quote: str, status: str) -> None:
    assert found(teacher, text)[quote][0] == status


@pytest.mark.parametrize(("text", "quote", "status", "normal"), [
    pytest.param("精神、食欲、睡眠可。", "食欲", "present", True, id="shared-descriptor"),
    pytest.param("精神差，食欲可。", "精神差", "present", False, id="poor-is-a-finding"),
    pytest.param("大小便正常。", "大小便正常", "present", True, id="joined-descriptor"),
    pytest.param("体重无明显变化。", "体重", "absent", False, id="change-denied"),
    pytest.param("近期体重下降5kg。", "体重下降", "present", False, id="change-stated"),
])
def test_a_functional_item_reads_its_descriptor(teacher: LocalTeacher, text: str, quote: str, status: str,
                                                normal: bool) -> None:
    assert found(teacher, text)[quote] == (status, normal)


@pytest.mark.parametrize(("text", "quote"), [
    ("Carpal tunnel syndrome.", "Carpal tunnel syndrome"),
    ("1. Medial meniscal tear.2. Chondromalacia.", "Medial meniscal tear"),
    ("Left acoustic neuroma.", "Left acoustic neuroma"),
    ("Entropion, left upper lid.", "Entropion, left upper lid"),
])
def test_a_short_line_that_states_a_condition_is_a_finding(teacher: LocalTeacher, text: str, quote: str) -> None:
    assert found(teacher, text)[quote] == ("present", False)


@pytest.mark.parametrize("text", [
    "The patient was taken to the operating room and the lesion was excised.",
    "Body mass index 31.",
    "No mass.",
])
def test_narrative_or_denied_lines_are_no_condition_lines(teacher: LocalTeacher, text: str) -> None:
    quotes = [q for q, (status, _) in found(teacher, text).items() if status == "present"]
    assert all(len(q) < 20 for q in quotes), quotes


@pytest.mark.parametrize(("text", "quote"), [
    ("活动后喘累、心累。", "心累"),
    ("伴声嘶、呛咳。", "声嘶"),
    ("有视物旋转。", "视物旋转"),
    ("右肺腺癌伴肝转移。", "转移"),
    ("午后潮热。", "潮热"),
    ("厌油，尿黄。", "厌油"),
])
def test_chinese_symptom_and_lesion_vocabulary(teacher: LocalTeacher, text: str, quote: str) -> None:
    assert any(quote in q for q in found(teacher, text))


@pytest.mark.parametrize("text", ["History of colon polyps.", "Status post cholecystectomy.", "Seen by Dr. Smith."])
def test_history_items_and_names_are_no_condition_lines(teacher: LocalTeacher, text: str) -> None:
    quotes = list(found(teacher, text))
    assert not any(q.lower().startswith(("history", "status post", "seen by")) for q in quotes), quotes


@pytest.mark.parametrize(("text", "quote", "normal"), [
    ("VITAL SIGNS: Blood pressure 168/98, pulse 72.", "Blood pressure 168/98", False),
    ("VITAL SIGNS: Blood pressure 118/76, pulse 72.", "pulse 72", True),
    ("Temperature 101.8, respirations 24.", "Temperature 101.8", False),
    ("Oxygen saturation 98% on room air.", "Oxygen saturation 98%", True),
    ("查体：T：38.9℃，P：80次/分。", "T：38.9", False),
    ("Respiratory rate is 18, pain scale is none.", "Respiratory rate is 18", True),
])
def test_a_vital_sign_with_its_value_is_a_sign_marked_normal_inside_the_resting_range(
        teacher: LocalTeacher, text: str, quote: str, normal: bool) -> None:
    assert found(teacher, text)[quote] == ("present", normal)


@pytest.mark.parametrize("text", ["Pain 8/10 at T4.", "Follow up in 2 weeks, P 2.", "Grade R 1 lesion."])
def test_numbers_that_are_no_vital_sign_are_left_alone(teacher: LocalTeacher, text: str) -> None:
    assert not [q for q in found(teacher, text) if q[:1] in "PRT" and any(c.isdigit() for c in q)]


@pytest.mark.parametrize(("text", "quote", "normal"), [
    ("LABS: WBC 15.2, hemoglobin 13.1.", "WBC 15.2", False),
    ("LABS: WBC 15.2, hemoglobin 13.1.", "hemoglobin 13.1", True),
    ("Platelets 250,000.", "Platelets 250,000", True),
    ("Sodium 128, potassium 4.0.", "Sodium 128", False),
    ("Creatinine 2.4.", "Creatinine 2.4", False),
])
def test_a_laboratory_value_is_a_test_result_marked_normal_inside_the_reference_range(
        teacher: LocalTeacher, text: str, quote: str, normal: bool) -> None:
    finding = next(f for f in teacher.findings(text) if f.quote == quote)
    assert (finding.kind, finding.status, finding.normal) == ("test", "present", normal)
