"""The shapes of each step's output and of the normalized record.

Both extractors (the LLM one and the offline teacher) return these models, so
the pipeline, normalization and the store never look at raw model text.
Unknown keys from a model are ignored; missing required keys fail validation.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, field_validator, model_serializer

Status = Literal["present", "absent", "uncertain"]
FindingKind = Literal["symptom", "exam", "test", "sign"]
#: How sure the physician is of a diagnosis: stated, only suspected (possible, probable, a differential), or
#: excluded (no evidence of, negative for, unlikely).
Certainty = Literal["confirmed", "suspected", "ruled_out"]
#: What a normalized unit records: a ruled-out diagnosis is never linked to a finding.
LinkedCertainty = Literal["confirmed", "suspected"]

_CERTAINTY_WORDS: dict[str, Certainty] = {
    "confirmed": "confirmed", "certain": "confirmed", "definite": "confirmed", "established": "confirmed",
    "suspected": "suspected", "possible": "suspected", "probable": "suspected", "likely": "suspected",
    "uncertain": "suspected", "differential": "suspected", "suspect": "suspected", "provisional": "suspected",
    "ruled out": "ruled_out", "excluded": "ruled_out",
    "unlikely": "ruled_out", "negative": "ruled_out", "absent": "ruled_out",
}  # fmt: skip

STEP_NAMES = ("findings", "organs", "mapping")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class Finding(_Lenient):
    """One finding, quoted verbatim from the note."""

    quote: str = Field(min_length=1, max_length=500)
    status: Status = "present"
    kind: FindingKind = "symptom"
    #: A statement of normal findings ("lungs clear", "心律齐"): recorded, never evidence for a diagnosis.
    normal: bool = False

    @field_validator("status", mode="before")
    @classmethod
    def _lower_status(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("kind", mode="before")
    @classmethod
    def _lower_kind(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return value if value in ("symptom", "exam", "test", "sign") else "sign"
        return value


class FindingsOutput(_Lenient):
    """Step 1."""

    findings: list[Finding]


class OrganDiagnosis(_Lenient):
    """One diagnosis or assessment and the organ it concerns."""

    organ: str = Field(min_length=1, max_length=200)
    diagnosis: str = Field(min_length=1, max_length=500)
    quote: str = Field(default="", max_length=1000)
    certainty: Certainty = "confirmed"

    @field_validator("certainty", mode="before")
    @classmethod
    def _read_certainty(cls, value: object) -> object:
        # Models word it their own way ("possible", "Ruled out"); anything unknown counts as stated.
        if value is None:
            return "confirmed"
        if isinstance(value, str):
            return _CERTAINTY_WORDS.get(" ".join(value.lower().replace("_", " ").replace("-", " ").split()),
                                        "confirmed")
        return value


class OrgansOutput(_Lenient):
    """Step 2."""

    diagnoses: list[OrganDiagnosis]


class Mapping(_Lenient):
    """Step 3: one finding linked to an organ and the locations the text supports."""

    finding: str = Field(min_length=1, max_length=500)
    organ: str = Field(min_length=1, max_length=200)
    diagnosis: str = Field(default="", max_length=500)
    locations: list[str] = Field(default_factory=list)
    basis: str = Field(default="", max_length=1000)
    inference: str = Field(default="", max_length=1000)


class MappingOutput(_Lenient):
    """Step 3."""

    mappings: list[Mapping]


class CombinedOutput(_Lenient):
    """The single-call fallback: all three steps in one answer."""

    findings: list[Finding]
    diagnoses: list[OrganDiagnosis]
    mappings: list[Mapping]


STEP_MODELS: dict[str, type[BaseModel]] = {
    "findings": FindingsOutput,
    "organs": OrgansOutput,
    "mapping": MappingOutput,
    "combined": CombinedOutput,
}


# --- normalized record (the predecessor's shape, kept for downstream users) ----


class OrganRef(BaseModel):
    organName: str  # noqa: N815 - field names are the published record shape
    anatomicalLocations: list[str]  # noqa: N815


class TextualBasis(BaseModel):
    doctorsDiagnosisAndJudgment: str  # noqa: N815
    medicalInference: str  # noqa: N815


class Unit(BaseModel):
    d_diagnosis: str
    o_organ: OrganRef
    b_textual_basis: TextualBasis
    # Added after the predecessor's shape: whether the linked diagnosis is stated or only suspected.
    # ``None`` in a record written before it existed, and then left out again when dumped.
    d_certainty: LinkedCertainty | None = None

    @model_serializer(mode="wrap")
    def _without_unknown_certainty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), "d_certainty")


class UnitWrapper(BaseModel):
    u_unit: Unit


class NormalizedFinding(BaseModel):
    """One element of ``diagnostic_results_normalized/diagnostic_<N>.json``."""

    s_symptom: str
    status: Status = "present"
    U_unit_set: list[UnitWrapper]
    # Added after the predecessor's shape: a statement of normal findings, linked to no diagnosis.
    # ``None`` in a record written before it existed, and then left out again when dumped.
    normal: bool | None = None

    @model_serializer(mode="wrap")
    def _without_unknown_normal(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), "normal")


def _without_none(data: dict[str, Any], key: str) -> dict[str, Any]:
    # A record of the predecessor's shape dumps to exactly that shape: nothing is guessed for it.
    if data.get(key, "") is None:
        del data[key]
    return data
