"""The text the findings step reads: every section that can hold a finding, in parts of bounded size.

Findings live all over a note: before the first header, in the history and review of systems,
in the examination, vital signs, laboratory and imaging sections, in the impression and the
hospital course. ``finding_parts`` keeps every such section (leaving out medication lists,
allergies, social, family and past history, procedure details and plans), in note order, and
packs them into parts of at most ``max_chars`` characters, cutting only between sections or at
paragraph breaks. Each part is one findings call and one checkpoint, so a crash costs one part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from distill.extraction.section_names import PREAMBLE, WHOLE_NOTE
from distill.extraction.sections import Section, Sections

MAX_PART_CHARS = 6000
#: Physician sections that hold what is to be done, not what was found.
_PLAN_SECTIONS = frozenset({"plan", "plans", "treatment plan", "plan of care", "recommendation", "prognosis"})
#: "Other" sections that still state the patient's problems (a radiology request's reason).
_FINDING_OTHER = frozenset({PREAMBLE, WHOLE_NOTE, "indications", "indication for procedure",
                            "indications for procedure"})
_PARAGRAPH = re.compile(r"\n[ \t\u00a0]*\n")


@dataclass(frozen=True)
class Piece:
    """A slice of one section: ``text == note[start:end]``."""

    section: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Part:
    """One findings call's input: pieces in note order, joined by blank lines."""

    pieces: tuple[Piece, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.pieces)

    def sections(self) -> list[str]:
        """Section names of the pieces, in order, without repeats."""
        return list(dict.fromkeys(p.section for p in self.pieces))


def holds_findings(section: Section) -> bool:
    """Whether the findings step reads this section."""
    if section.kind == "other":
        return section.name in _FINDING_OTHER
    return section.name not in _PLAN_SECTIONS


def _paragraphs(section: Section, max_chars: int) -> list[Piece]:
    if len(section.text) <= max_chars:
        return [Piece(section.name, section.start, section.end, section.text)]
    pieces: list[Piece] = []
    start = 0
    cut = 0
    text = section.text
    # Greedy: the longest run of whole paragraphs that fits; a single paragraph longer than the limit
    # stays whole (cutting inside it would split sentences and their negation scope).
    for m in _PARAGRAPH.finditer(text):
        if m.start() - start > max_chars and cut > start:
            pieces.append(_piece(section, start, cut))
            start = _skip_space(text, cut)
        cut = m.start()
    if len(text) - start > max_chars and cut > start:
        pieces.append(_piece(section, start, cut))
        start = _skip_space(text, cut)
    pieces.append(_piece(section, start, len(text)))
    return [p for p in pieces if p.text]


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _piece(section: Section, start: int, end: int) -> Piece:
    body = section.text[start:end].rstrip()
    return Piece(section.name, section.start + start, section.start + start + len(body), body)


def finding_parts(sections: Sections, max_chars: int = MAX_PART_CHARS) -> list[Part]:
    """The findings step's parts; empty when no section holds findings."""
    parts: list[Part] = []
    current: list[Piece] = []
    size = 0
    for section in sections.items:
        if not holds_findings(section) or not section.text:
            continue
        for piece in _paragraphs(section, max_chars):
            if current and size + 2 + len(piece.text) > max_chars:
                parts.append(Part(tuple(current)))
                current, size = [], 0
            current.append(piece)
            size += len(piece.text) + (2 if size else 0)
    if current:
        parts.append(Part(tuple(current)))
    return parts
