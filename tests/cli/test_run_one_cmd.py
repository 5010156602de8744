"""``run-one``: never overwrites a done report without --force; a bad path is one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from distill.cli.run_one_cmd import command as run_one
from distill.results.store import OutputStore
from tests.helpers.jobtools import write_config
from tests.helpers.notes import write_notes


@pytest.fixture
def offline(isolated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("DIAG_CONFIG", str(write_config(tmp_path, endpoints=1)))
    write_notes(tmp_path / "in", [10001])
    return {"note": tmp_path / "in" / "report_10001.txt", "out": tmp_path / "out"}


def run(*args: str) -> Any:
    return CliRunner().invoke(run_one, list(args))


@pytest.mark.parametrize("name", [pytest.param("report_10009.txt", id="missing"),
                                  pytest.param("notes.txt", id="not-a-report-name")])
def test_a_bad_path_is_one_line_exit_2_and_writes_nothing(offline: dict[str, Path], tmp_path: Path,
                                                          name: str) -> None:
    path = tmp_path / "in" / name
    if name == "notes.txt":
        path.write_text("CHIEF COMPLAINT: Cough.\n", encoding="utf-8")
    result = run(str(path), "--output-dir", str(offline["out"]))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr
    assert not offline["out"].exists()


def test_a_done_report_is_refused_without_force_and_redone_with_it(offline: dict[str, Path]) -> None:
    done = run(str(offline["note"]), "--output-dir", str(offline["out"]))
    assert done.exit_code == 0, done.output
    store = OutputStore(offline["out"])
    store.normalized_path(10001).write_text("[]", encoding="utf-8")  # marks what a rerun would replace
    raw_before = store.raw_path(10001).read_bytes()

    refused = run(str(offline["note"]), "--output-dir", str(offline["out"]))
    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1 and "already done" in refused.stderr and "--force" in refused.stderr
    assert store.normalized_path(10001).read_text(encoding="utf-8") == "[]"
    assert store.raw_path(10001).read_bytes() == raw_before

    forced = run(str(offline["note"]), "--output-dir", str(offline["out"]), "--force")
    assert forced.exit_code == 0, forced.output
    assert store.normalized_path(10001).read_text(encoding="utf-8") != "[]"
