"""Down endpoints in the status file and the monitor: state ``down``, since when and why, per endpoint and
for the job."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from rich.console import Console

from distill.cli.status_cmd import command
from distill.job.status import iso
from distill.monitor.hosts import hosts_panel
from distill.monitor.view import render
from tests.monitor.test_monitor import heartbeat, snapshot_of, write_job_state

REFUSED = "endpoint api_2 (stub) failed 5 attempt(s); last: connection failed (ConnectionRefusedError)"


def down_beat(api: str, now: float, *, down_for: float = 95.0, error: str = REFUSED) -> dict[str, Any]:
    """A heartbeat as a worker writes it while its endpoint is down (see ``EndpointWatch.wait_until_up``)."""
    beat = heartbeat(api, "down", now=now, reason=f"down since 12:00:00: {error}", next_probe_at=now + 8,
                     probes=3, health="down", health_since=now - down_for, failures_in_a_row=9, down_reason=error,
                     last_error=f"report 10007: {error}")
    beat["since"] = now - down_for
    return beat


def screen(root: Path, now: float, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(render(snapshot_of(root, now), width))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_status_file_names_each_down_endpoint_with_since_and_why(tmp_path: Path) -> None:
    now = time.time()
    state = write_job_state(tmp_path, {"api_1": heartbeat("api_1", "working", now=now, report=10010, step="organs",
                                                          health="up"),
                                       "api_2": down_beat("api_2", now)}, now=now)
    status = state.read_status()
    assert status is not None
    row = status["apis_status"]["api_2"]
    assert row["state"] == "down" and row["health"] == "down"
    assert row["down_since"] == iso(now - 95.0) and row["down_reason"] == REFUSED
    assert status["apis_status"]["api_1"]["health"] == "up" and status["apis_status"]["api_1"]["down_since"] is None
    assert status["endpoints_down"] == {"count": 1, "waiting": False, "waiting_since": None,
                                        "endpoints": {"api_2": {"since": iso(now - 95.0), "reason": REFUSED}}}


def test_when_every_endpoint_is_down_the_status_says_the_job_waits_since_the_last_went_down(tmp_path: Path) -> None:
    now = time.time()
    state = write_job_state(tmp_path, {"api_1": down_beat("api_1", now, down_for=40.0),
                                       "api_2": down_beat("api_2", now, down_for=95.0)}, now=now)
    status = state.read_status()
    assert status is not None
    assert status["endpoints_down"]["waiting"] is True and status["endpoints_down"]["count"] == 2
    assert status["endpoints_down"]["waiting_since"] == iso(now - 40.0)


def test_the_monitor_shows_a_down_endpoint_as_down_with_for_how_long_and_why(tmp_path: Path) -> None:
    now = time.time()
    write_job_state(tmp_path, {"api_1": heartbeat("api_1", "working", now=now, report=10010, step="organs"),
                               "api_2": down_beat("api_2", now)}, now=now)
    snap = snapshot_of(tmp_path, now)
    row = next(r for r in snap.endpoints if r.api == "api_2")
    assert row.state == "down" and row.reason.startswith("down since 12:00:00: endpoint api_2")
    assert row.elapsed_s is not None and abs(row.elapsed_s - 95.0) < 1
    assert snap.endpoint_totals["by_state"]["down"] == 1
    assert not any(p.startswith("every endpoint is down") for p in snap.problems)  # api_1 still works
    text = screen(tmp_path, now)
    line = next(line for line in text.splitlines() if "api_2" in line and "DOWN" in line)
    assert "down since 12:00:00" in line and "1m 35s" in line
    assert "DOWN 1" in text  # the endpoints footer counts them


def test_the_down_state_stands_out_in_colour(tmp_path: Path) -> None:
    now = time.time()
    write_job_state(tmp_path, {"api_2": down_beat("api_2", now)}, now=now)
    console = Console(file=io.StringIO(), width=100, color_system="standard", force_terminal=True)
    console.print(render(snapshot_of(tmp_path, now), 100))
    assert "\x1b[1;37;41mDOWN" in console.file.getvalue()  # type: ignore[attr-defined]  # bold white on red


def test_the_monitor_says_since_when_and_why_the_job_waits_when_every_endpoint_is_down(tmp_path: Path) -> None:
    now = time.time()
    write_job_state(tmp_path, {"api_1": down_beat("api_1", now, down_for=40.0),
                               "api_2": down_beat("api_2", now, down_for=95.0)}, now=now)
    snap = snapshot_of(tmp_path, now)
    waiting = [p for p in snap.problems if p.startswith("every endpoint is down")]
    assert len(waiting) == 1
    since = time.strftime("%H:%M:%S", time.localtime(now - 40.0))
    assert f"waiting since {since}: api_1: {REFUSED}" in waiting[0]
    assert "nothing is failed for an outage" in waiting[0]
    assert "every endpoint is down (2)" in screen(tmp_path, now, width=200)


def test_a_compact_monitor_shows_down_endpoints_first(tmp_path: Path) -> None:
    now = time.time()
    beats = {f"api_{i}": heartbeat(f"api_{i}", "idle", now=now) for i in range(1, 17)}
    beats["api_16"] = down_beat("api_16", now)
    write_job_state(tmp_path, beats, now=now)
    console = Console(file=io.StringIO(), width=80, color_system=None, force_terminal=False)
    console.print(render(snapshot_of(tmp_path, now), 80, height=20))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert any("api_16" in line and "DOWN" in line for line in text.splitlines())


def test_diag_distill_status_prints_each_endpoint_and_a_down_one_with_since_and_why(tmp_path: Path) -> None:
    now = time.time()
    write_job_state(tmp_path, {"api_1": heartbeat("api_1", "working", now=now, report=10010, step="organs"),
                               "api_2": down_beat("api_2", now)}, now=now)
    result = CliRunner().invoke(command, [], env={"DIAG_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("job a1b2c3d4e5f6: running")
    assert any(line.startswith("api_1") and "working" in line and "report 10010 organs" in line for line in lines)
    down = next(line for line in lines if line.startswith("api_2"))
    assert "DOWN" in down and "1m 35s" in down and f"down since 12:00:00: {REFUSED}" in down
    as_json = CliRunner().invoke(command, ["--json"], env={"DIAG_STATE_DIR": str(tmp_path)})
    assert as_json.exit_code == 0
    assert json.loads(as_json.output)["apis_status"]["api_2"]["down_reason"] == REFUSED


def test_the_hosts_panel_of_a_shared_job_shows_a_down_endpoint_as_down() -> None:
    board = {"hosts": {"host-b": {"apis_status": {"api_1": {"state": "working", "report": 7},
                                                  "api_2": {"state": "down", "report": None}}}}}
    console = Console(file=io.StringIO(), width=100, color_system="standard", force_terminal=True)
    console.print(hosts_panel(board))
    assert "\x1b[1;37;41mDOWN" in console.file.getvalue()  # type: ignore[attr-defined]
