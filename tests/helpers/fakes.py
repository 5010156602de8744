"""An extractor that answers without a model, for pipeline and worker tests."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel

from distill.extraction.extractor import CallRecord, StepInput, StepResult, TeacherInfo
from distill.extraction.schemas import (
    CombinedOutput,
    Finding,
    FindingsOutput,
    Mapping,
    MappingOutput,
    OrganDiagnosis,
    OrgansOutput,
)


class FakeExtractor:
    """Answers each step with grounded output; raises what ``failures`` says per step."""

    def __init__(self, failures: dict[str, Exception] | None = None) -> None:
        self.info = TeacherInfo(kind="llm", name="api_9", model="fake-model")
        self.failures = failures or {}
        self.calls: Counter[str] = Counter()

    def run(self, step: str, data: StepInput) -> StepResult:
        self.calls[step] += 1
        if step in self.failures:
            raise self.failures[step]
        findings = [Finding(quote="shortness of breath", status="present"), Finding(quote="ankle swelling")]
        diagnoses = [OrganDiagnosis(organ="Heart (Cor)", diagnosis="Congestive heart failure",
                                    quote="Congestive heart failure with left ventricular dysfunction")]
        mappings = [Mapping(finding="ankle swelling", organ="Heart (Cor)", diagnosis="Congestive heart failure",
                            locations=["Left Ventricle (LV)"], basis="Congestive heart failure", inference="fluid")]
        output: BaseModel = {
            "findings": FindingsOutput(findings=findings),
            "organs": OrgansOutput(diagnoses=diagnoses),
            "mapping": MappingOutput(mappings=mappings),
            "combined": CombinedOutput(findings=findings, diagnoses=diagnoses, mappings=mappings),
        }[step]
        call = CallRecord(step=step, attempt=1, latency_s=0.01, status="ok", prompt_tokens=10, completion_tokens=5)
        return StepResult(output=output, calls=[call], raw_text="{}")

    def close(self) -> None:
        pass


class RecordingExtractor(FakeExtractor):
    """A ``FakeExtractor`` that keeps every input text, by step, and can fail on the n-th call of a step.

    ``fail_on`` maps a step to ``(n, exception)``: the n-th call of that step (1-based) raises it.
    """

    def __init__(self, fail_on: dict[str, tuple[int, BaseException]] | None = None) -> None:
        super().__init__()
        self.fail_on = fail_on or {}
        self.inputs: dict[str, list[str]] = {}

    def run(self, step: str, data: StepInput) -> StepResult:
        self.inputs.setdefault(step, []).append(data.text)
        planned = self.fail_on.get(step)
        if planned is not None and len(self.inputs[step]) == planned[0]:
            self.calls[step] += 1
            raise planned[1]
        return super().run(step, data)
