"""The supervisor when its state directory's disk is full: the job goes on, no status outlives it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from distill.core.config import Endpoint, Settings
from distill.job.state import StateDir
from distill.job.supervisor import JobSpec, Supervisor
from tests.helpers.notes import write_notes
from tests.system.test_disk_full import FullDisk

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def test_a_full_state_disk_neither_kills_the_supervisor_nor_leaves_a_running_status(
        isolated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(endpoints={"api_1": Endpoint(name="api_1")}, input_dir=tmp_path / "in",
                        output_dir=tmp_path / "out", check_interval=0.1, state_dir=Path(isolated["state"]),
                        tmux_socket=str(isolated["socket"]), session_prefix=str(isolated["prefix"]))
    write_notes(settings.input_dir, [1])
    lines: list[str] = []
    supervisor = Supervisor(settings, JobSpec(start=1), out=lines.append)
    supervisor.prepare()
    state = StateDir(settings.state_dir)
    disk = FullDisk(settings.state_dir, "")
    monkeypatch.setattr(os, "open", disk.open)
    monkeypatch.setattr(os, "write", disk.write)
    disk.full = True
    for _ in range(3):
        supervisor._check_state()
        supervisor._write_status("running", {}, supervisor.clock())
    assert disk.refused >= 1
    assert sum("cannot write the status file" in line and "disk full" in line for line in lines) == 1
    assert supervisor.stop_reason == ""  # a full disk is waited out, not a reason to stop
    state.request_stop()  # the flag cannot be written: it goes, which asks for a stop just the same
    assert not state.stop_flag.exists() and state.stop_requested()
    disk.full = False
    state.arm_stop_flag(str(supervisor.job["job_id"]))
    supervisor._write_status("running", {}, supervisor.clock())
    assert "status file written again" in lines and (state.read_status() or {})["state"] == "running"
    disk.full = True
    supervisor._finish()  # the last status cannot be written: the one saying "running" must not stay
    assert state.read_status() is None and state.running_job() is None
    disk.full = False
