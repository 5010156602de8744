"""``estimate``: pending reports, tokens from real prompts, and a cost from the price table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from distill.cli.estimate_cmd import command as estimate_command
from distill.core.prices import Price
from distill.extraction.prompts import build_messages
from distill.job.estimate import OUTPUT_TOKENS, count_tokens, report_tokens
from tests.helpers.notes import write_notes

PRICE = {"input": 0.5, "cached_input": 0.1, "output": 2.0}


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    config = tmp_path / "system_config.py"
    config.write_text("from distill.core.config import endpoint_table\nMULTI_API_CONFIG = endpoint_table(3)\n"
                      f"MODEL_PRICES = {{'priced-model': {PRICE!r}}}\n")
    monkeypatch.setenv("DIAG_CONFIG", str(config))
    monkeypatch.setenv("DIAG_API_KEY", "sk-estimate")
    monkeypatch.setenv("DIAG_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("DIAG_MODEL", "priced-model")
    monkeypatch.setenv("DIAG_API_3_MODEL", "unpriced-model")
    write_notes(tmp_path / "in", list(range(100, 110)))
    out = tmp_path / "out" / "diagnostic_results"
    out.mkdir(parents=True)
    (out / "diagnostic_100.json").write_text("{}")  # done: not pending
    return {"input": tmp_path / "in", "output": tmp_path / "out"}


def test_estimate_prints_pending_reports_tokens_and_a_cost_per_priced_teacher(folders: dict[str, Any]) -> None:
    result = CliRunner().invoke(estimate_command, ["100", "--end", "108", "--sample", "4", "--input-dir",
                                                   str(folders["input"]), "--output-dir", str(folders["output"])])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "pending reports: 8 (sample of 4)"
    assert lines[1].startswith("tokens per report: input ") and "cached" in lines[1]
    priced = next(line for line in lines if line.startswith("cost with priced-model: "))
    assert "per report" in priced and "(api_1, api_2)" in priced
    assert "cost with unpriced-model: no price" in result.output
    assert "tokens counted approximately" in lines[-1]


def test_report_tokens_come_from_the_real_prompts_and_price_applies() -> None:
    note = "HISTORY: Cough and fever for three days.\nASSESSMENT: Community-acquired pneumonia.\n"
    paid, cached, output = report_tokens(7, note)
    findings = build_messages("findings", _input(7, note))
    first = count_tokens("".join(f"{m['role']}\n{m['content']}\n" for m in findings))
    assert paid > 3 * first - 50 and output == sum(OUTPUT_TOKENS.values())
    # The second and third calls reuse the whole shared system message; the first only the common rules.
    system = count_tokens("system\n" + findings[0]["content"] + "\n")
    assert 2 * system < cached < 3 * system
    assert Price(**PRICE).cost(paid, cached, output) < Price(**PRICE).cost(paid, 0, output)


def test_tokens_are_counted_four_ascii_characters_or_one_other_character_each() -> None:
    assert count_tokens("abcdefgh") == 2 and count_tokens("abcde") == 2
    assert count_tokens("胸痛三天") == 4 and count_tokens("") == 0


def _input(number: int, text: str) -> Any:
    from types import SimpleNamespace

    from distill.extraction.extractor import StepInput

    return StepInput(report=SimpleNamespace(number=number), text=text)  # type: ignore[arg-type]
