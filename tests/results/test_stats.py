"""The summary of an output folder (distill.results.stats and the ``stats`` command)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.cli.stats_cmd import command as stats_command
from distill.core.errors import ConfigError
from distill.results.stats import BoundedCounter, collect_stats, finding_key

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "outputs"


@pytest.fixture(scope="module")
def summary() -> dict:
    return collect_stats(FIXTURE).to_dict()


def test_reports_by_state(summary: dict) -> None:
    assert summary["reports"] == {"done": 9, "failed": 2, "incomplete": 1, "corrupt": 1, "total": 13}


def test_failed_by_class(summary: dict) -> None:
    assert summary["failed_by_class"] == {"api_unavailable": 1, "bad_input": 1}


def test_findings_per_report(summary: dict) -> None:
    assert summary["findings_per_report"] == {
        "reports": 9, "total": 13, "mean": 1.444, "median": 1, "p90": 3, "max": 3,
        "histogram": {"0": 1, "1": 5, "2": 1, "3": 2},
    }
    assert summary["findings_by_status"] == {"present": 9, "absent": 4}
    assert summary["units"] == {"total": 9, "mean_per_report": 1.0}


def test_organ_histogram_counts_units_most_frequent_first(summary: dict) -> None:
    assert summary["organs"] == {"Heart (Cor)": 7, "Brain (Encephalon)": 1, "Gallbladder (Vesica biliaris)": 1}


def test_most_frequent_findings(summary: dict) -> None:
    top = summary["top_findings"]
    assert top[:3] == [{"finding": "chest pain", "count": 3}, {"finding": "fever", "count": 2},
                       {"finding": "shortness of breath on exertion", "count": 2}]
    assert {"finding": "headache", "count": 1} in top
    assert summary["top_findings_exact"] is True


def test_share_of_findings_dropped_by_grounding(summary: dict) -> None:
    assert summary["grounding"] == {
        "findings_in": 16, "findings_kept": 13, "findings_merged": 1, "findings_dropped": 2, "dropped_share": 0.125,
        "dropped_by_reason": {"quote_not_in_text": 2, "duplicate": 1, "location_not_supported": 1},
        "dropped_by_step": {"findings": 3, "mapping": 1},
    }


def test_tokens_by_endpoint_include_failed_reports(summary: dict) -> None:
    assert summary["tokens_by_endpoint"] == {
        "api_1": {"reports_done": 7, "reports_failed": 1, "calls": 21, "prompt_tokens": 0, "completion_tokens": 0,
                  "cached_tokens": 0, "total_tokens": 0, "cost": 0.0},
        "api_2": {"reports_done": 2, "reports_failed": 1, "calls": 8, "prompt_tokens": 2100,
                  "completion_tokens": 400, "cached_tokens": 0, "total_tokens": 2500,
                  "cost": 0.0},
    }
    assert sorted(summary["tokens_by_model"]) == ["local-rules-2", "qwen2.5-7b-instruct"]
    assert summary["tokens_by_model"]["qwen2.5-7b-instruct"]["prompt_tokens"] == 2100


def test_corrupt_file_is_named_in_problems(summary: dict) -> None:
    assert len(summary["problems"]) == 1
    assert "diagnostic_results_normalized/diagnostic_10005.json: not valid JSON" in summary["problems"][0]


def test_grounding_without_validation_stats_counts_dropped_findings(tmp_path: Path) -> None:
    root = tmp_path / "out"
    shutil.copytree(FIXTURE, root)
    raw_path = root / "diagnostic_results" / "diagnostic_10001.json"
    raw = json.loads(raw_path.read_text(encoding="utf-8"))
    del raw["validation"]["stats"]
    raw_path.write_text(json.dumps(raw), encoding="utf-8")
    grounding = collect_stats(root).to_dict()["grounding"]
    assert (grounding["findings_in"], grounding["findings_kept"], grounding["findings_dropped"]) == (16, 13, 2)


@pytest.mark.parametrize(
    ("text", "key"),
    [("Chest Pain.", "chest pain"), ("  shortness   of\nbreath ", "shortness of breath"), ("胸痛。", "胸痛。")],
)
def test_finding_key_groups_spelling_variants(text: str, key: str) -> None:
    assert finding_key(text) == key


def test_bounded_counter_keeps_the_frequent_and_says_it_is_approximate() -> None:
    counter = BoundedCounter(capacity=2)
    for _ in range(10):
        counter.add("common")
    for name in ("a", "b", "c", "d", "e"):
        counter.add(name)
    assert counter.most_common(1) == [("common", 10)]
    assert len(counter.counts) <= 4
    assert counter.exact is False


@pytest.mark.parametrize(("name", "message"), [("nope", "does not exist"), (".", "not a diag-distill output folder")])
def test_not_an_output_folder_raises_config_error(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        collect_stats(tmp_path / name)


def test_command_json_prints_one_object(summary: dict) -> None:
    result = CliRunner().invoke(stats_command, ["--output-dir", str(FIXTURE), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {**summary, "changed_notes": []}  # the fixture's notes are elsewhere


def test_command_prints_tables(tmp_path: Path) -> None:
    result = CliRunner().invoke(stats_command, ["--output-dir", str(FIXTURE)])
    assert result.exit_code == 0, result.output
    for text in ("Reports", "Heart (Cor)", "chest pain", "12.5%", "api_2", "qwen2.5-7b-instruct"):
        assert text in result.stdout


def test_command_missing_folder_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(stats_command, ["--output-dir", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr


def test_the_grounding_table_accounts_for_every_proposed_finding() -> None:
    import re

    result = CliRunner().invoke(stats_command, ["--output-dir", str(FIXTURE)], terminal_width=200)
    assert "merged (repeats)" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "12.5%" in line)
    proposed, kept, merged, dropped = (int(n) for n in re.findall(r"\b\d+\b", row)[:4])
    assert (proposed, kept, merged, dropped) == (16, 13, 1, 2) and kept + merged + dropped == proposed


def test_cached_tokens_and_cost_are_summed_and_printed_per_endpoint(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    shutil.copytree(FIXTURE, out)
    for number, cost in ((10006, 0.25), (10007, 0.5)):
        path = out / "diagnostic_results" / f"diagnostic_{number}.json"
        raw = json.loads(path.read_text())
        raw["usage"]["cost"] = cost
        for call in raw["calls"]:
            call["cached_tokens"] = 100
        path.write_text(json.dumps(raw))
    summary = collect_stats(out).to_dict()
    api_2 = summary["tokens_by_endpoint"]["api_2"]
    assert api_2["cost"] == pytest.approx(0.75) and api_2["cached_tokens"] > 0
    result = CliRunner().invoke(stats_command, ["--output-dir", str(out)])
    assert result.exit_code == 0 and "cost" in result.stdout and "0.7500" in result.stdout


# --- per teacher --------------------------------------------------------------------------


def test_every_figure_is_also_given_per_teacher_and_the_teachers_add_up(summary: dict) -> None:
    parts = summary["by_teacher"]
    assert set(parts) == {"local", "qwen2.5-7b-instruct"}
    for part in parts.values():
        assert set(part) == set(summary) - {"by_teacher"}  # the same figures, for that teacher's records
    for state in ("done", "failed"):
        assert sum(p["reports"][state] for p in parts.values()) == summary["reports"][state]
    assert sum(p["findings_per_report"]["total"] for p in parts.values()) == summary["findings_per_report"]["total"]
    assert sum(p["units"]["total"] for p in parts.values()) == summary["units"]["total"]
    assert sum(p["grounding"]["findings_in"] for p in parts.values()) == summary["grounding"]["findings_in"]
    qwen = parts["qwen2.5-7b-instruct"]
    assert set(qwen["tokens_by_model"]) == {"qwen2.5-7b-instruct"}
    assert qwen["reports"]["done"] == qwen["tokens_by_model"]["qwen2.5-7b-instruct"]["reports_done"]


def test_command_prints_a_teachers_table_and_each_teachers_tables() -> None:
    result = CliRunner().invoke(stats_command, ["--output-dir", str(FIXTURE)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Teachers" in result.stdout and "qwen2.5-7b-instruct │" in result.stdout
    after = result.stdout.split("teacher qwen2.5-7b-instruct", 1)
    assert len(after) == 2 and "teacher local" in after[0]
    assert "Reports" in after[1] and "Grounding" in after[1] and "Tokens by model" in after[1]
