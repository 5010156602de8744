from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill.job.tmux import TmuxSessions
from tests.helpers.jobtools import wait_until

pytestmark = [pytest.mark.tmux, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


def test_killing_api_1_leaves_api_10_alone(isolated: dict[str, object], tmp_path: Path) -> None:
    sessions = TmuxSessions(str(isolated["socket"]), str(isolated["prefix"]))
    for role in ("api_1", "api_10"):
        sessions.start(role, ["sleep", "60"], environment={}, cwd=tmp_path)
    assert sessions.kill("api_1")
    assert sorted(sessions.roles()) == ["api_10"]


def test_a_fast_failing_command_keeps_its_last_words(isolated: dict[str, object], tmp_path: Path) -> None:
    sessions = TmuxSessions(str(isolated["socket"]), str(isolated["prefix"]))
    sessions.start("api_2", ["sh", "-c", "echo 'configuration error: api_2 broken'; exit 3"], environment={}, cwd=tmp_path)
    wait_until(lambda: not sessions.pane_state("api_2")[0], timeout=10)
    assert any("api_2 broken" in line for line in sessions.capture("api_2"))


def test_environment_is_passed_explicitly(isolated: dict[str, object], tmp_path: Path) -> None:
    sessions = TmuxSessions(str(isolated["socket"]), str(isolated["prefix"]))
    out = tmp_path / "env.txt"
    sessions.start("api_3", ["sh", "-c", f"echo \"$DIAG_PROBE\" > {out}"], environment={"DIAG_PROBE": "passed"},
                   cwd=tmp_path)
    wait_until(lambda: out.exists() and out.read_text().strip() == "passed", timeout=10)


def test_sessions_are_named_with_the_prefix(isolated: dict[str, object], tmp_path: Path) -> None:
    sessions = TmuxSessions(str(isolated["socket"]), str(isolated["prefix"]))
    sessions.start("supervisor", ["sleep", "60"], environment={}, cwd=tmp_path)
    assert sessions.name("supervisor") == f"{isolated['prefix']}_supervisor"
    assert sessions.roles() == ["supervisor"]
    assert sessions.pane_state("supervisor")[0]
