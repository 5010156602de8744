"""``stop --output-dir``: the output folder's manifest names the job's state directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from distill.cli.stop_cmd import command as stop_command
from distill.job.manifest import MANIFEST_FILE


def test_an_output_folder_no_job_wrote_is_one_line(isolated: dict[str, Any], tmp_path: Path) -> None:
    result = CliRunner().invoke(stop_command, ["--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and MANIFEST_FILE in result.stderr


def test_the_state_directory_the_manifest_names_is_the_one_looked_at(isolated: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    theirs = tmp_path / "their_state"
    theirs.mkdir(mode=0o700)
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_FILE).write_text(json.dumps({"job_id": "j1", "state_dir": str(theirs)}))
    result = CliRunner().invoke(stop_command, ["--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert f"no diag-distill job is running on state directory {theirs}" in result.stdout
