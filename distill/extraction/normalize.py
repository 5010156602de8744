"""Normalization: keep only what the note supports, in the published record shape.

``normalize`` turns the three step outputs of one report into the list written
to ``diagnostic_results_normalized/diagnostic_<N>.json``. Nothing is invented
or padded: every finding quote and textual basis occurs in the
note, every organ is a vocabulary organ that a grounded diagnosis supports,
and every location is one the model gave that the organ's list knows. All
that is left out is listed in ``Normalization.dropped`` with a reason code.
The output depends only on the inputs: the same inputs give byte-identical
JSON, whatever the order of the mappings.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from distill.core.errors import InvalidOutput
from distill.extraction.schemas import (
    Finding,
    FindingsOutput,
    Mapping,
    MappingOutput,
    NormalizedFinding,
    OrganDiagnosis,
    OrgansOutput,
)
from distill.extraction.vocabulary import Vocabulary, load_vocabulary

QUOTE_NOT_IN_TEXT = "quote_not_in_text"
DIAGNOSIS_NOT_IN_TEXT = "diagnosis_not_in_text"
BASIS_NOT_IN_TEXT = "basis_not_in_text"
ORGAN_NOT_IN_VOCABULARY = "organ_not_in_vocabulary"
ORGAN_WITHOUT_DIAGNOSIS = "organ_without_diagnosis"
LOCATION_NOT_IN_ORGAN = "location_not_in_organ"
FINDING_NOT_FOUND = "finding_not_found"
NORMAL_FINDING = "normal_finding"
DIAGNOSIS_RULED_OUT = "diagnosis_ruled_out"
DUPLICATE = "duplicate"

_TYPOGRAPHY = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "‐": "-", "‑": "-", "–": "-", "—": "-"})
_SPACE = re.compile(r"[\s\u200b-\u200d\u2060\ufeff]+")
_SHORT = 160


def _ground(text: str) -> str:
    # Whitespace is removed, not collapsed: models reflow lines and respace punctuation ("pain , nausea").
    return _SPACE.sub("", unicodedata.normalize("NFKC", text).translate(_TYPOGRAPHY).casefold())


def quote_in_text(quote: str, text: str) -> bool:
    """Whether ``quote`` occurs in ``text``, ignoring case and whitespace.

    Both sides are NFKC-normalized (so NBSP and full-width forms compare as
    their plain forms), CRLF and every other whitespace are ignored, and
    typographic quotes and dashes compare as ASCII. An empty quote is never found.
    """
    return _grounded_in(quote, _ground(text))


def find_quote(quote: str, text: str) -> tuple[int, int] | None:
    """The ``(start, end)`` span of ``text`` where ``quote`` first occurs, or ``None``.

    The quote's words must appear in order, separated by any run of whitespace
    (spaces, tabs, line breaks), in any case. Unlike ``quote_in_text`` no
    Unicode or punctuation folding is done, so the span is exact in ``text``.
    An empty quote is never found.
    """
    words = quote.split()
    if not words:
        return None
    found = re.search(r"\s+".join(map(re.escape, words)), text, re.IGNORECASE)
    return found.span() if found is not None else None


def _grounded_in(quote: str, grounded_text: str) -> bool:
    needle = _ground(quote)
    return bool(needle) and needle in grounded_text


@dataclass
class Normalization:
    """The normalized records of one report, what was left out, and counts."""

    records: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    stats: dict[str, int]


@dataclass
class _Finding:
    quote: str
    status: str
    key: str
    position: int
    normal: bool = False

    @property
    def ident(self) -> tuple[str, str]:
        # The same words stated and denied are two findings: one identity per quote and status.
        return (self.key, self.status)


@dataclass
class _Diagnosis:
    diagnosis: str
    quote: str
    key: str
    certainty: str = "confirmed"


#: A unit is one finding (quote and status) linked to one organ.
_UnitKey = tuple[tuple[str, str], str]


@dataclass
class _Unit:
    organ: str
    diagnosis: str
    basis: str
    inference: str
    locations: list[str] = field(default_factory=list)
    certainty: str = "confirmed"


def normalize(
    text: str,
    findings: FindingsOutput,
    organs: OrgansOutput,
    mapping: MappingOutput,
    vocabulary: Vocabulary | None = None,
) -> Normalization:
    """Keep what ``text`` supports of the three step outputs; list the rest in ``dropped``.

    Records come in order of the findings' first occurrence in the note; a
    finding the note supports but no organ link does keeps an empty
    ``U_unit_set``. The same words with two statuses ("no cough" in the
    history, "cough" in the course) stay two records. A normal finding
    (``normal``) and a ruled-out diagnosis are never linked; a unit's
    ``d_certainty`` says whether its diagnosis is confirmed or only suspected.
    Units of one finding come in order of their organ's first mention in the
    note; locations in the order of the organ's location list.
    Raises ``InvalidOutput`` only if a record fails the published schema.
    """
    run = _Run(text, vocabulary or load_vocabulary())
    kept = run.keep_findings(findings.findings)
    diagnoses = run.keep_diagnoses(organs.diagnoses)
    units = run.keep_units(mapping.mappings, kept, diagnoses)
    records = run.records(kept, units)
    run.stats.update(
        findings_kept=len(kept),
        findings_without_units=sum(1 for record in records if not record["U_unit_set"]),
        diagnoses_kept=sum(len(kept_diagnoses) for kept_diagnoses in diagnoses.values()),
        units_kept=len(units),
        organs_kept=len({unit.organ for unit in units.values()}),
        locations_kept=sum(len(unit.locations) for unit in units.values()),
        dropped=len(run.dropped),
    )
    return Normalization(records=records, dropped=run.dropped, stats=run.stats)


class _Run:
    """One normalization: the note's grounded form, the vocabulary and what was dropped."""

    def __init__(self, text: str, vocabulary: Vocabulary) -> None:
        self.text = text
        self.grounded_text = _ground(text)
        self.vocabulary = vocabulary
        self.dropped: list[dict[str, Any]] = []
        self.stats: dict[str, int] = {}

    def in_text(self, quote: str) -> bool:
        return _grounded_in(quote, self.grounded_text)

    def drop(self, step: str, item: dict[str, Any], code: str, explanation: str) -> None:
        self.dropped.append({"step": step, "item": item, "reason": f"{code}: {explanation}"})

    def keep_findings(self, findings: Sequence[Finding]) -> list[_Finding]:
        self.stats["findings_in"] = len(findings)
        kept: dict[tuple[str, str], _Finding] = {}
        for finding in findings:
            item = {"quote": _short(finding.quote), "status": finding.status}
            key = _ground(finding.quote)
            taken = [other.position for other in kept.values() if other.key == key]
            position = self._place(key, taken) if key else -1
            if position < 0:
                self.drop("findings", item, QUOTE_NOT_IN_TEXT, "the quote does not occur in the note")
            elif (key, finding.status) in kept:
                self.drop("findings", item, DUPLICATE, f"the same quote is already kept with status {finding.status}")
            else:
                kept[(key, finding.status)] = _Finding(finding.quote, finding.status, key, position, finding.normal)
        return sorted(kept.values(), key=lambda kept_finding: (kept_finding.position, kept_finding.key,
                                                               kept_finding.status))

    def _place(self, key: str, taken: list[int]) -> int:
        """Where a quote occurs: its first occurrence that another status of the same words has not taken."""
        position = self.grounded_text.find(key)
        first = position
        while position >= 0 and position in taken:
            position = self.grounded_text.find(key, position + 1)
        return position if position >= 0 else first

    def keep_diagnoses(self, diagnoses: Sequence[OrganDiagnosis]) -> dict[str, list[_Diagnosis]]:
        self.stats["diagnoses_in"] = len(diagnoses)
        by_organ: dict[str, list[_Diagnosis]] = {}
        for diagnosis in diagnoses:
            item = {"organ": _short(diagnosis.organ), "diagnosis": _short(diagnosis.diagnosis)}
            key = _ground(diagnosis.diagnosis)
            organ = self.vocabulary.match_organ(diagnosis.organ)
            if organ is None:
                self.drop("organs", item, ORGAN_NOT_IN_VOCABULARY, "the organ is not in the organ vocabulary")
            elif diagnosis.quote and not self.in_text(diagnosis.quote):
                self.drop("organs", item, QUOTE_NOT_IN_TEXT, "the quote does not occur in the note")
            elif not diagnosis.quote and not self.in_text(diagnosis.diagnosis):
                self.drop(
                    "organs", item, DIAGNOSIS_NOT_IN_TEXT, "no quote, and the diagnosis is not worded in the note"
                )
            elif any(other.key == key and other.certainty == diagnosis.certainty for other in by_organ.get(organ, [])):
                self.drop("organs", item, DUPLICATE, f"the same diagnosis of {organ} is already kept")
            else:
                by_organ.setdefault(organ, []).append(
                    _Diagnosis(diagnosis.diagnosis, diagnosis.quote, key, diagnosis.certainty))
        return by_organ

    def keep_units(
        self, mappings: Sequence[Mapping], findings: list[_Finding], diagnoses: dict[str, list[_Diagnosis]]
    ) -> dict[_UnitKey, _Unit]:
        self.stats["mappings_in"] = len(mappings)
        self.stats["locations_in"] = sum(len(m.locations) for m in mappings)
        units: dict[_UnitKey, _Unit] = {}
        # A canonical order makes merges and the dropped list independent of the model's mapping order.
        for mapping in sorted(mappings, key=_mapping_order):
            item = {"finding": _short(mapping.finding), "organ": _short(mapping.organ)}
            finding = _match_finding(mapping.finding, findings)
            organ = self.vocabulary.match_organ(mapping.organ)
            if finding is None:
                if self.in_text(mapping.finding):
                    self.drop("mapping", item, FINDING_NOT_FOUND, "the finding is not among the kept findings")
                else:
                    self.drop("mapping", item, QUOTE_NOT_IN_TEXT, "the finding does not occur in the note")
            elif organ is None:
                self.drop("mapping", item, ORGAN_NOT_IN_VOCABULARY, "the organ is not in the organ vocabulary")
            elif finding.normal:
                self.drop("mapping", item, NORMAL_FINDING, "a normal finding is evidence for no diagnosis")
            elif organ not in diagnoses:
                self.drop("mapping", item, ORGAN_WITHOUT_DIAGNOSIS, f"no kept diagnosis concerns {organ}")
            elif _names_ruled_out(mapping.diagnosis, diagnoses[organ]):
                self.drop("mapping", item, DIAGNOSIS_RULED_OUT, f"the diagnosis of {organ} it names is ruled out")
            elif mapping.basis and not self.in_text(mapping.basis):
                self.drop("mapping", item, BASIS_NOT_IN_TEXT, "the textual basis does not occur in the note")
            else:
                locations = self.keep_locations(organ, mapping.locations)
                unit = units.get((finding.ident, organ))
                if unit is not None:
                    unit.locations.extend(loc for loc in locations if loc not in unit.locations)
                    self.drop("mapping", item, DUPLICATE, "same finding and organ as another mapping; locations merged")
                    continue
                standing = [d for d in diagnoses[organ] if d.certainty != "ruled_out"]
                chosen = _choose_diagnosis(mapping.diagnosis, standing)
                basis = mapping.basis or chosen.quote or chosen.diagnosis
                units[(finding.ident, organ)] = _Unit(organ, chosen.diagnosis, basis, mapping.inference, locations,
                                                      chosen.certainty)
        return units

    def keep_locations(self, organ: str, given: Sequence[str]) -> list[str]:
        kept: list[str] = []
        for location in given:
            canonical = self.vocabulary.match_location(organ, location)
            if canonical is None:
                item = {"organ": organ, "location": _short(location)}
                self.drop("mapping", item, LOCATION_NOT_IN_ORGAN, f"not a location of {organ} in the vocabulary")
            elif canonical not in kept:
                kept.append(canonical)
        return kept

    def records(self, findings: list[_Finding], units: dict[_UnitKey, _Unit]) -> list[dict[str, Any]]:
        by_finding: dict[tuple[str, str], list[_Unit]] = {}
        for (ident, _), unit in units.items():
            by_finding.setdefault(ident, []).append(unit)
        organ_rank: dict[str, int] = {}
        if any(len(group) > 1 for group in by_finding.values()):  # the note is scanned only when an order is needed
            organ_rank = {organ: rank for rank, organ in enumerate(self.vocabulary.organs_in_text(self.text))}
        records = []
        for finding in findings:
            finding_units = sorted(
                by_finding.get(finding.ident, []),
                key=lambda unit: (organ_rank.get(unit.organ, len(organ_rank)), unit.organ),
            )
            record = {
                "s_symptom": finding.quote,
                "status": finding.status,
                "U_unit_set": [self._unit_record(unit) for unit in finding_units],
                "normal": finding.normal,
            }
            try:
                NormalizedFinding.model_validate(record)
            except ValidationError as exc:
                raise InvalidOutput(f"a normalized record does not fit the published schema: {exc}") from exc
            records.append(record)
        return records

    def _unit_record(self, unit: _Unit) -> dict[str, Any]:
        order = {name: rank for rank, name in enumerate(self.vocabulary.locations(unit.organ))}
        return {
            "u_unit": {
                "d_diagnosis": unit.diagnosis,
                "o_organ": {
                    "organName": unit.organ,
                    "anatomicalLocations": sorted(unit.locations, key=order.__getitem__),
                },
                "b_textual_basis": {
                    "doctorsDiagnosisAndJudgment": unit.basis,
                    "medicalInference": unit.inference,
                },
                "d_certainty": unit.certainty,
            }
        }


def _short(text: str) -> str:
    return text if len(text) <= _SHORT else text[: _SHORT - 1] + "…"


def _mapping_order(mapping: Mapping) -> tuple[Any, ...]:
    raw = (mapping.finding, mapping.organ, mapping.diagnosis, mapping.basis, mapping.inference)
    return (
        *(_ground(value) for value in raw),
        tuple(_ground(location) for location in mapping.locations),
        *raw,
        tuple(mapping.locations),
    )


def _match_finding(quote: str, findings: list[_Finding]) -> _Finding | None:
    """The kept finding a mapping refers to: the same quote, else the closest one containing or contained in it."""
    key = _ground(quote)
    if not key:
        return None
    related = [finding for finding in findings if key in finding.key or finding.key in key]
    if not related:
        return None
    # Of the same words stated and denied, a link means the stated one.
    return min(related, key=lambda finding: (abs(len(finding.key) - len(key)), _LINK_PREFERENCE[finding.status],
                                             finding.normal, finding.position, finding.key))


_LINK_PREFERENCE = {"present": 0, "uncertain": 1, "absent": 2}


def _names_ruled_out(wanted: str, kept: list[_Diagnosis]) -> bool:
    """Whether the mapping's diagnosis is one the note rules out (and not also stated), or the organ has no other."""
    if all(diagnosis.certainty == "ruled_out" for diagnosis in kept):
        return True
    target = _ground(wanted)
    same = [diagnosis for diagnosis in kept if diagnosis.key == target]
    return bool(same) and all(diagnosis.certainty == "ruled_out" for diagnosis in same)


def _choose_diagnosis(wanted: str, kept: list[_Diagnosis]) -> _Diagnosis:
    """The kept diagnosis the mapping names (same wording, else one containing the other), else the first."""
    target = _ground(wanted)
    if target:
        for diagnosis in kept:
            if diagnosis.key == target:
                return diagnosis
        for diagnosis in kept:
            if target in diagnosis.key or diagnosis.key in target:
                return diagnosis
    return kept[0]
