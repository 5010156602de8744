"""The shapes of each step's output and of the normalized record.

Both extractors (the LLM one and the offline teacher) return these models, so
the pipeline, normalization and the store never look at raw model text.
Unknown keys from a model are ignored; missing required keys fail validation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Status = Literal["present", "absent", "uncertain"]
FindingKind = Literal["symptom", "exam", "test", "sign"]

STEP_NAMES = ("findings", "organs", "mapping")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class Finding(_Lenient):
    """One finding, quoted verbatim from the note."""

    quote: str = Field(min_length=1, max_length=500)
    status: Status = "present"
    kind: FindingKind = "symptom"

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


class UnitWrapper(BaseModel):
    u_unit: Unit


class NormalizedFinding(BaseModel):
    """One element of ``diagnostic_results_normalized/diagnostic_<N>.json``."""

    s_symptom: str
    status: Status = "present"
    U_unit_set: list[UnitWrapper]
