"""The curated organ vocabulary: organ names, keywords and anatomical locations.

Whatever decides which organ or location may appear in a normalized record goes
through a ``Vocabulary`` loaded from ``distill/data/organ_vocabulary.json``.
Matching is deterministic. Latin-script phrases match whole words only,
ignoring case, ``the``, apostrophes, hyphens and a plural ``s``; Chinese
phrases match as substrings. At any place in a text the longest phrase wins,
and a masking phrase (``by mouth``, 肝素) hides the organ word inside it.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from distill.core.errors import ConfigError

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAS_CJK = re.compile(f"[{_CJK}]")
_WORD = re.compile(rf"[^\W_{_CJK}]+(?:['’][^\W_{_CJK}]+)*")
# What may separate the words of one phrase: "left-ventricular", "head of the pancreas", "root & aorta".
_JOIN = re.compile(r"[\s\-&]+(?:the[\s\-]+)?", re.IGNORECASE)
_ABBREVIATION = re.compile(r"[A-Z][A-Z0-9]{1,5}")
_POSSESSIVE = re.compile(r"['’]s$")
_PARENTHETICAL = re.compile(r"^(.*?)\s*\(([^()]*)\)\s*$")

VOCABULARY_RESOURCE = "data/organ_vocabulary.json"

Hit = tuple[int, int, "str | None"]  # start, end, value (None: a masking phrase)


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _fold_word(word: str) -> str:
    word = word.casefold().replace("'", "").replace("’", "")
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def phrase_key(phrase: str) -> str:
    """The comparison form of a phrase: equal keys mean the same term.

    ``phrase_key("Head of the Pancreas") == phrase_key("head of pancreas")``;
    Chinese phrases compare with case folded and spaces removed.
    """
    text = _nfkc(phrase)
    if _HAS_CJK.search(text):
        return "".join(text.casefold().split())
    return " ".join(_fold_word(w) for w in _WORD.findall(text) if w.casefold() != "the")


@dataclass(frozen=True)
class _Tokens:
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    raw: tuple[str, ...]
    folded: tuple[str, ...]
    joined: tuple[bool, ...]  # joined[i]: tokens i and i+1 may belong to one phrase


@functools.lru_cache(maxsize=32)
def _tokenize(text: str) -> _Tokens:
    # Cached because the offline teacher scans one note for many organs.
    spans = [m for m in _WORD.finditer(text) if m.group().casefold() != "the"]
    joined = tuple(
        _JOIN.fullmatch(text, spans[i].end(), spans[i + 1].start()) is not None for i in range(len(spans) - 1)
    )
    return _Tokens(
        starts=tuple(m.start() for m in spans),
        ends=tuple(m.end() for m in spans),
        raw=tuple(_POSSESSIVE.sub("", m.group()) for m in spans),
        folded=tuple(_fold_word(m.group()) for m in spans),
        joined=joined,
    )


class _PhraseIndex:
    """Phrases mapped to values, found in text longest first."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._words: dict[str, str | None] = {}
        self._first: dict[str, int] = {}
        self._abbreviations: dict[str, str] = {}
        self._cjk: dict[str, str | None] = {}
        self._cjk_pattern: re.Pattern[str] | None = None

    def add(self, phrase: str, value: str | None, *, scan_abbreviation: bool = True) -> None:
        """Register ``phrase``; an all-capital abbreviation matches text only in capitals."""
        key = phrase_key(phrase)
        if not key:
            raise ConfigError(f"{self._where}: the phrase {phrase!r} has no letters")
        if _ABBREVIATION.fullmatch(phrase.strip()):
            if scan_abbreviation:
                self._put(self._abbreviations, phrase.strip(), value, phrase)
            return
        if _HAS_CJK.search(key):
            self._put(self._cjk, key, value, phrase)
            return
        self._put(self._words, key, value, phrase)
        first, size = key.split(" ")[0], key.count(" ") + 1
        self._first[first] = max(self._first.get(first, 0), size)

    def _put(self, table: dict[str, Any], key: str, value: str | None, phrase: str) -> None:
        if key in table and table[key] != value:
            raise ConfigError(
                f"{self._where}: {phrase!r} means both {table[key]!r} and {value!r}; "
                "give it to one of them in the organ vocabulary"
            )
        table[key] = value

    def freeze(self) -> None:
        if self._cjk:
            alternatives = sorted(self._cjk, key=lambda k: (-len(k), k))
            self._cjk_pattern = re.compile("|".join(re.escape(a) for a in alternatives))

    def scan(self, text: str) -> list[Hit]:
        """Non-overlapping hits in text order (positions in the NFKC form of ``text``)."""
        text = _nfkc(text)
        hits: list[Hit] = []
        if self._words or self._abbreviations:
            hits.extend(self._scan_words(_tokenize(text)))
        if self._cjk_pattern is not None and _HAS_CJK.search(text):
            hits.extend((m.start(), m.end(), self._cjk[m.group().casefold()]) for m in self._cjk_pattern.finditer(text))
            hits.sort(key=lambda hit: hit[0])
        return hits

    def _scan_words(self, tokens: _Tokens) -> Iterable[Hit]:
        folded, count, i = tokens.folded, len(tokens.folded), 0
        while i < count:
            size, value = 0, None
            longest = self._first.get(folded[i], 0)
            if longest:
                span = 1
                while span < longest and i + span < count and tokens.joined[i + span - 1]:
                    span += 1
                for n in range(span, 0, -1):
                    key = folded[i] if n == 1 else " ".join(folded[i : i + n])
                    if key in self._words:
                        size, value = n, self._words[key]
                        break
            if not size and tokens.raw[i] in self._abbreviations:
                size, value = 1, self._abbreviations[tokens.raw[i]]
            if size:
                yield tokens.starts[i], tokens.ends[i + size - 1], value
                i += size
            else:
                i += 1


@dataclass(frozen=True)
class _Locations:
    names: tuple[str, ...]
    exact: Mapping[str, str]  # phrase key -> canonical location
    index: _PhraseIndex


@dataclass(frozen=True)
class _Index:
    by_name: Mapping[str, str]
    by_head: Mapping[str, str]
    by_alias: Mapping[str, str]
    name_keywords: _PhraseIndex  # keywords and masks: resolving an organ name
    text_keywords: _PhraseIndex  # plus condition terms: organs mentioned in running text
    locations: Mapping[str, _Locations]


@dataclass(frozen=True)
class Vocabulary:
    """The allowed organs, how names and texts map to them, and their locations."""

    version: str
    organs: tuple[str, ...]
    _index: _Index = field(repr=False, compare=False)

    @classmethod
    def from_data(cls, data: Mapping[str, Any], source: str = "organ vocabulary") -> Vocabulary:
        """Build a vocabulary from the parsed JSON; raises ``ConfigError`` naming what is wrong."""
        version = data.get("version")
        if not isinstance(version, str) or not version.strip():
            raise ConfigError(f"{source}: 'version' must be a non-empty string")
        index = _build_index(data, source)
        return cls(version=version, organs=tuple(index.locations), _index=index)

    def locations(self, organ: str) -> tuple[str, ...]:
        """The canonical location names of ``organ`` (a vocabulary name or anything ``match_organ`` resolves)."""
        return self._locations_of(organ).names

    def match_organ(self, name: str) -> str | None:
        """The vocabulary organ a name given by a model means, or None.

        Tries, in order: the full name, the English head ("heart"), the
        parenthetical alias ("hepar"), each part of "A (B)" ("Vena (Vena)"),
        then keywords found as whole words in ``name`` (the longest wins, then
        the earliest). Condition terms ("pneumonia") never name an organ here.
        """
        key = phrase_key(name)
        if not key:
            return None
        index = self._index
        for table in (index.by_name, index.by_head, index.by_alias):
            if key in table:
                return table[key]
        parts = _PARENTHETICAL.match(_nfkc(name).strip())
        if parts:
            for part in parts.groups():
                part_key = phrase_key(part)
                for table in (index.by_head, index.by_alias, index.by_name):
                    if part_key in table:
                        return table[part_key]
        best: tuple[int, str] | None = None
        for start, end, organ in index.name_keywords.scan(name):
            if organ is not None and (best is None or end - start > best[0]):
                best = (end - start, organ)
        return best[1] if best else None

    def organs_in_text(self, text: str) -> list[str]:
        """Organs whose keywords or condition terms occur in ``text``, in order of first mention."""
        return _first_mentions(self._index.text_keywords.scan(text))

    def match_location(self, organ: str, location: str) -> str | None:
        """The canonical location of ``organ`` that ``location`` names, or None.

        Exact names, synonyms and abbreviations match ignoring case and spacing
        ("LV", "left ventricular"). Otherwise, if ``location`` mentions exactly
        one location of the organ ("mitral valve annulus"), that one. None when
        the organ is unknown or the location is not in its list.
        """
        try:
            locations = self._locations_of(organ)
        except KeyError:
            return None
        found = locations.exact.get(phrase_key(location))
        if found is not None:
            return found
        mentioned = _first_mentions(locations.index.scan(location))
        return mentioned[0] if len(mentioned) == 1 else None

    def locations_in_text(self, organ: str, text: str) -> list[str]:
        """Canonical locations of ``organ`` mentioned in ``text``, in order of first mention.

        Ambiguous abbreviations (LA, RA, LAD) are not looked for in running text.
        """
        return _first_mentions(self._locations_of(organ).index.scan(text))

    def _locations_of(self, organ: str) -> _Locations:
        locations = self._index.locations.get(organ)
        if locations is None:
            resolved = self.match_organ(organ)
            if resolved is None:
                raise KeyError(f"{organ!r} is not an organ of the organ vocabulary {self.version}")
            locations = self._index.locations[resolved]
        return locations


def _strings(data: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: {key!r} must be a list of non-empty strings")
    return value


def _string(data: Any, key: str, where: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key!r} must be a non-empty string")
    return value


def _claim(table: dict[str, str], phrase: str, organ: str, where: str) -> None:
    key = phrase_key(phrase)
    if table.setdefault(key, organ) != organ:
        raise ConfigError(f"{where}: the name {phrase!r} is already used by {table[key]!r}")


def _build_index(data: Mapping[str, Any], source: str) -> _Index:
    organs = data.get("organs")
    if not isinstance(organs, list) or not organs:
        raise ConfigError(f"{source}: 'organs' must be a non-empty list")
    ambiguous = set(_strings(data, "ambiguous_abbreviations", source))
    by_name: dict[str, str] = {}
    by_head: dict[str, str] = {}
    by_alias: dict[str, str] = {}
    name_keywords = _PhraseIndex(f"{source} keywords")
    text_keywords = _PhraseIndex(f"{source} keywords")
    for mask in _strings(data, "masking_terms", source):
        name_keywords.add(mask, None)
        text_keywords.add(mask, None)
    locations: dict[str, _Locations] = {}
    for number, raw in enumerate(organs):
        where = f"{source}: organs[{number}]"
        name, head = _string(raw, "name", where), _string(raw, "head", where)
        alias = raw.get("alias")
        if alias is not None and (not isinstance(alias, str) or not alias.strip()):
            raise ConfigError(f"{where}: 'alias' must be a non-empty string or null")
        expected = f"{head} ({alias})" if alias else head
        if name != expected or name in locations:
            raise ConfigError(f"{where}: the name {name!r} must be unique and read {expected!r} (head and alias)")
        for other in [name, *_strings(raw, "other_names", where)]:
            _claim(by_name, other, name, where)
        _claim(by_head, head, name, where)
        keywords = [head, *_strings(raw, "keywords", where), *_strings(raw, "keywords_zh", where)]
        if alias:
            _claim(by_alias, alias, name, where)
            if " " in alias.strip():  # one-word aliases (Cor, Ren, Lien) are keywords only where listed
                keywords.append(alias)
        for keyword in keywords:
            name_keywords.add(keyword, name)
            text_keywords.add(keyword, name)
        for term in _strings(raw, "condition_terms", where):
            text_keywords.add(term, name)
        locations[name] = _build_locations(raw.get("locations"), ambiguous, where)
    name_keywords.freeze()
    text_keywords.freeze()
    return _Index(by_name, by_head, by_alias, name_keywords, text_keywords, locations)


def _build_locations(raw: Any, ambiguous: set[str], where: str) -> _Locations:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: 'locations' must be a list")
    index = _PhraseIndex(f"{where} locations")
    exact: dict[str, str] = {}
    names: list[str] = []
    for number, item in enumerate(raw):
        item_where = f"{where}.locations[{number}]"
        canonical = _string(item, "name", item_where)
        if canonical in names:
            raise ConfigError(f"{item_where}: the location {canonical!r} is listed twice")
        phrases = [canonical, *_strings(item, "synonyms", item_where)]
        parts = _PARENTHETICAL.match(canonical)
        if parts:
            phrases.append(parts.group(1))
            if _ABBREVIATION.fullmatch(parts.group(2)):
                phrases.append(parts.group(2))
        for phrase in phrases:
            key = phrase_key(phrase)
            if exact.setdefault(key, canonical) != canonical:
                raise ConfigError(f"{item_where}: {phrase!r} already names the location {exact[key]!r}")
            index.add(phrase, canonical, scan_abbreviation=phrase.strip() not in ambiguous)
        names.append(canonical)
    index.freeze()
    return _Locations(tuple(names), exact, index)


def _first_mentions(hits: Iterable[Hit]) -> list[str]:
    seen: dict[str, None] = {}
    for _, _, value in hits:
        if value is not None:
            seen.setdefault(value, None)
    return list(seen)


@functools.lru_cache(maxsize=1)
def load_vocabulary() -> Vocabulary:
    """The packaged organ vocabulary (loaded once per process).

    Raises ``ConfigError`` when the packaged file is missing or malformed.
    """
    resource = resources.files("distill.extraction").joinpath(VOCABULARY_RESOURCE)
    try:
        data = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"cannot read the organ vocabulary distill/{VOCABULARY_RESOURCE}: {exc}; reinstall diag-distill"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"the organ vocabulary distill/{VOCABULARY_RESOURCE} is not a JSON object")
    return Vocabulary.from_data(data, source=f"distill/{VOCABULARY_RESOURCE}")
