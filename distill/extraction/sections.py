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
from typing import Any

from distill.extraction.section_names import (
    ALIASES,
    KINDS,
    PREAMBLE,
    SUBHEADING_LAST_WORDS,
    SUBHEADINGS,
    WHOLE_NOTE,
    SectionKind,
    is_narrative,
    section_kind,
)

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

    def conclusion_text(self) -> str:
        """Bodies of the physician's conclusions (assessment, impression, diagnoses, plan ...), or ``""``.

        A note with no history of the patient is a test's reading (a radiology or echo report): there the
        reader's findings are diagnostic statements too, so every physician section counts.
        """
        if not any(s.kind == "patient" for s in self.items):
            return self.physician_text()
        return _join(s for s in self.items if s.kind == "physician" and not is_narrative(s.name))

    def narrative_physician_text(self) -> str:
        """Physician sections that describe findings (exam, hospital course, findings, labs ...), or ``""``."""
        return _join(s for s in self.items if s.kind == "physician" and is_narrative(s.name))

    def names(self) -> list[str]:
        """Canonical names of the sections, in order (duplicates kept)."""
        return [s.name for s in self.items]


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


_LATIN_TERMS = [t for t in KINDS if t.isascii()]
_CJK_TERMS = [t for t in KINDS if not t.isascii()]
#: Any first character of a CJK header term: a note holding none of them has no CJK header.
_CJK_FIRST = re.compile("[" + "".join(sorted({re.escape(t[0]) for t in _CJK_TERMS})) + "]")
_PAREN = r"(?:[ \t]*\([^()\n]{1,30}\))?"
_UPPER_TERMS = _term_pattern([t.upper() for t in [*_LATIN_TERMS, *SUBHEADINGS]])
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
    known = _scan(_KNOWN, text, _accept_known)
    if _CJK_FIRST.search(text):  # the CJK pattern tries every position: only where a CJK header could be
        known += _scan(_CJK, text, _accept_cjk)
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
        or name in SUBHEADINGS
        or name.rsplit(" ", 1)[-1] in SUBHEADING_LAST_WORDS
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
    name = ALIASES.get(name, name)
    return re.sub(r"\bdiagnoses\b", "diagnosis", name)


def _trimmed(text: str, start: int, end: int, name: str, kind: SectionKind) -> Section:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Section(name, kind, start, end, text[start:end])


def _join(sections: Iterable[Section]) -> str:
    return "\n\n".join(s.text for s in sections if s.text)
