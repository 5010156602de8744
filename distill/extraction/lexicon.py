"""The offline teacher's word lists, and the matchers compiled from them.

The lists live in ``distill/data/teacher_lexicon.txt`` (its header explains
the format): findings with their kind and organs, diagnoses with their organ,
context cues (negation, uncertainty, hypothetical, someone else's, scope
ends) and modifier words. Organ keys are short names (``heart``,
``urinary bladder``) that the teacher resolves against the organ vocabulary.
``compiled_lexicon()`` turns them, once per process, into character-trie
regexes: one scan of a note finds every term, longest first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from distill.core.errors import ConfigError

SECTIONS = ("findings", "diagnoses", "cues", "modifiers")

# Cues that another person's history follows ("mother had ..."): generated, not listed.
_RELATIVES = ("mother", "father", "brother", "sister", "sibling", "siblings", "grandmother", "grandfather", "aunt",
              "uncle", "cousin", "parents")
_RELATIVE_VERBS = ("had", "has", "with", "history of", "suffered from", "diagnosed with")


@dataclass(frozen=True)
class Term:
    """One entry: its text, category (finding kind, ``dx``, cue class or modifier use) and keys."""

    text: str
    category: str
    organs: tuple[str, ...]


@dataclass(frozen=True)
class Lexicon:
    """The parsed word lists, one list of terms per section."""

    findings: list[Term] = field(default_factory=list)
    diagnoses: list[Term] = field(default_factory=list)
    cues: list[Term] = field(default_factory=list)
    modifiers: list[Term] = field(default_factory=list)

    def words(self, use: str, *, latin: bool) -> list[str]:
        """The modifier words of one use (``finding``, ``diagnosis``, ``disease``) in one script."""
        return [t.text for t in self.modifiers if t.category == use and is_latin(t.text) == latin]


def default_lexicon_path() -> Path:
    """Where the packaged word lists live."""
    return Path(str(resources.files("distill.extraction") / "data" / "teacher_lexicon.txt"))


@lru_cache(maxsize=4)
def load_lexicon(path: Path | None = None) -> Lexicon:
    """Read and parse the word lists (the packaged file by default); cached per path.

    Raises ``ConfigError`` naming the file and line when the file is missing
    or a line is malformed.
    """
    path = path or default_lexicon_path()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the offline teacher's word lists ({exc.strerror}); "
                          "reinstall diag-distill") from exc
    tables: dict[str, list[Term]] = {name: [] for name in SECTIONS}
    section = ""
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]") and line[1:-1] in tables:
            section = line[1:-1]
            continue
        parts = [part.strip() for part in line.split("|")]
        if not section or len(parts) != 3 or not parts[0]:
            raise ConfigError(f"{path}:{number}: expected 'category | keys | term; term' under one of "
                              f"[{'], ['.join(SECTIONS)}]")
        category, keys, words = parts
        organs = tuple(key.strip() for key in keys.split(",") if key.strip())
        tables[section].extend(Term(w.strip(), category, organs) for w in words.split(";") if w.strip())
    relatives = [Term(f"{who} {verb}", "exp", ("pre",)) for who in _RELATIVES for verb in _RELATIVE_VERBS]
    tables["cues"] = _merge_directions(tables["cues"] + relatives)
    return Lexicon(**tables)


def _merge_directions(cues: list[Term]) -> list[Term]:
    """One cue per text and class; a cue listed both before and after a term works both ways."""
    merged: dict[tuple[str, str], Term] = {}
    for cue in cues:
        key = (term_key(cue.text), cue.category)
        seen = merged.get(key)
        if seen is not None and seen.organs != cue.organs:
            cue = Term(seen.text, cue.category, ("both",))
        merged[key] = cue
    return list(merged.values())


# --- matching -------------------------------------------------------------------

# A word edge, or the seam of a glued section header ("HISTORYPositive",
# "IMPRESSIONChest pain"): an upper-case letter followed by a capitalised word.
LEFT_EDGE = r"(?:(?<![A-Za-z0-9])|(?-i:(?<=[A-Z])(?=[A-Z][a-z])))"
RIGHT_EDGE = r"(?:(?![A-Za-z0-9])|(?-i:(?<=[A-Z])(?=[A-Z][a-z])))"
WORD_GAP = r"(?:[^\S\n]|-)+"  # never across a line: step texts join sections with blank lines
_SPACES = re.compile(r"[\s\-]+")


def term_key(text: str) -> str:
    """How a term, or a matched span, is looked up: lower case, one space between words."""
    if is_latin(text):
        return _SPACES.sub(" ", text.lower()).strip()
    return text


def is_latin(text: str) -> bool:
    """True when the term matches as English words (ASCII), False for Chinese (matched as written)."""
    return text.isascii()


@dataclass(frozen=True)
class Hit:
    """One lexicon match: its span in the text and the entry it matched."""

    start: int
    end: int
    term: Term


class Matcher:
    """Finds the terms of a lexicon in a text, longest first, in one regex scan per script.

    Terms are compiled into a character trie, so a scan costs about the same
    with hundreds of terms as with ten. ``plural`` lets English terms take a
    trailing ``s``/``es``.
    """

    def __init__(self, terms: list[Term], *, plural: bool = False) -> None:
        self._terms: dict[str, Term] = {}
        for term in terms:
            self._terms.setdefault(term_key(term.text), term)
        latin = [key for key in self._terms if is_latin(key)]
        other = [key for key in self._terms if not is_latin(key)]
        suffix = "(?:e?s)?" if plural else ""
        self._latin = re.compile(f"{LEFT_EDGE}({_trie(latin)}){suffix}{RIGHT_EDGE}", re.IGNORECASE)
        self._other = re.compile(f"({_trie(other)})")

    def find(self, text: str) -> list[Hit]:
        """Every non-overlapping match in ``text``, in order."""
        hits = self._hits(self._latin, text)
        if not text.isascii():
            hits = _merge(hits, self._hits(self._other, text))
        return hits

    def _hits(self, regex: re.Pattern[str], text: str) -> list[Hit]:
        hits = []
        for match in regex.finditer(text):
            matched = match.group(1)
            term = self._terms.get(term_key(matched))
            if term is None or (term.text.isupper() and not matched.isupper()):
                continue
            hits.append(Hit(match.start(), match.end(), term))
        return hits


def _merge(first: list[Hit], second: list[Hit]) -> list[Hit]:
    merged: list[Hit] = []
    for hit in sorted(first + second, key=lambda h: (h.start, -h.end)):
        if not merged or hit.start >= merged[-1].end:
            merged.append(hit)
    return merged


def _trie(keys: list[str]) -> str:
    """A regex matching any of ``keys``, preferring the longest; a space matches any word gap."""
    if not keys:
        return "(?!)"
    root: dict[str, Any] = {}
    for key in keys:
        node = root
        for char in key:
            node = node.setdefault(char, {})
        node[""] = {}
    return _alternatives(root)


def _alternatives(node: dict[str, Any]) -> str:
    options = []
    for char in sorted(c for c in node if c):
        child = node[char]
        rest = ""
        if any(child):
            rest = _alternatives(child)
            rest = f"(?:{rest})?" if "" in child else rest
        options.append((WORD_GAP if char == " " else re.escape(char)) + rest)
    return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"


# --- compiled for the teacher ---------------------------------------------------

# Modifiers that are patterns rather than words: murmur grades, "2+ edema", "stage 3".
_GRADES = r"[1-4]\+|[1-6]/6|I{1,3}/VI|IV/VI|V/VI"
_STAGES = r"stage [1-5IV]+"
_DX_TAIL = (
    r"(?:,?(?:[^\S\n])+(?:type (?:1|2|I|II)|stage (?:[1-5]|I{1,3}|IV|V)[ab]?|NYHA class [I-V]+"
    r"|with rapid ventricular response))"
)


@dataclass(frozen=True)
class CompiledLexicon:
    """The word lists compiled into matchers and patterns, as the offline teacher uses them."""

    findings: Matcher
    diagnoses: Matcher
    cues: Matcher
    modifiers_en: re.Pattern[str]
    modifiers_zh: re.Pattern[str]
    dx_modifiers_en: re.Pattern[str]
    dx_modifiers_zh: re.Pattern[str]
    dx_tail_en: re.Pattern[str]
    disease_word: re.Pattern[str]


def _alternation(words: list[str], *extra: str) -> str:
    escaped = [re.escape(w).replace(r"\ ", WORD_GAP) for w in sorted(words, key=len, reverse=True)]
    return "|".join([*extra, *escaped]) or "(?!)"


def _before(words: str, latin: bool) -> re.Pattern[str]:
    """Modifier words that end exactly where a term starts (searched in the text just before it)."""
    if latin:
        return re.compile(rf"{LEFT_EDGE}(?:(?:{words}){WORD_GAP}){{1,4}}\Z", re.IGNORECASE)
    return re.compile(rf"(?:{words}){{1,3}}\Z")


@lru_cache(maxsize=1)
def compiled_lexicon() -> CompiledLexicon:
    """The packaged word lists, compiled once per process."""
    lexicon = load_lexicon()
    endings = lexicon.words("disease", latin=True)
    # A whole word is matched first, then its ending checked: far faster than trying each ending at each letter.
    disease_word = (r"(?<![A-Za-z])[A-Za-z]{3,}(?![A-Za-z])(?:" + "|".join(f"(?<={e})" for e in endings) + ")|"
                    + _alternation(lexicon.words("disease", latin=False)))
    return CompiledLexicon(
        findings=Matcher(lexicon.findings, plural=True),
        diagnoses=Matcher(lexicon.diagnoses, plural=True),
        cues=Matcher(lexicon.cues),
        modifiers_en=_before(_alternation(lexicon.words("finding", latin=True), _GRADES), True),
        modifiers_zh=_before(_alternation(lexicon.words("finding", latin=False)), False),
        dx_modifiers_en=_before(_alternation(lexicon.words("diagnosis", latin=True), _STAGES), True),
        dx_modifiers_zh=_before(_alternation(lexicon.words("diagnosis", latin=False)), False),
        dx_tail_en=re.compile(_DX_TAIL, re.IGNORECASE),
        disease_word=re.compile(disease_word, re.IGNORECASE),
    )
