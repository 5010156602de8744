"""What ``start`` says before any work, and a bounded range that ends by itself."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from distill.job.state import StateDir
from distill.job.survey import survey_range
from distill.results.store import OutputStore
from tests.helpers.jobtools import cli, done_numbers, job_ended, wait_until, write_config
from tests.helpers.notes import write_notes


def test_the_survey_counts_the_range_by_state(tmp_path: Path) -> None:
    write_notes(tmp_path / "in", [5, 6, 7, 8, 20])
    store = OutputStore(tmp_path / "out")
    store.prepare()
    store.commit_done(6, {"format": "x", "teacher_id": "local/local-rules-2"}, [], "log\n")
    store.commit_failed(7, {"error_class": "bad_input"}, "log\n")
    survey = survey_range(tmp_path / "in", tmp_path / "out", 5, 10)
    assert (survey.existing, survey.done, survey.failed, survey.pending) == (4, 1, 1, 2)
    assert survey.lines(tmp_path / "in") == [
        f"found 4 report(s) numbered 5–10 in {tmp_path / 'in'}: 1 done (1 by local/local-rules-2 (not a teacher of "
        "this job: skipped; --redo local re-runs them)), 1 failed, 2 pending"]


@pytest.mark.parametrize(("files", "says"), [
    ([], "the folder is empty"),
    (["note_1.txt", "report-2.txt"], "the folder holds other files (note_1.txt, report-2.txt); notes must be named"),
])
def test_a_range_with_no_report_gets_a_warning_naming_what_is_there(tmp_path: Path, files: list[str],
                                                                   says: str) -> None:
    (tmp_path / "in").mkdir()
    for name in files:
        (tmp_path / "in" / name).write_text("CHIEF COMPLAINT: cough.\n", encoding="utf-8")
    lines = survey_range(tmp_path / "in", tmp_path / "out", 1, None).lines(tmp_path / "in")
    assert lines[0].startswith("found 0 report(s) numbered 1 and up")
    assert says in lines[1] and lines[1].startswith("warning: nothing to do yet")


@pytest.mark.tmux
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_start_with_end_says_what_it_found_and_the_job_ends_when_the_range_is_done(
        isolated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIAG_CONFIG", str(write_config(tmp_path, endpoints=2)))
    write_notes(tmp_path / "in", [1, 2, 3, 4, 5])
    result = cli("start", "1", "--end", "3", "--input-dir", str(tmp_path / "in"), "--output-dir",
                 str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "found 3 report(s) numbered 1–3" in result.stdout and "0 done, 0 failed, 3 pending" in result.stdout
    state = StateDir(Path(isolated["state"]))
    wait_until(lambda: job_ended(state), timeout=60)
    assert done_numbers(tmp_path / "out") == [1, 2, 3]


@pytest.mark.parametrize(("url", "says"), [
    ("http://127.0.0.1:6379", "DIAG_CLAIMS_URL / --claims-url must be a redis://host:port/db URL"),
    ("redis://127.0.0.1:1/0", "DIAG_CLAIMS_URL / --claims-url: cannot reach Redis at redis://127.0.0.1:1/0"),
])
def test_a_bad_or_unreachable_claims_url_is_refused_with_one_line(isolated: dict[str, Any], tmp_path: Path,
                                                                  url: str, says: str) -> None:
    write_notes(tmp_path / "in", [1])
    result = cli("start", "1", "--claims-url", url, "--input-dir", str(tmp_path / "in"),
                 "--output-dir", str(tmp_path / "out"))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("diag-distill: error:")]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert StateDir(Path(isolated["state"])).running_job() is None


def test_the_survey_names_what_it_redoes_and_a_redo_that_matches_nothing(tmp_path: Path) -> None:
    write_notes(tmp_path / "in", [1, 2, 3])
    store = OutputStore(tmp_path / "out")
    store.prepare()
    for number, teacher in ((1, "local/local-rules-2"), (2, "openai/qwen@diag-prompts-2")):
        store.commit_done(number, {"teacher_id": teacher}, [], "log\n")
    lines = survey_range(tmp_path / "in", tmp_path / "out", 1, None, redo=("local", "gpt-5")).lines(
        tmp_path / "in", tmp_path / "out")
    assert lines[0].endswith("2 done (1 by local/local-rules-2 (redone: --redo local), 1 by "
                             "openai/qwen@diag-prompts-2 (not a teacher of this job: skipped; --redo qwen re-runs "
                             "them)), 0 failed, 1 pending")
    assert (f"redoing 1 report(s) done by local/local-rules-2 (--redo local); each one's old outputs move to "
            f"{tmp_path / 'out' / 'superseded' / 'local' / 'local-rules-2'} when its new ones are committed") in lines
    assert any(line.startswith("--redo gpt-5: no done report of the range was made by that teacher") for line in lines)
