"""The names of clinical note sections: which headers exist (English and Chinese), their aliases, and
whether each holds what the patient reports, what the physician observed or concluded, or other text."""

from __future__ import annotations

import re
from typing import Literal

SectionKind = Literal["patient", "physician", "other"]

#: Name of the single section of a note without headers, and of text before the first header.
WHOLE_NOTE = "note"
PREAMBLE = "preamble"

_PATIENT: tuple[str, ...] = (
    "chief complaint", "chief complaints", "presenting complaint", "presenting complaints", "presenting problem",
    "complaint", "complaints", "history of present illness", "history of the present illness", "present illness",
    "hpi", "history", "interval history", "subjective", "review of systems", "ros", "reason for visit",
    "reason for consultation", "reason for consult", "reason for referral", "reason for admission",
    "reason for evaluation", "symptoms", "signs and symptoms", "history of presenting illness",
    "history of present complaint", "history of presenting complaint", "history of presenting problem",
    "brief history", "clinical history", "interim history", "cc", "hx", "reason for exam", "reason for examination",
)  # fmt: skip
# Physician observations that describe findings: step 1 may read them as narrative.
_PHYSICIAN_NARRATIVE: tuple[str, ...] = (
    "hospital course", "brief hospital course", "course in hospital", "clinical course", "course",
    "emergency department course", "emergency room course", "ed course", "er course", "findings",
    "operative findings", "intraoperative findings", "physical examination", "physical exam", "pe", "examination",
    "exam", "neurological examination", "neurologic examination", "neurological exam", "neurologic exam",
    "mental status examination", "mental status exam", "objective", "vital signs", "vitals", "laboratory data",
    "laboratory", "laboratory studies", "laboratory results", "lab data", "labs", "diagnostic studies",
    "diagnostic data", "studies", "imaging", "imaging studies", "radiology", "pertinent results", "results",
    "interpretation", "ecg", "ekg", "cxr", "radiologic data", "imaging data", "test results", "x-rays",
    "radiographs", "doppler",
)  # fmt: skip
_PHYSICIAN_CONCLUSION: tuple[str, ...] = (
    "assessment", "impression", "impressions", "clinical impression", "diagnosis", "diagnoses",
    "admitting diagnosis", "admission diagnosis", "discharge diagnosis", "preoperative diagnosis",
    "pre-operative diagnosis", "postoperative diagnosis", "post-operative diagnosis", "final diagnosis",
    "principal diagnosis", "primary diagnosis", "secondary diagnosis", "working diagnosis",
    "differential diagnosis", "plan", "assessment and plan", "assessment/plan", "assessment & plan", "a/p",
    "impression and plan", "impression/plan", "treatment plan", "plan of care", "recommendation",
    "recommendations", "conclusion", "conclusions", "summary", "medical decision making", "discussion", "opinion",
    "problem list", "diagnostic impression", "final impression", "prognosis", "plans", "in summary",
)  # fmt: skip
_OTHER: tuple[str, ...] = (
    "medications", "medication", "current medications", "home medications", "admission medications",
    "medications on admission", "discharge medications", "allergies", "drug allergies", "social history",
    "family history", "past medical history", "past surgical history", "past history", "surgical history",
    "medical history", "immunizations", "habits", "procedure", "procedures", "procedure performed",
    "procedures performed", "name of procedure", "title of procedure", "operation", "operation performed",
    "operations performed", "anesthesia", "complications", "estimated blood loss", "ebl", "specimen", "specimens",
    "fluids", "drains", "indication", "indications", "indication for procedure", "indications for procedure",
    "description of procedure", "procedure description", "procedure in detail", "details of procedure",
    "operative procedure", "technique", "disposition", "condition", "condition on discharge", "discharge condition",
    "discharge instructions", "follow-up", "followup", "consent", "meds", "identifying data", "pmh", "pmhx",
    "psh", "fhx", "shx", "birth history", "birth hx",
)  # fmt: skip
_ZH_PATIENT: tuple[str, ...] = ("主诉", "现病史", "病史", "主要症状")
_ZH_PHYSICIAN_NARRATIVE: tuple[str, ...] = (
    "体格检查", "查体", "专科检查", "辅助检查", "实验室检查", "影像学检查", "检查所见", "影像所见", "超声所见",
    "诊疗经过", "治疗经过", "住院经过", "入院情况", "出院情况",
)  # fmt: skip
_ZH_PHYSICIAN_CONCLUSION: tuple[str, ...] = (
    "初步诊断", "诊断", "出院诊断", "入院诊断", "术前诊断", "术后诊断", "病理诊断", "最后诊断", "鉴别诊断",
    "诊断意见", "印象", "结论", "检查结论", "处理", "建议", "医嘱", "出院医嘱", "治疗计划", "诊疗计划",
)  # fmt: skip
_ZH_OTHER: tuple[str, ...] = (
    "既往史", "既往病史", "个人史", "家族史", "婚育史", "月经史", "过敏史", "用药史", "手术史",
)  # fmt: skip

# Header spellings that name the same section.
ALIASES: dict[str, str] = {
    "hpi": "history of present illness", "history of the present illness": "history of present illness",
    "present illness": "history of present illness", "history of presenting illness": "history of present illness",
    "cc": "chief complaint", "hx": "history", "ros": "review of systems",
    "chief complaints": "chief complaint", "presenting complaints": "presenting complaint",
    "physical exam": "physical examination", "pe": "physical examination", "exam": "examination",
    "assessment/plan": "assessment and plan", "assessment & plan": "assessment and plan",
    "a/p": "assessment and plan", "impression/plan": "impression and plan", "impressions": "impression",
    "conclusions": "conclusion", "recommendations": "recommendation", "vitals": "vital signs",
    "labs": "laboratory data", "lab data": "laboratory data", "medication": "medications",
    "pre-operative diagnosis": "preoperative diagnosis", "post-operative diagnosis": "postoperative diagnosis",
    "followup": "follow-up", "meds": "medications", "preop diagnosis": "preoperative diagnosis",
    "postop diagnosis": "postoperative diagnosis", "specimen": "specimens", "indication": "indications",
    "complaints": "complaint",
}  # fmt: skip

KINDS: dict[str, SectionKind] = {
    **{name: "patient" for name in _PATIENT + _ZH_PATIENT},
    **{name: "physician" for name in _PHYSICIAN_NARRATIVE + _PHYSICIAN_CONCLUSION},
    **{name[: -len("is")] + "es": "physician" for name in _PHYSICIAN_CONCLUSION if name.endswith("diagnosis")},
    **{name: "physician" for name in _ZH_PHYSICIAN_NARRATIVE + _ZH_PHYSICIAN_CONCLUSION},
    **{name: "other" for name in _OTHER + _ZH_OTHER},
}
_NARRATIVE = frozenset(ALIASES.get(n, n) for n in _PHYSICIAN_NARRATIVE + _ZH_PHYSICIAN_NARRATIVE)
# An unknown upper-case header is classified by its last word (``PRINCIPAL DISCHARGE DIAGNOSIS``).
_LAST_WORD_KIND: dict[str, SectionKind] = {
    **{w: "physician" for w in ("diagnosis", "diagnoses", "impression", "impressions", "assessment", "plan",
                                "findings", "course", "examination", "exam", "conclusion", "conclusions",
                                "summary", "recommendations", "plans", "interpretation", "data", "results")},
    **{w: "patient" for w in ("complaint", "complaints")},
}  # fmt: skip
_NARRATIVE_LAST_WORDS = frozenset({"findings", "course", "examination", "exam", "interpretation", "data", "results"})
# ... or, when it names a test ("CHEST X-RAY:", "MRI LEFT KNEE:", "SLEEP STUDY:"), as physician findings.
_TEST_WORD_LIST = """x-ray x-rays xray radiograph radiographs ct cta mri mra ultrasound ultrasonography sonography duplex
    doppler echocardiogram echocardiography echo ecg ekg electrocardiogram mammogram mammography angiogram angiography
    audiometry audiogram spirometry scan study emg eeg index"""
TEST_WORDS = frozenset(_TEST_WORD_LIST.split())

# Subheadings of an examination or a review of systems: they never end a section.
_SUBHEADING_WORDS = """general constitutional heent head eyes ears nose throat mouth oropharynx neck chest lungs heart
    cardiovascular cardiac respiratory pulmonary abdomen abdominal back spine extremities neuro neurologic neurological
    skin psychiatric psych musculoskeletal genitourinary rectal pelvic lymph lymphatic breasts hematologic endocrine
    allergic gastrointestinal motor sensory reflexes gait coordination pulses temp temperature pulse weight height
    respirations dermatologic genitalia lymphatics integumentary appearance affect mood speech orientation memory
    judgment insight thorax nasal oral hematopoietic strength coord note notes comment comments addendum"""
SUBHEADINGS = frozenset(_SUBHEADING_WORDS.split()) | {
    "cranial nerves", "mental status", "blood pressure", "deep tendon reflexes", "heart rate", "respiratory rate",
    "urine output", "external genitalia", "general appearance", "oral cavity", "head and neck", "head & face",
    "lymph nodes", "lower extremities", "upper extremities", "nose and throat", "oxygen saturation", "neuro/psych",
    "hematologic/lymphatic", "hematologic and lymphatic", "thought process", "thought content",
}  # fmt: skip
# ... and so do anatomical parts inside a findings section ("RIGHT CORONARY ARTERY:", "RESPIRATORY SYSTEM:").
SUBHEADING_LAST_WORDS = frozenset({"system", "artery", "arteries", "ventricle", "valve", "atrium", "stage", "lobe"})


def names_test(name: str) -> bool:
    return any(word in TEST_WORDS for word in re.split(r"[ /&]+", name))


def is_narrative(name: str) -> bool:
    """True when a physician section of this name describes findings rather than listing conclusions."""
    if name in _NARRATIVE:
        return True
    if name in KINDS:
        return False
    return name.rsplit(" ", 1)[-1] in _NARRATIVE_LAST_WORDS or names_test(name)


def section_kind(name: str) -> SectionKind:
    """The kind of a canonical section name; unknown names are ``"other"``."""
    kind = KINDS.get(name)
    if kind is not None:
        return kind
    by_last_word = _LAST_WORD_KIND.get(name.rsplit(" ", 1)[-1])
    if by_last_word is not None:
        return by_last_word
    return "physician" if names_test(name) else "other"
