"""Which folders a command uses when its command line names none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.job.folders import job_folders
from distill.job.manifest import MANIFEST_FILE
from distill.job.state import LAST_JOB_FILE


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("DIAG_OUTPUT_DIR", raising=False)
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    (root / LAST_JOB_FILE).write_text(json.dumps({"job_id": "j1", "input_dir": str(tmp_path / "in"),
                                                  "output_dir": str(tmp_path / "out")}))
    (tmp_path / "in").mkdir()
    return root


def test_no_folders_given_takes_both_from_the_last_job_and_says_so(state: Path, tmp_path: Path) -> None:
    folders = job_folders(None, None, state_dir=state)
    assert (folders.input_dir, folders.output_dir) == (tmp_path / "in", tmp_path / "out")
    line = folders.line()
    assert line is not None and "job j1" in line and str(state) in line
    assert str(tmp_path / "in") in line and str(tmp_path / "out") in line


def test_both_folders_given_are_used_as_they_are_and_nothing_is_said(state: Path, tmp_path: Path) -> None:
    folders = job_folders(tmp_path / "a", tmp_path / "b", state_dir=state)
    assert (folders.input_dir, folders.output_dir, folders.line()) == (tmp_path / "a", tmp_path / "b", None)


def test_an_output_folder_alone_takes_the_input_folder_its_manifest_names(state: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_out"
    other.mkdir()
    (other / MANIFEST_FILE).write_text(json.dumps({"job_id": "j9", "input_dir": "/notes/nine"}))
    folders = job_folders(None, other, state_dir=state)
    assert (folders.input_dir, folders.output_dir) == (Path("/notes/nine"), other)
    assert "job j9" in (folders.line() or "")


def test_an_output_folder_without_a_manifest_leaves_the_input_to_the_configuration(state: Path,
                                                                                    tmp_path: Path) -> None:
    folders = job_folders(None, tmp_path / "bare", state_dir=state)
    assert (folders.input_dir, folders.output_dir, folders.line()) == (None, tmp_path / "bare", None)


def test_another_input_folder_does_not_borrow_the_last_jobs_output(state: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    folders = job_folders(tmp_path / "elsewhere", None, state_dir=state)
    assert (folders.input_dir, folders.output_dir) == (tmp_path / "elsewhere", None)


def test_no_earlier_job_leaves_both_to_the_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIAG_OUTPUT_DIR", raising=False)
    folders = job_folders(None, None, state_dir=tmp_path)
    assert (folders.input_dir, folders.output_dir, folders.line()) == (None, None, None)


def test_diag_output_dir_counts_as_a_given_output_folder(state: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIAG_OUTPUT_DIR", str(tmp_path / "env_out"))
    folders = job_folders(None, None, state_dir=state)
    assert folders.output_dir == tmp_path / "env_out"
