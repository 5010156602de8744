"""Section detection: split a clinical note into headed parts.

A note is cut at its section headers (``CHIEF COMPLAINT:``, ``Impression:``,
``主诉：`` ...). Each section is classified as what the patient reports
(``"patient"``), what the physician observed or concluded (``"physician"``),
or anything else (``"other"``: medications, allergies, procedure details ...).

Real notes are messy: headers are glued to the previous sentence
(``...stable.IMPRESSION:``), followed directly by a numbered list
(``SUMMARY1. Normal``), or written in Chinese with a full-width colon. Headers
are found on word boundaries (``plan`` never matches ``explanation``) and only
where a header can start: the beginning of a line, the end of a sentence, or
(for upper-case headers) right after lower-case text. Exam subheadings such as
``HEENT:`` or ``LUNGS:`` stay inside their section.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

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
_ALIASES: dict[str, str] = {
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

_KINDS: dict[str, SectionKind] = {
    **{name: "patient" for name in _PATIENT + _ZH_PATIENT},
    **{name: "physician" for name in _PHYSICIAN_NARRATIVE + _PHYSICIAN_CONCLUSION},
    **{name[: -len("is")] + "es": "physician" for name in _PHYSICIAN_CONCLUSION if name.endswith("diagnosis")},
    **{name: "physician" for name in _ZH_PHYSICIAN_NARRATIVE + _ZH_PHYSICIAN_CONCLUSION},
    **{name: "other" for name in _OTHER + _ZH_OTHER},
}
_NARRATIVE = frozenset(_ALIASES.get(n, n) for n in _PHYSICIAN_NARRATIVE + _ZH_PHYSICIAN_NARRATIVE)
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
_TEST_WORDS = frozenset(_TEST_WORD_LIST.split())

# Subheadings of an examination or a review of systems: they never end a section.
_SUBHEADING_WORDS = """general constitutional heent head eyes ears nose throat mouth oropharynx neck chest lungs heart
    cardiovascular cardiac respiratory pulmonary abdomen abdominal back spine extremities neuro neurologic neurological
    skin psychiatric psych musculoskeletal genitourinary rectal pelvic lymph lymphatic breasts hematologic endocrine
    allergic gastrointestinal motor sensory reflexes gait coordination pulses temp temperature pulse weight height
    respirations dermatologic genitalia lymphatics integumentary appearance affect mood speech orientation memory
    judgment insight thorax nasal oral hematopoietic strength coord note notes comment comments addendum"""
_SUBHEADINGS = frozenset(_SUBHEADING_WORDS.split()) | {
    "cranial nerves", "mental status", "blood pressure", "deep tendon reflexes", "heart rate", "respiratory rate",
    "urine output", "external genitalia", "general appearance", "oral cavity", "head and neck", "head & face",
    "lymph nodes", "lower extremities", "upper extremities", "nose and throat", "oxygen saturation", "neuro/psych",
    "hematologic/lymphatic", "hematologic and lymphatic", "thought process", "thought content",
}  # fmt: skip
# ... and so do anatomical parts inside a findings section ("RIGHT CORONARY ARTERY:", "RESPIRATORY SYSTEM:").
_SUBHEADING_LAST_WORDS = frozenset({"system", "artery", "arteries", "ventricle", "valve", "atrium", "stage", "lobe"})

# Characters after which a header may start (besides a line start).
_LATIN_BOUNDARY = frozenset(".!?;)]")
_CJK_BOUNDARY = frozenset(".!?;)]。；！？，,、】")


@dataclass(frozen=True)
class Section:
    """One headed part of a note; ``text == whole[start:end]``, trimmed of surrounding whitespace."""

    name: str
    kind: SectionKind
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Sections:
    """The sections of one note, in order; ``whole`` is the note text they slice."""

    items: tuple[Section, ...]
    whole: str

    def patient_text(self) -> str:
        """Bodies of what the patient reports (chief complaint, HPI, ROS ...), or ``""``."""
        return _join(s for s in self.items if s.kind == "patient")

    def physician_text(self) -> str:
        """Bodies of every physician section (findings, exam, assessment, diagnosis, plan ...), or ``""``."""
        return _join(s for s in self.items if s.kind == "physician")

    def narrative_physician_text(self) -> str:
        """Physician sections that describe findings (exam, hospital course, findings, labs ...), or ``""``."""
        return _join(s for s in self.items if s.kind == "physician" and is_narrative(s.name))

    def names(self) -> list[str]:
        """Canonical names of the sections, in order (duplicates kept)."""
        return [s.name for s in self.items]


def is_narrative(name: str) -> bool:
    """True when a physician section of this name describes findings rather than listing conclusions."""
    if name in _NARRATIVE:
        return True
    if name in _KINDS:
        return False
    return name.rsplit(" ", 1)[-1] in _NARRATIVE_LAST_WORDS or _names_test(name)


def section_kind(name: str) -> SectionKind:
    """The kind of a canonical section name; unknown names are ``"other"``."""
    kind = _KINDS.get(name)
    if kind is not None:
        return kind
    by_last_word = _LAST_WORD_KIND.get(name.rsplit(" ", 1)[-1])
    if by_last_word is not None:
        return by_last_word
    return "physician" if _names_test(name) else "other"


def _names_test(name: str) -> bool:
    return any(word in _TEST_WORDS for word in re.split(r"[ /&]+", name))


def detect_sections(text: str) -> Sections:
    """Split ``text`` at its section headers.

    Never raises on any string. A note without recognizable headers is one
    ``"other"`` section named ``"note"``; text before the first header is an
    ``"other"`` section named ``"preamble"``. A blank note has no sections.
    """
    headers = _find_headers(text)
    if not headers:
        items = (Section(WHOLE_NOTE, "other", 0, len(text), text),) if text.strip() else ()
        return Sections(items, text)
    out: list[Section] = []
    lead = _trimmed(text, 0, headers[0].start, PREAMBLE, "other")
    if lead.text:
        out.append(lead)
    for i, h in enumerate(headers):
        end = headers[i + 1].start if i + 1 < len(headers) else len(text)
        out.append(_trimmed(text, h.body_start, end, h.name, section_kind(h.name)))
    return Sections(tuple(out), text)


# --- header finding ----------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    start: int  # first character of the header
    body_start: int  # first character after the header (and its colon)
    name: str


_Acceptor = Callable[[re.Match[str], str], "str | None"]


def _term_pattern(terms: Iterable[str]) -> str:
    """A regex matching any of ``terms``, longest first, built as a trie: a flat alternation of a few hundred
    terms costs milliseconds per note."""
    trie: dict[str, Any] = {}
    for term in terms:
        node = trie
        for c in term.replace(" / ", "/").replace(" & ", "&"):
            node = node.setdefault(c, {})
        node[""] = {}  # end of a term
    return _trie_pattern(trie)


_SPELLED = {" ": r"[ \t]+", "/": r"[ \t]*/[ \t]*", "&": r"[ \t]*&[ \t]*"}


def _trie_pattern(node: dict[str, Any]) -> str:
    branches = [_SPELLED.get(c, re.escape(c)) + _trie_pattern(child) for c, child in sorted(node.items()) if c]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if "" in node:  # a term may end here; the greedy "?" still prefers the longer one
        return body + "?" if len(branches) == 1 and len(body) == 1 else f"(?:{body})?"
    return body


_LATIN_TERMS = [t for t in _KINDS if t.isascii()]
_CJK_TERMS = [t for t in _KINDS if not t.isascii()]
_PAREN = r"(?:[ \t]*\([^()\n]{1,30}\))?"
_UPPER_TERMS = _term_pattern([t.upper() for t in [*_LATIN_TERMS, *_SUBHEADINGS]])
# A known header followed by a colon, or (upper case only) by a line end, a glued numbered list, or another
# upper-case header glued to it ("PHYSICAL EXAMINATIONVITAL SIGNS:"), or a capitalized word ("DIAGNOSISEnd-stage").
_KNOWN = re.compile(
    rf"(?<![0-9'])(?P<h>{_term_pattern(_LATIN_TERMS)}){_PAREN}"
    rf"(?:(?P<colon>[ \t]*[:：])|(?P<bare>[ \t]*(?=\r?\n|\Z|\d{{1,2}}[.)]|(?-i:[A-Z][a-z]|(?:{_UPPER_TERMS})[ \t]*[:：]))))",
    re.IGNORECASE,
)
_UPPER_TAIL = re.compile(rf"(?:{_UPPER_TERMS})$")
# Any upper-case run of words followed by a colon: ends the previous section as an "other" one.
# Bounded word length and no start inside an upper-case run keep the scan linear on pathological input.
_UPPER_WORD = r"[A-Z][A-Z'\-]{0,40}"
_GENERIC = re.compile(rf"(?<![A-Z0-9'\-])(?P<h>{_UPPER_WORD}(?:(?:[ \t]*[/&][ \t]*|[ \t]+){_UPPER_WORD}){{0,5}})"
                      rf"{_PAREN}[ \t]*[:：]")  # fmt: skip
# An enumerator ("一、", "2.") belongs to the header, not to the previous section's body.
_CJK = re.compile(
    rf"(?:[一二三四五六七八九十]{{1,3}}[、.．]|[0-9]{{1,2}}[、.．)）])?[ \t]*(?P<open>[【\[])?(?P<h>{_term_pattern(_CJK_TERMS)})(?(open)[】\]][ \t]*[:：]?|[ \t]*[:：])"
)


def _find_headers(text: str) -> list[_Header]:
    known = _scan(_KNOWN, text, _accept_known) + _scan(_CJK, text, _accept_cjk)
    known.sort(key=lambda h: (h.start, -h.body_start))
    kept: list[_Header] = []
    for h in known:
        if not kept or h.start >= kept[-1].body_start:
            kept.append(h)
    # A generic upper-case run never overrides a known header, even one glued inside it.
    starts = [k.start for k in kept]
    generic = []
    for h in _scan(_GENERIC, text, _accept_generic):
        i = bisect.bisect_left(starts, h.start)
        overlaps_next = i < len(kept) and kept[i].start < h.body_start
        overlaps_previous = i > 0 and kept[i - 1].body_start > h.start
        if not (overlaps_next or overlaps_previous):
            generic.append(h)
    return sorted(kept + generic, key=lambda h: h.start)


def _scan(pattern: re.Pattern[str], text: str, accept: _Acceptor) -> list[_Header]:
    # search() in a loop rather than finditer(): a rejected candidate must not hide one that overlaps it.
    out: list[_Header] = []
    pos = 0
    while True:
        m = pattern.search(text, pos)
        if m is None:
            return out
        name = accept(m, text)
        if name is None:
            pos = m.start() + 1
            continue
        out.append(_Header(m.start(), m.end(), name))
        pos = m.end()


def _accept_known(m: re.Match[str], text: str) -> str | None:
    raw, start = m.group("h"), m.start()
    upper = _is_upper(raw)
    prev = text[start - 1] if start else ""
    if m.group("bare") is not None:
        return _canonical(raw) if upper and _at_header_start(text, start) else None
    if not upper:
        return _canonical(raw) if not prev.isalpha() and _at_header_start(text, start) else None
    if prev.isalpha() and prev.isupper():
        # Glued to a title or another header ("CONTRASTREASON FOR EXAM:", "MACCOMPLICATIONS:"): only a
        # distinctive header counts, so that "EXPLAN:" never yields "plan".
        tail = _UPPER_TAIL.search(text, max(0, start - 40), start)
        return _canonical(raw) if " " in raw.strip() or len(raw) >= 8 or tail else None
    if _previous_char(text, start).isupper():
        # "PAST OCULAR HISTORY:" must not yield "history": the header is the whole upper-case run.
        return None
    return _canonical(raw)


def _accept_generic(m: re.Match[str], text: str) -> str | None:
    raw = m.group("h")
    name = _normalize(raw)
    letters = sum(c.isalpha() for c in raw)
    prev = text[m.start() - 1] if m.start() else ""
    if (
        (prev.isalpha() and not prev.islower())
        or letters < 4
        or name in _SUBHEADINGS
        or name.rsplit(" ", 1)[-1] in _SUBHEADING_LAST_WORDS
        or not _at_header_start(text, m.start())
    ):
        return None
    return _canonical(raw)


def _accept_cjk(m: re.Match[str], text: str) -> str | None:
    # A CJK header may be bracketed, indented or numbered ("【主诉】", "一、主诉：", "1.主诉："), never inside a
    # sentence.
    start = m.start()
    if m.group("open") or start == 0 or text[start - 1].isspace() or text[start - 1] in _CJK_BOUNDARY:
        return m.group("h")
    return None


def _at_header_start(text: str, pos: int) -> bool:
    """Line start, or right after the end of a sentence (possibly glued: ``stable.IMPRESSION``)."""
    before = _previous_char(text, pos)
    if before in ("", "\n"):
        return True
    if before in _LATIN_BOUNDARY:
        return True
    # "...good motionDOPPLER:" — an upper-case header glued to lower-case text.
    return text[pos - 1] == before and before.islower() and _is_upper(text[pos : pos + 2])


def _previous_char(text: str, pos: int) -> str:
    """The nearest character before ``pos`` that is not a space or tab; ``""`` at the start."""
    i = pos - 1
    while i >= 0 and text[i] in " \t\u00a0":
        i -= 1
    return text[i] if i >= 0 else ""


def _is_upper(s: str) -> bool:
    letters = [c for c in s if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters)


def _normalize(raw: str) -> str:
    s = re.sub(r"\s+", " ", raw.strip().lower())
    return re.sub(r" ?([/&]) ?", r"\1", s).replace("&", " & ").replace("  ", " ")


def _canonical(raw: str) -> str:
    name = _normalize(raw)
    name = _ALIASES.get(name, name)
    return re.sub(r"\bdiagnoses\b", "diagnosis", name)


def _trimmed(text: str, start: int, end: int, name: str, kind: SectionKind) -> Section:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Section(name, kind, start, end, text[start:end])


def _join(sections: Iterable[Section]) -> str:
    return "\n\n".join(s.text for s in sections if s.text)
