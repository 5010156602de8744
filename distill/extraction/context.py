"""Sentences and context cues of one text: what status a span has, and the sentence to quote.

Cues work in the NegEx/ConText tradition: a cue reaches from itself to the end of its
sentence (or, in Chinese, its clause), or to a scope-ending word such as "but"; the
nearest cue wins. A period between digits ("2.5 cm") ends no sentence.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from typing import Literal

from distill.extraction.lexicon import Hit, Matcher, is_latin, term_key
from distill.extraction.schemas import Certainty

MAX_QUOTE = 300
# How far back an English post-cue ("... was ruled out") reaches, in characters.
POST_CUE_REACH = 60

# "skip": a hypothetical finding, or someone else's: not the patient's at all.
ContextStatus = Literal["present", "absent", "uncertain", "skip"]
# "conf": a confirmation ("确诊为", "诊断明确", "biopsy-proven") outweighs a farther hedge.
_STATUS_OF_CUE: dict[str, ContextStatus] = {"neg": "absent", "unc": "uncertain", "hyp": "skip", "exp": "skip",
                                            "conf": "present"}
# Uncertainty cues that lean to "no": a diagnosis called unlikely is one the physician rules out.
_RULING_OUT = frozenset({"unlikely", "is unlikely", "not likely", "less likely", "very unlikely"})

# Sentence ends; a period between digits ("2.5 cm") is not one.
_BOUNDARY = re.compile(r"[!?;。；！？\n]|(?<!\d)\.|\.(?!\d)")
_CJK_CLAUSE = re.compile(r"[，,]")
# The rest of a Chinese sentence that closes a list of denied findings: "...等不适", "...等症状".
_LIST_CLOSE = re.compile(r"([^。；;！？]{0,40}?)等(?:不适|症状|表现|情况|伴随症状|(?=[，,。；;]|$))")
_HAD = frozenset({"有", "出现"})
# What may join the findings of a bare Chinese list.
_JOINERS = re.compile(r"[、及和与或\s]+")
# A section header glued to its text ("IMPRESSIONCongestive heart failure").
_GLUED_HEADER = re.compile(r"\s*[A-Z][A-Z /&]*[A-Z](?=[A-Z][a-z])")
# The number of the next list item, glued to its text ("冠心病 2.慢性心力衰竭").
_NEXT_ITEM_NUMBER = re.compile(r"\s+\d{1,2}\Z")



class Context:
    """The sentences and context cues of one text: answers what status a span has."""

    def __init__(self, text: str, cues: Matcher | None = None) -> None:
        self.text = text
        self.bounds = [m.start() for m in _BOUNDARY.finditer(text)]
        self.cues = cues.find(text) if cues is not None else []
        self.cue_starts = [hit.start for hit in self.cues]
        self.terms: list[tuple[int, int]] = []

    def mark_terms(self, spans: list[tuple[int, int]]) -> None:
        """The spans of the text's finding terms: a Chinese clause of nothing but these is a bare list."""
        self.terms = sorted(spans)

    def sentence(self, start: int, end: int) -> tuple[int, int]:
        """The span of the sentence holding ``text[start:end]``, trimmed of whitespace."""
        i = bisect_left(self.bounds, start)
        left = self.bounds[i - 1] + 1 if i > 0 else 0
        j = bisect_left(self.bounds, end)
        right = self.bounds[j] if j < len(self.bounds) else len(self.text)
        header = _GLUED_HEADER.match(self.text, left, end)
        if header is not None and header.end() <= start:
            left = header.end()
        if self.text[right:right + 1] == "." and not self.text[right + 1:right + 2].isspace():
            number = _NEXT_ITEM_NUMBER.search(self.text, end, right)
            right = number.start() if number is not None else right
        while left < start and self.text[left].isspace():
            left += 1
        while right > end and self.text[right - 1].isspace():
            right -= 1
        return left, right

    def quote(self, start: int, end: int) -> str:
        """The sentence around a span, cut to ``MAX_QUOTE`` characters around it when longer."""
        left, right = self.sentence(start, end)
        if right - left > MAX_QUOTE:
            spare = max(0, MAX_QUOTE - (end - start)) // 2
            left, right = max(left, start - spare), min(right, end + spare)
        return self.text[left:right].strip()

    def status(self, start: int, end: int) -> ContextStatus:
        """``present``, ``absent``, ``uncertain``, or ``skip`` (hypothetical, or not the patient's)."""
        cue = self.cue(start, end)
        return _STATUS_OF_CUE[cue.term.category] if cue is not None else "present"

    def certainty(self, start: int, end: int) -> Certainty | None:
        """How sure the note is of a diagnosis at this span; ``None`` when it is not the patient's at all.

        A negation ("no evidence of", "negative for", 排除) or "unlikely" rules it out; an
        uncertainty cue ("possible", "probable", "cannot exclude", "differential", 考虑, 待排)
        makes it suspected; a hypothetical ("if", "risk of") or another person's makes it none.
        """
        cue = self.cue(start, end)
        if cue is None:
            return "confirmed"
        status = _STATUS_OF_CUE[cue.term.category]
        if status == "skip":
            return None
        if status == "present":
            return "confirmed"
        if status == "absent" or term_key(cue.term.text) in _RULING_OUT:
            return "ruled_out"
        return "suspected"

    def cue(self, start: int, end: int) -> Hit | None:
        """The context cue whose scope holds ``text[start:end]`` (the nearest one), or ``None``."""
        left, right = self.sentence(start, end)
        # A question mark ends the sentence and is its cue ("肝癌？"): the cue at ``right`` counts.
        lo, hi = bisect_left(self.cue_starts, left), bisect_right(self.cue_starts, right)
        nearby = self.cues[lo:hi]
        enders = [hit for hit in nearby if hit.term.category == "term"]
        best: tuple[int, Hit] | None = None
        for cue in nearby:
            if cue.term.category not in _STATUS_OF_CUE:
                continue
            direction = cue.term.organs[0] if cue.term.organs else "pre"
            latin = is_latin(cue.term.text)
            if cue.end <= start and direction in ("pre", "both"):
                gap = (cue.end, start)
            elif cue.start >= end and direction in ("post", "both"):
                gap = (end, cue.start)
                if latin and gap[1] - gap[0] > POST_CUE_REACH:
                    continue
            else:
                continue
            # Another person's history ("family history: positive for ...") lasts to the sentence end.
            lists = cue.term.category == "neg" and gap[1] == start
            # 否认 denies what it is said the patient had: "否认发作前有胸闷" denies the chest tightness.
            own = [h for h in enders if h.term.text not in _HAD] if cue.term.text == "否认" else enders
            if cue.term.category != "exp" and self._scope_ends(gap, own, latin, end, right, lists):
                continue
            distance = gap[1] - gap[0]
            if best is None or distance < best[0]:
                best = (distance, cue)
        return best[1] if best is not None else None

    def _scope_ends(self, gap: tuple[int, int], enders: list[Hit], latin: bool, end: int = 0,
                    right: int = 0, lists: bool = False) -> bool:
        if any(gap[0] <= hit.start and hit.end <= gap[1] for hit in enders):
            return True
        # Chinese lists use "、"; a comma starts a new clause with its own cues, unless the list runs on
        # over commas and closes with "等不适" / "等症状": 无恶心、呕吐，腹痛、腹胀等不适 denies them all.
        if not latin and self._in_aside(gap, after=gap[0] == end):
            return True  # 低回声（栓子？）: the aside's cue is the aside's; 占位：肿瘤？ the gloss's is the gloss's
        if latin or _CJK_CLAUSE.search(self.text, gap[0], gap[1]) is None:
            return False
        closed = _LIST_CLOSE.match(self.text, end, right)
        # The list reaches its 等 through nothing but findings: no verb or narrative in between.
        if closed is not None and (not self.terms or self._bare(end, closed.end(1), commas=True)):
            return False
        if not lists:
            return True
        # ... or unless every clause after the cue's own is a bare list of findings (无畏寒、发热，咳嗽、咳痰).
        clauses = _CJK_CLAUSE.split(self.text[gap[0]:end])[1:]
        offset = gap[0] + len(_CJK_CLAUSE.split(self.text[gap[0]:end])[0]) + 1
        for clause in clauses:
            if not self._bare(offset, offset + len(clause)):
                return True
            offset += len(clause) + 1
        return not self._bare_to_clause_end(end, right)

    def _in_aside(self, gap: tuple[int, int], after: bool) -> bool:
        """Whether a cue and a finding are on two sides of an unclosed bracket, or of a gloss's colon."""
        between = self.text[gap[0]:gap[1]]
        opened = sum(between.count(c) for c in "（(") - sum(between.count(c) for c in "）)")
        if after:
            return opened > 0 or any(c in between for c in "：:")
        return opened < 0

    def _bare(self, start: int, end: int, commas: bool = False) -> bool:
        """Whether ``text[start:end]`` holds nothing but finding terms and list joiners (and commas)."""
        rest = list(self.text[start:end])
        lo = bisect_left(self.terms, (start, start))
        for term_start, term_end in self.terms[max(0, lo - 1):]:
            if term_start >= end:
                break
            for i in range(max(term_start, start), min(term_end, end)):
                rest[i - start] = ""
        left = _JOINERS.sub("", "".join(rest))
        return bool(self.terms) and not (_CJK_CLAUSE.sub("", left) if commas else left)

    def _bare_to_clause_end(self, end: int, right: int) -> bool:
        clause_end = _CJK_CLAUSE.search(self.text, end, right)
        return self._bare(end, clause_end.start() if clause_end else right)


def extend_left(text: str, start: int, latin: re.Pattern[str], other: re.Pattern[str]) -> int:
    """Where a term's leading modifiers start ("mild bilateral" + "edema")."""
    window_start = max(0, start - 60)
    window = text[window_start:start]
    pattern = latin if is_latin(text[start]) else other
    found = pattern.search(window)
    return window_start + found.start() if found else start
