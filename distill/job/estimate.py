"""What a job will cost before it spends anything: the pending reports of a range and, from a sample of
their real prompts (no call made), the expected input, cached and output tokens per report and in total.

How tokens are counted: an approximation, documented here and printed with the estimate. A character
outside ASCII (Chinese, accents) counts one token; ASCII text counts ``ASCII_CHARS_PER_TOKEN`` characters a
token, close to what the common BPE tokenizers give for English clinical prose. Output tokens are not
knowable before the calls: each step counts ``OUTPUT_TOKENS`` (typical answers on the sample notes), and
the mapping prompt carries the first two steps' answers, counted at that size. Cached tokens assume an
endpoint with an automatic prefix cache: the report-independent part of every call (rules, organ names,
steps) and, for the second and third call of a report, the whole shared prefix with the note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from distill.core.config import Settings
from distill.core.errors import ReportError
from distill.core.prices import Price
from distill.extraction.extractor import StepInput
from distill.extraction.prompts import MAX_NOTE_CHARS, build_messages
from distill.extraction.report import read_report
from distill.job.claims import report_path, scan_range
from distill.results.store import OutputStore

ASCII_CHARS_PER_TOKEN = 4
#: Expected answer tokens per step.
OUTPUT_TOKENS = {"findings": 400, "organs": 150, "mapping": 500}
STEPS = ("findings", "organs", "mapping")
_FILLER = "x" * ASCII_CHARS_PER_TOKEN  # stands in for an earlier answer of known size


def count_tokens(text: str) -> int:
    """The approximate token count of ``text`` (see the module docstring)."""
    ascii_chars = sum(1 for c in text if c < "\x80")
    return -(-ascii_chars // ASCII_CHARS_PER_TOKEN) + (len(text) - ascii_chars)


def _prompt_text(messages: list[dict[str, str]]) -> str:
    return "".join(f"{m['role']}\n{m['content']}\n" for m in messages)


def _common_length(a: str, b: str) -> int:
    n, limit = 0, min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def report_tokens(number: int, text: str) -> tuple[int, int, int]:
    """(input, cached, output) tokens of one report's three calls, from the prompts the job would send."""
    report = SimpleNamespace(number=number)
    prompts: list[str] = []
    for step in STEPS:
        messages = build_messages(step, StepInput(report=report, text=text))  # type: ignore[arg-type]
        if step == "mapping":  # the earlier answers travel in the mapping prompt
            earlier = _FILLER * (OUTPUT_TOKENS["findings"] + OUTPUT_TOKENS["organs"])
            messages[-1]["content"] += "\n" + earlier
        prompts.append(_prompt_text(messages))
    # What every report shares: the part before the report number, the same for any other report.
    other = _prompt_text(build_messages("findings", StepInput(report=SimpleNamespace(number=number + 1),  # type: ignore[arg-type]
                                                              text="")))
    paid = cached = 0
    for i, prompt in enumerate(prompts):
        shared = max([_common_length(prompt, other), *(_common_length(prompt, p) for p in prompts[:i])])
        paid += count_tokens(prompt)
        cached += count_tokens(prompt[:shared])
    return paid, cached, sum(OUTPUT_TOKENS.values())


@dataclass
class Estimate:
    """The estimate of one range."""

    pending: int
    sampled: int
    unreadable: int = 0
    long_notes: int = 0  # sampled notes over MAX_NOTE_CHARS: sent in parts, so their estimate is low
    per_report: dict[str, float] = field(default_factory=dict)  # input, cached, output tokens
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)  # by model: price, per report, total

    def total(self, name: str) -> float:
        return self.per_report.get(name, 0.0) * self.pending

    def lines(self) -> list[str]:
        if not self.pending:
            return ["pending reports: 0 (nothing to estimate)"]
        out = [f"pending reports: {self.pending} (sample of {self.sampled}"
               + (f", {self.unreadable} unreadable left out" if self.unreadable else "") + ")"]
        if not self.per_report:
            return [*out, "no sampled report could be read: no token estimate"]
        p = self.per_report
        share = p["cached"] / p["input"] if p["input"] else 0.0
        out += [
            f"tokens per report: input {p['input']:,.0f} ({p['cached']:,.0f} cached, {share:.0%}), "
            f"output {p['output']:,.0f}",
            f"tokens in total:   input {self.total('input'):,.0f} ({self.total('cached'):,.0f} cached), "
            f"output {self.total('output'):,.0f}",
        ]
        for model, cost in self.costs.items():
            if cost["price"] is None:
                out.append(f"cost with {model}: no price (set MODEL_PRICES[{model!r}] in the configuration)")
            else:
                out.append(f"cost with {model}: {cost['per_report']:.6f} per report, {cost['total']:.2f} in total "
                           f"({', '.join(cost['endpoints'])})")
        if self.long_notes:
            out.append(f"note: {self.long_notes} sampled note(s) exceed {MAX_NOTE_CHARS:,} characters and are sent "
                       "in parts; their cost is underestimated")
        out.append(f"tokens counted approximately: {ASCII_CHARS_PER_TOKEN} ASCII characters or 1 other character a "
                   f"token; output {sum(OUTPUT_TOKENS.values())} tokens a report assumed; cached as an automatic "
                   "prefix cache would bill them")
        return out


def _sample(numbers: list[int], size: int) -> list[int]:
    if len(numbers) <= size:
        return numbers
    step = len(numbers) / size
    return [numbers[int(i * step)] for i in range(size)]


def estimate_range(settings: Settings, start: int, end: int | None, sample: int) -> Estimate:
    """Estimate the pending reports of ``start``..``end`` in ``settings.input_dir`` (no call is made)."""
    pending = list(scan_range(settings.input_dir, OutputStore(settings.output_dir), start, end).pending())
    chosen = _sample(pending, sample)
    result = Estimate(pending=len(pending), sampled=len(chosen))
    sums = [0, 0, 0]
    read = 0
    for number in chosen:
        path = report_path(settings.input_dir, number)
        try:
            if path is None:
                raise FileNotFoundError(number)
            text = read_report(path, max_bytes=settings.max_report_bytes).text
        except (ReportError, OSError):
            result.unreadable += 1
            continue
        read += 1
        result.long_notes += len(text) > MAX_NOTE_CHARS
        for i, value in enumerate(report_tokens(number, text)):
            sums[i] += value
    if read:
        result.per_report = {"input": sums[0] / read, "cached": sums[1] / read, "output": sums[2] / read}
        result.costs = _costs(settings, result.per_report, len(pending))
    return result


def _costs(settings: Settings, per_report: dict[str, float], pending: int) -> dict[str, dict[str, Any]]:
    costs: dict[str, dict[str, Any]] = {}
    for endpoint in settings.endpoints.values():
        if endpoint.is_local:
            continue
        entry = costs.setdefault(endpoint.model, {"price": settings.prices.get(endpoint.model), "endpoints": []})
        entry["endpoints"].append(endpoint.name)
    for entry in costs.values():
        price: Price | None = entry["price"]
        if price is not None:
            entry["per_report"] = price.cost(round(per_report["input"]), round(per_report["cached"]),
                                             round(per_report["output"]))
            entry["total"] = entry["per_report"] * pending
    return costs

