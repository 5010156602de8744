"""Export of an output folder as training data (distill.results.export and the ``export`` command)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from distill.cli.export_cmd import command as export_command
from distill.cli.options import progress_bar
from distill.core.errors import ConfigError
from distill.results.export import ExportOptions, export_dataset, split_of, validation_path
from distill.results.outputs import iter_outputs

#: The fixture folder holds two teachers' records; export refuses a mix nobody chose.
EVERY = ("all",)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "outputs"
MTSAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mtsamples_dev"
NOTES = FIXTURE / "notes"
EXPECTED = FIXTURE / "expected"
SPLIT_OPTIONS = {"val_fraction": 0.5, "seed": "0"}  # the expected files were built with these


def expected_text(name: str) -> str:
    """An expected file with the current instruction text and prompt version filled in."""
    text = (EXPECTED / name).read_text(encoding="utf-8")
    if "{{" not in text:
        return text
    from distill.extraction.prompts import INSTRUCTION_TEXT, PROMPT_VERSION

    text = text.replace('"{{INSTRUCTION_TEXT}}"', json.dumps(INSTRUCTION_TEXT, ensure_ascii=False))
    return text.replace('"{{PROMPT_VERSION}}"', json.dumps(PROMPT_VERSION))


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def exported_reports(to: Path) -> dict[int, str]:
    """Report number -> split, from both files of an sft-chat export."""
    found: dict[int, str] = {}
    for path in (to, validation_path(to)):
        for line in read_lines(path):
            found[line["metadata"]["report"]] = line["metadata"]["split"]
    return found


def copy_fixture(tmp_path: Path) -> Path:
    """A writable copy of the fixture whose raw files point at the copied notes (as a real job's would)."""
    root = tmp_path / "out"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("expected"))
    for raw_path in (root / "diagnostic_results").glob("diagnostic_*.json"):
        raw = json.loads(raw_path.read_text(encoding="utf-8"))
        raw["report"]["source"] = str(root / "notes" / Path(raw["report"]["source"]).name)
        raw_path.write_text(json.dumps(raw, ensure_ascii=False, indent=2), encoding="utf-8")
    return root


def add_report(root: Path, number: int, note: str, *, units: int = 1) -> None:
    """A done report with its note, as the store would leave it."""
    path = root / "notes" / f"report_{number}.txt"
    path.write_text(note, encoding="utf-8")
    unit = {"u_unit": {"d_diagnosis": "d", "o_organ": {"organName": "Heart (Cor)", "anatomicalLocations": []},
                       "b_textual_basis": {"doctorsDiagnosisAndJudgment": "b", "medicalInference": "i"}}}
    normalized = [{"s_symptom": "pain", "status": "present", "U_unit_set": [unit] * units}]
    raw = {"format": "diag-distill/raw-v1",
           "report": {"number": number, "source": str(path), "sha256": hashlib.sha256(note.encode()).hexdigest()},
           "teacher": {"kind": "local", "endpoint": "api_1", "model": "local-rules-2"},
           "prompt_version": "diag-prompts-1", "normalized": normalized}
    (root / "diagnostic_results_normalized" / f"diagnostic_{number}.json").write_text(json.dumps(normalized))
    (root / "diagnostic_results" / f"diagnostic_{number}.json").write_text(json.dumps(raw))


# --- exact lines from the fixture folder -----------------------------------------------


@pytest.mark.parametrize("fmt", ["sft-chat", "records"])
def test_fixture_export_writes_the_expected_lines(tmp_path: Path, fmt: str) -> None:
    to = tmp_path / "train.jsonl"
    export_dataset(FIXTURE, to, ExportOptions(teachers=EVERY, fmt=fmt, source_dir=NOTES, **SPLIT_OPTIONS))  # type: ignore[arg-type]
    assert to.read_text(encoding="utf-8") == expected_text(f"{fmt}.jsonl")
    assert validation_path(to).read_text(encoding="utf-8") == expected_text(f"{fmt}.val.jsonl")


@pytest.mark.parametrize(
    ("fmt", "exported", "skipped"),
    [
        pytest.param("sft-chat", 4, {"failed": 2, "incomplete": 1, "corrupt": 1, "empty": 2, "duplicate": 1,
                                     "source_changed": 1, "source_missing": 1}, id="sft-chat"),
        pytest.param("records", 6, {"failed": 2, "incomplete": 1, "corrupt": 1, "empty": 2, "duplicate": 1},
                     id="records-needs-no-note"),
    ],
)
def test_fixture_export_counts_every_report_once(tmp_path: Path, fmt: str, exported: int,
                                                 skipped: dict[str, int]) -> None:
    summary = export_dataset(FIXTURE, tmp_path / "t.jsonl",
                             ExportOptions(teachers=EVERY, fmt=fmt, source_dir=NOTES, **SPLIT_OPTIONS))  # type: ignore[arg-type]
    assert summary.exported == exported
    assert summary.skipped == skipped
    assert summary.reports_seen == 13 == exported + sum(skipped.values())
    assert summary.train_reports + summary.val_reports == exported


def test_sft_line_has_chat_shape_and_metadata(tmp_path: Path) -> None:
    from distill.extraction.prompts import INSTRUCTION_TEXT, PROMPT_VERSION

    to = tmp_path / "t.jsonl"
    export_dataset(FIXTURE, to, ExportOptions(teachers=EVERY, source_dir=NOTES, val_fraction=0.0))
    line = next(x for x in read_lines(to) if x["metadata"]["report"] == 10001)
    assert [m["role"] for m in line["messages"]] == ["system", "user", "assistant"]
    assert line["messages"][0]["content"] == INSTRUCTION_TEXT
    assert line["messages"][1]["content"] == (NOTES / "report_10001.txt").read_text(encoding="utf-8")
    normalized = json.loads((FIXTURE / "diagnostic_results_normalized" / "diagnostic_10001.json").read_text())
    assert json.loads(line["messages"][2]["content"]) == normalized
    assert line["metadata"]["prompt_version"] == PROMPT_VERSION
    assert line["metadata"]["split"] == "train"


# --- what is left out ---------------------------------------------------------------


def test_corrupt_output_file_is_reported_and_skipped_not_fatal(tmp_path: Path) -> None:
    summary = export_dataset(FIXTURE, tmp_path / "t.jsonl", ExportOptions(teachers=EVERY, fmt="records"))
    corrupt = [p for p in summary.problems if p.kind == "corrupt"]
    assert [p.number for p in corrupt] == [10005]
    assert "diagnostic_results_normalized/diagnostic_10005.json" in corrupt[0].detail
    assert "not valid JSON" in corrupt[0].detail
    assert summary.exported == 6  # the reports after it were still exported


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        pytest.param(lambda raw: {"no": "report"}, "no 'report' object", id="raw-not-a-result"),
        pytest.param(lambda raw: {**raw, "report": {**raw["report"], "number": 1}}, "names report 1", id="wrong-number"),
        pytest.param(lambda raw: {**raw, "report": {**raw["report"], "sha256": "xyz"}}, "sha256", id="bad-sha256"),
    ],
)
def test_unusable_raw_file_is_corrupt(tmp_path: Path, damage: Any, reason: str) -> None:
    root = copy_fixture(tmp_path)
    path = root / "diagnostic_results" / "diagnostic_10006.json"
    path.write_text(json.dumps(damage(json.loads(path.read_text(encoding="utf-8")))), encoding="utf-8")
    entry = next(e for e in iter_outputs(root) if e.number == 10006)
    assert entry.state == "corrupt"
    assert reason in entry.problem


def test_changed_or_missing_note_is_never_exported(tmp_path: Path) -> None:
    to = tmp_path / "t.jsonl"
    summary = export_dataset(FIXTURE, to, ExportOptions(teachers=EVERY, source_dir=NOTES, val_fraction=0.0))
    assert 10007 not in exported_reports(to) and 10008 not in exported_reports(to)
    assert "four days" not in to.read_text(encoding="utf-8")  # the edited text of 10007's note
    kinds = {p.number: p.kind for p in summary.problems}
    assert kinds[10007] == "source_changed" and kinds[10008] == "source_missing"


def test_recorded_source_path_is_used_without_input_dir(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path)
    to = tmp_path / "t.jsonl"
    summary = export_dataset(root, to, ExportOptions(teachers=EVERY, **SPLIT_OPTIONS))  # type: ignore[arg-type]
    assert summary.exported == 4
    assert to.read_text(encoding="utf-8") == expected_text("sft-chat.jsonl")


def test_duplicate_notes_appear_once_keeping_the_lowest_number(tmp_path: Path) -> None:
    to = tmp_path / "t.jsonl"
    export_dataset(FIXTURE, to, ExportOptions(teachers=EVERY, source_dir=NOTES))
    reports = exported_reports(to)
    assert 10001 in reports and 10002 not in reports


def test_duplicate_of_an_unexportable_note_takes_its_place(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path)
    (root / "notes" / "report_10001.txt").unlink()  # 10001 cannot be exported; its twin 10002 can
    to = tmp_path / "t.jsonl"
    summary = export_dataset(root, to, ExportOptions(teachers=EVERY))
    assert 10002 in exported_reports(to)
    assert "duplicate" not in summary.skipped


@pytest.mark.parametrize(
    ("options", "present", "absent"),
    [
        pytest.param({}, {10001, 10012}, {10004, 10011}, id="defaults"),
        pytest.param({"include_absent": False}, {10001}, {10012}, id="no-include-absent"),
        pytest.param({"min_units": 0}, {10004, 10011}, set(), id="min-units-0"),
        pytest.param({"min_units": 2}, {10001}, {10006, 10010, 10012}, id="min-units-2"),
    ],
)
def test_unit_filters_choose_reports(tmp_path: Path, options: dict[str, Any], present: set[int],
                                     absent: set[int]) -> None:
    to = tmp_path / "t.jsonl"
    export_dataset(FIXTURE, to, ExportOptions(teachers=EVERY, source_dir=NOTES, **options))
    reports = exported_reports(to)
    assert present <= reports.keys()
    assert not absent & reports.keys()


def test_no_include_absent_drops_absent_findings_from_the_answer(tmp_path: Path) -> None:
    to = tmp_path / "t.jsonl"
    export_dataset(FIXTURE, to, ExportOptions(teachers=EVERY, source_dir=NOTES, include_absent=False, val_fraction=0.0))
    line = next(x for x in read_lines(to) if x["metadata"]["report"] == 10001)
    answer = json.loads(line["messages"][2]["content"])
    assert [f["s_symptom"] for f in answer] == ["chest pain", "shortness of breath on exertion"]


# --- the split ------------------------------------------------------------------------


def test_split_is_stable_when_reports_are_added(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path)
    for number in range(10100, 10140):
        add_report(root, number, f"Note {number}: chest pain.\n")
    first = tmp_path / "first.jsonl"
    export_dataset(root, first, ExportOptions(teachers=EVERY, val_fraction=0.3, seed="s"))
    for number in [10050, *range(10200, 10400)]:
        add_report(root, number, f"Note {number}: chest pain again.\n")
    second = tmp_path / "second.jsonl"
    export_dataset(root, second, ExportOptions(teachers=EVERY, val_fraction=0.3, seed="s"))
    before, after = exported_reports(first), exported_reports(second)
    assert len(after) == len(before) + 201
    assert {n: after[n] for n in before} == before
    assert set(before.values()) == {"train", "val"}


def test_raising_the_val_fraction_only_moves_reports_into_val() -> None:
    small = {n for n in range(5000) if split_of(n, "7", 0.05) == "val"}
    large = {n for n in range(5000) if split_of(n, "7", 0.10) == "val"}
    assert small < large


@pytest.mark.parametrize(("fraction", "low", "high"), [(0.0, 0, 0), (0.05, 150, 350), (1.0, 5000, 5000)])
def test_val_fraction_is_the_share_of_reports_in_val(fraction: float, low: int, high: int) -> None:
    assert low <= sum(split_of(n, "0", fraction) == "val" for n in range(5000)) <= high


def test_seed_changes_the_split() -> None:
    assert [split_of(n, "a", 0.5) for n in range(64)] != [split_of(n, "b", 0.5) for n in range(64)]


@pytest.mark.parametrize(
    ("name", "val_name"),
    [("out.jsonl", "out.val.jsonl"), ("out", "out.val"), ("data.train.jsonl", "data.train.val.jsonl")],
)
def test_validation_path_is_a_sibling(tmp_path: Path, name: str, val_name: str) -> None:
    assert validation_path(tmp_path / name) == tmp_path / val_name


# --- writing and errors -----------------------------------------------------------------


def test_interrupted_export_leaves_previous_files_untouched(tmp_path: Path) -> None:
    to = tmp_path / "t.jsonl"
    to.write_text("previous\n")

    def stop(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_dataset(FIXTURE, to, ExportOptions(teachers=EVERY, source_dir=NOTES), progress=stop)
    assert to.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        pytest.param(lambda tmp: (tmp / "nope", tmp / "t.jsonl", ExportOptions(teachers=EVERY)), "does not exist", id="no-folder"),
        pytest.param(lambda tmp: (tmp, tmp / "t.jsonl", ExportOptions(teachers=EVERY)), "not a diag-distill output folder",
                     id="not-outputs"),
        pytest.param(lambda tmp: (FIXTURE, tmp / "no" / "t.jsonl", ExportOptions(teachers=EVERY)), "folder", id="no-target-dir"),
        pytest.param(lambda tmp: (FIXTURE, tmp / "t.jsonl", ExportOptions(teachers=EVERY, fmt="csv")), "unknown export format",
                     id="format"),
        pytest.param(lambda tmp: (FIXTURE, tmp / "t.jsonl", ExportOptions(teachers=EVERY, source_dir=tmp / "x")), "--input-dir",
                     id="no-input-dir"),
    ],
)
def test_bad_arguments_raise_config_error(tmp_path: Path, make_args: Any, message: str) -> None:
    output_dir, to, options = make_args(tmp_path)
    with pytest.raises(ConfigError, match=message):
        export_dataset(output_dir, to, options)


def test_export_reads_what_the_pipeline_writes(tmp_path: Path) -> None:
    if not MTSAMPLES.is_dir():
        pytest.skip(f"real notes not available at {MTSAMPLES}")
    from distill.extraction.pipeline import process_report
    from distill.extraction.report import read_report
    from distill.extraction.teacher import LocalTeacher
    from distill.results.store import OutputStore

    store = OutputStore(tmp_path / "out")
    store.prepare()
    notes = sorted(MTSAMPLES.glob("report_*.txt"))[:8]
    for note in notes:
        process_report(note, extractor=LocalTeacher("api_1"), store=store)
    to = tmp_path / "t.jsonl"
    summary = export_dataset(store.root, to, ExportOptions(teachers=EVERY, min_units=0, val_fraction=0.0))
    assert summary.exported == len(notes) and summary.skipped == {}
    for line, note in zip(read_lines(to), notes, strict=True):
        assert line["messages"][1]["content"] == read_report(note).text
        assert line["metadata"]["teacher"] == "api_1"


# --- the command ------------------------------------------------------------------------


def test_command_exports_and_prints_a_summary(tmp_path: Path) -> None:
    to = tmp_path / "t.jsonl"
    result = CliRunner().invoke(export_command, ["--output-dir", str(FIXTURE), "--to", str(to), "--input-dir",
                                                 str(NOTES), "--val-fraction", "0.5", "--seed", "0", "--teacher", "all"])
    assert result.exit_code == 0, result.output
    assert "exported 4 of 13 reports (sft-chat)" in result.stdout
    assert "left out report 10005: corrupt:" in result.stderr
    assert to.read_text(encoding="utf-8") == expected_text("sft-chat.jsonl")


def test_command_missing_folder_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(export_command, ["--output-dir", str(tmp_path / "nope"), "--to",
                                                 str(tmp_path / "t.jsonl")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr


def test_command_names_ten_problems_and_counts_the_rest(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path)
    for number in range(10500, 10512):
        (root / "diagnostic_results" / f"diagnostic_{number}.json").write_text("{")
        (root / "diagnostic_results_normalized" / f"diagnostic_{number}.json").write_text("[]")
    result = CliRunner().invoke(export_command, ["--output-dir", str(root), "--to", str(tmp_path / "t.jsonl"),
                                                 "--teacher", "all"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("left out report") == 10
    assert "... and 5 more report(s) left out" in result.stderr  # 13 corrupt + 2 notes gone, 10 shown


def test_progress_bar_is_off_when_stderr_is_not_a_terminal() -> None:
    with progress_bar("x") as progress:
        assert progress is None
