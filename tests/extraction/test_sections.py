from __future__ import annotations

import random
from pathlib import Path

import pytest

from distill.extraction.sections import Sections, detect_sections, is_narrative, section_kind

MTSAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mtsamples_dev"


def assert_slices(s: Sections) -> None:
    """Every section's offsets slice the note, in order, without overlap."""
    last_end = 0
    for item in s.items:
        assert s.whole[item.start : item.end] == item.text
        assert last_end <= item.start <= item.end <= len(s.whole)
        last_end = item.end


def by_name(s: Sections) -> dict[str, str]:
    return {item.name: item.text for item in s.items}


def test_english_headers_are_named_classified_and_sliced() -> None:
    note = (
        "CHIEF COMPLAINT: Chest pain.\n"
        "HISTORY OF PRESENT ILLNESS: Two days of pain. Denies fever.\n"
        "MEDICATIONS: Aspirin.\n"
        "PHYSICAL EXAMINATION: No edema.\n"
        "ASSESSMENT: Possible angina.\n"
        "PLAN: Stress test.\n"
    )
    s = detect_sections(note)
    assert s.names() == [
        "chief complaint",
        "history of present illness",
        "medications",
        "physical examination",
        "assessment",
        "plan",
    ]
    assert [i.kind for i in s.items] == ["patient", "patient", "other", "physician", "physician", "physician"]
    assert by_name(s)["history of present illness"] == "Two days of pain. Denies fever."
    assert_slices(s)


@pytest.mark.parametrize(
    ("note", "header", "body"),
    [
        pytest.param("Impression: stable.\nPlan: follow up.", "plan", "follow up.", id="title-case"),
        pytest.param("impression: stable.\nplan: follow up.", "plan", "follow up.", id="lower-case"),
        pytest.param("HPI: cough for a week.", "history of present illness", "cough for a week.", id="hpi-alias"),
        pytest.param("A/P: bronchitis, rest.", "assessment and plan", "bronchitis, rest.", id="a-slash-p"),
        pytest.param("DIAGNOSES: 1. Asthma.", "diagnosis", "1. Asthma.", id="plural-diagnoses"),
        pytest.param("IMPRESSION\nNo acute disease.", "impression", "No acute disease.", id="upper-no-colon"),
        pytest.param("History of Present Illness (HPI): fever.", "history of present illness", "fever.", id="paren"),
    ],
)
def test_header_spellings(note: str, header: str, body: str) -> None:
    s = detect_sections(note)
    assert by_name(s)[header] == body
    assert_slices(s)


@pytest.mark.parametrize(
    ("note", "expected"),
    [
        pytest.param(
            "Walls show good motion.DOPPLER: Mild MR.",
            [("preamble", "Walls show good motion."), ("doppler", "Mild MR.")],
            id="period-glued",
        ),
        pytest.param(
            "Patient is stable.IMPRESSION: Improving pneumonia.",
            [("preamble", "Patient is stable."), ("impression", "Improving pneumonia.")],
            id="impression-glued",
        ),
        pytest.param(
            "Walls show good motionFINDINGS: Normal.",
            [("preamble", "Walls show good motion"), ("findings", "Normal.")],
            id="lower-case-glued",
        ),
        pytest.param(
            "PREOPERATIVE DIAGNOSISEnd-stage renal disease.OPERATIVE PROCEDURECreation of fistula.",
            [("preoperative diagnosis", "End-stage renal disease."), ("operative procedure", "Creation of fistula.")],
            id="header-glued-to-body",
        ),
        pytest.param(
            "PHYSICAL EXAMINATIONVITAL SIGNS: BP 120/80.",
            [("physical examination", ""), ("vital signs", "BP 120/80.")],
            id="two-headers-glued",
        ),
        pytest.param(
            "CT PELVIS WITH CONTRASTREASON FOR EXAM: Abdominal pain.",
            [("preamble", "CT PELVIS WITH CONTRAST"), ("reason for exam", "Abdominal pain.")],
            id="glued-to-title",
        ),
    ],
)
def test_glued_headers(note: str, expected: list[tuple[str, str]]) -> None:
    s = detect_sections(note)
    assert [(i.name, i.text) for i in s.items] == expected
    assert_slices(s)


def test_glued_numbered_lists_stay_in_their_section() -> None:
    note = "SUMMARY1. Normal left ventricle size.2. Normal function.3. Mild MR.DOPPLER:1. Trace TR.2. Normal flow."
    s = detect_sections(note)
    assert [(i.name, i.text) for i in s.items] == [
        ("summary", "1. Normal left ventricle size.2. Normal function.3. Mild MR."),
        ("doppler", "1. Trace TR.2. Normal flow."),
    ]
    assert_slices(s)


@pytest.mark.parametrize(
    "note",
    [
        pytest.param("The explanation: the test was normal.", id="explanation-colon"),
        pytest.param("We discussed the plan: rest and fluids.", id="plan-mid-sentence"),
        pytest.param("She was seen in the explanation clinic. No plan today.", id="no-colon"),
        pytest.param("Of course: she will return.", id="course-mid-sentence"),
        pytest.param("Plantar fasciitis: improving with stretching.", id="plantar"),
    ],
)
def test_headers_respect_word_boundaries(note: str) -> None:
    s = detect_sections(note)
    assert s.names() == ["note"]


def test_upper_case_word_containing_a_header_is_not_that_header() -> None:
    s = detect_sections("Seen today.\nEXPLANATION: Results were normal.")
    assert "plan" not in s.names()
    assert s.physician_text() == ""


def test_longer_unknown_header_does_not_yield_its_last_word() -> None:
    s = detect_sections("PAST OCULAR HISTORY: Cataract surgery.\nCC: Eye pain.")
    assert s.names() == ["past ocular history", "chief complaint"]
    assert s.patient_text() == "Eye pain."


def test_exam_subheadings_stay_inside_the_exam() -> None:
    note = "PHYSICAL EXAMINATION: HEENT: Normal. LUNGS: Clear. HEART: No murmur.\nPLAN: Discharge."
    s = detect_sections(note)
    assert by_name(s)["physical examination"] == "HEENT: Normal. LUNGS: Clear. HEART: No murmur."
    assert s.names() == ["physical examination", "plan"]


def test_unknown_upper_case_header_ends_the_previous_section() -> None:
    s = detect_sections("IMPRESSION: Normal study.\nNARRATIVE: The patient tolerated the procedure.")
    assert s.names() == ["impression", "narrative"]
    assert s.items[1].kind == "other"
    assert s.physician_text() == "Normal study."


@pytest.mark.parametrize(
    ("note", "names"),
    [
        pytest.param("主诉：胸痛3天。\n现病史：无发热。", ["主诉", "现病史"], id="fullwidth-colon"),
        pytest.param("主诉:胸痛3天。\n诊断:冠心病?", ["主诉", "诊断"], id="ascii-colon"),
        pytest.param("【主诉】咳嗽2周【现病史】否认咯血。", ["主诉", "现病史"], id="brackets"),
        pytest.param("一、主诉：腹痛1天。二、初步诊断：急性胃肠炎", ["主诉", "初步诊断"], id="numbered"),
        pytest.param("出院诊断：肺炎。出院医嘱：复查胸片。", ["出院诊断", "出院医嘱"], id="longest-term"),
        pytest.param("体格检查：双肺呼吸音清。\n辅助检查：血常规正常。", ["体格检查", "辅助检查"], id="exam"),
    ],
)
def test_chinese_headers(note: str, names: list[str]) -> None:
    s = detect_sections(note)
    assert s.names() == names
    assert_slices(s)


def test_chinese_header_word_inside_a_sentence_is_not_a_header() -> None:
    s = detect_sections("患者既往诊断：高血压，规律服药。")
    assert s.names() == ["note"]


def test_chinese_sections_split_patient_and_physician() -> None:
    s = detect_sections(
        "主诉：胸闷1月。\n现病史：活动后加重，无胸痛。\n体格检查：双下肢水肿。\n初步诊断：心力衰竭\n处理：利尿。"
    )
    assert s.patient_text() == "胸闷1月。\n\n活动后加重，无胸痛。"
    assert s.physician_text() == "双下肢水肿。\n\n心力衰竭\n\n利尿。"
    assert s.narrative_physician_text() == "双下肢水肿。"


def test_note_without_headers_is_one_other_section() -> None:
    note = "A 40-year-old man with a rash on both elbows.\nNo fever. Possible psoriasis."
    s = detect_sections(note)
    assert [(i.name, i.kind, i.start, i.end) for i in s.items] == [("note", "other", 0, len(note))]
    assert s.patient_text() == ""
    assert s.physician_text() == ""
    assert s.narrative_physician_text() == ""


@pytest.mark.parametrize("note", ["", "   \n\t "], ids=["empty", "blank"])
def test_blank_note_has_no_sections(note: str) -> None:
    s = detect_sections(note)
    assert s.items == ()
    assert s.patient_text() == ""


def test_physician_and_patient_split() -> None:
    note = (
        "SUBJECTIVE: Cough for a week. Denies chest pain.\n"
        "REVIEW OF SYSTEMS: No weight loss.\n"
        "ALLERGIES: None.\n"
        "OBJECTIVE: Crackles at the right base.\n"
        "HOSPITAL COURSE: Improved on antibiotics.\n"
        "DISCHARGE DIAGNOSIS: Pneumonia.\n"
        "PLAN: Amoxicillin.\n"
    )
    s = detect_sections(note)
    assert s.patient_text() == "Cough for a week. Denies chest pain.\n\nNo weight loss."
    assert s.physician_text() == (
        "Crackles at the right base.\n\nImproved on antibiotics.\n\nPneumonia.\n\nAmoxicillin."
    )
    assert s.narrative_physician_text() == "Crackles at the right base.\n\nImproved on antibiotics."
    assert "None." not in s.patient_text() + s.physician_text()


@pytest.mark.parametrize(
    ("name", "kind", "narrative"),
    [
        ("physical examination", "physician", True),
        ("hospital course", "physician", True),
        ("assessment and plan", "physician", False),
        ("discharge diagnosis", "physician", False),
        ("chest x-ray", "physician", True),
        ("principal discharge diagnosis", "physician", False),
        ("review of systems", "patient", False),
        ("social history", "other", False),
        ("narrative", "other", False),
    ],
)
def test_section_kinds(name: str, kind: str, narrative: bool) -> None:
    assert section_kind(name) == kind
    assert (kind == "physician" and is_narrative(name)) == narrative
    assert is_narrative(name) == narrative


def test_every_mtsamples_note_is_sectioned_without_error() -> None:
    if not MTSAMPLES.is_dir():
        pytest.skip(f"sample notes not available at {MTSAMPLES}")
    files = sorted(MTSAMPLES.glob("report_*.txt"))
    assert files, f"no report_*.txt in {MTSAMPLES}"
    for path in files:
        s = detect_sections(path.read_text(encoding="utf-8"))
        assert s.items, path.name
        assert_slices(s)


def test_arbitrary_text_never_raises() -> None:
    rnd = random.Random(20240611)
    alphabet = [
        *"PLANplan HISTORY:：.\n\t1)【】主诉诊断、AEIOUxyz/&-'(",
        "\u00a0",
        "\r\n",
        "PLAN",
        "主诉：",
        "ASSESSMENT",
    ]
    for _ in range(300):
        note = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 200)))
        s = detect_sections(note)
        assert_slices(s)
