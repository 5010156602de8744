"""Whole jobs: supervisor and sixteen workers in tmux, on this test's own socket and state directory."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from distill.bench.stub_server import StubServer
from distill.job.state import StateDir, process_identity
from distill.job.tmux import TmuxSessions
from tests.helpers.chaos_tools import kill_all, kill_worker
from tests.helpers.jobtools import (
    cli,
    done_numbers,
    job_ended,
    status,
    stray_files,
    wait_until,
    working,
    write_config,
)
from tests.helpers.jobtools import (
    start_job as start,
)
from tests.helpers.notes import write_notes

pytestmark = [pytest.mark.tmux, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

KEY = "sk-test-orchestration-key"


@pytest.fixture
def job(isolated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A job folder set: notes, outputs, a config with a short CHECK_INTERVAL, and a stub endpoint."""
    monkeypatch.setenv("DIAG_CONFIG", str(write_config(tmp_path)))
    stub = StubServer(latency_s=0.05, require_key=KEY).start()
    monkeypatch.setenv("DIAG_API_KEY", KEY)
    monkeypatch.setenv("DIAG_BASE_URL", stub.url)
    monkeypatch.setenv("DIAG_MODEL", "stub-model")
    state = StateDir(Path(isolated["state"]))
    info = {"stub": stub, "state": state, "input": tmp_path / "in", "output": tmp_path / "out",
            "sessions": TmuxSessions(isolated["socket"], isolated["prefix"])}
    yield info
    if state.running_job() is not None:
        cli("stop", "--now")
        wait_until(lambda: state.running_job() is None, timeout=30)
    stub.stop()


def test_forty_notes_sixteen_sessions_until_drained(job: dict[str, Any]) -> None:
    write_notes(job["input"], list(range(1001, 1041)))
    job["stub"].latency_s = 0.2
    out = start(job, "1001", "--until-drained")
    assert "stop:" in out and "attach:" in out
    roles = set(job["sessions"].roles())
    assert {f"api_{i}" for i in range(1, 17)} <= roles
    wait_until(lambda: job_ended(job["state"]), timeout=120)
    assert done_numbers(job["output"]) == list(range(1001, 1041))
    assert stray_files(job["output"], job["state"].root) == []
    assert not list((job["output"] / "failed").glob("*.json"))
    assert job["sessions"].roles() == []
    final = status(job["state"])
    assert final["counts"]["done"] == 40 and final["counts"]["pending"] == 0
    assert job["stub"].stats()["total"] == 120  # three calls a report, none repeated


def test_sigkill_of_a_worker_mid_report_finishes_that_report_once(job: dict[str, Any]) -> None:
    write_notes(job["input"], list(range(1, 41)))
    job["stub"].latency_s = 0.4
    start(job, "1", "--until-drained", "--apis", "api_1,api_2,api_3,api_4")
    busy = wait_until(lambda: working(job["state"]), timeout=30)
    api = next(iter(busy))
    held = kill_worker(job["state"], job["state"].read_heartbeat(api) or {}, job["output"])
    assert held  # it was alive, mid-report
    wait_until(lambda: job_ended(job["state"]), timeout=120)
    assert done_numbers(job["output"]) == list(range(1, 41))
    counts = job["stub"].stats()["by_report_step"]
    assert max(counts.values()) <= 2  # a call cut by the kill is paid once more, never again
    assert {int(key.split("/")[0]) for key, n in counts.items() if n > 1} <= held
    assert status(job["state"])["apis_status"][api]["restarts"] >= 1


def test_sigkill_of_everything_then_start_again_repeats_no_finished_step(job: dict[str, Any]) -> None:
    numbers = list(range(1, 61))
    write_notes(job["input"], numbers)
    job["stub"].latency_s = 0.3
    start(job, "1", "--until-drained", "--apis", "api_1,api_2,api_3,api_4,api_5,api_6")
    wait_until(lambda: len(done_numbers(job["output"])) >= 5, timeout=60)
    _pids, in_flight = kill_all(job["state"], job["output"])
    wait_until(lambda: job["state"].running_job() is None, timeout=10)
    start(job, "1", "--until-drained", "--apis", "api_1,api_2,api_3,api_4,api_5,api_6")
    wait_until(lambda: job_ended(job["state"]), timeout=120)
    assert done_numbers(job["output"]) == numbers
    counts = job["stub"].stats()["by_report_step"]
    # Only a call in flight at the kill may be paid twice, never more than once more.
    assert {int(key.split("/")[0]) for key, n in counts.items() if n > 1} <= in_flight
    assert max(counts.values()) <= 2
    assert stray_files(job["output"]) == []


def test_stop_flag_finishes_in_flight_reports_and_starts_nothing_new(job: dict[str, Any]) -> None:
    write_notes(job["input"], list(range(1, 201)))
    job["stub"].latency_s = 0.3
    start(job, "1")
    wait_until(lambda: len(working(job["state"])) >= 8, timeout=30)
    done_before = len(done_numbers(job["output"]))
    job["state"].request_stop()
    wait_until(lambda: job_ended(job["state"]), timeout=60)
    done_after = done_numbers(job["output"])
    # At most two reports a worker when the flag appeared: one being committed, one in flight.
    assert done_before < len(done_after) <= done_before + 16 + 16
    assert len(done_after) < 200
    assert not job["state"].stop_flag.exists()
    assert job["sessions"].roles() == []
    assert stray_files(job["output"], job["state"].root) == []
    calls = job["stub"].stats()["by_report_step"]
    started = {int(key.split("/")[0]) for key in calls}
    assert started == set(done_after)  # every report that was started was finished


def test_a_second_start_on_the_same_state_directory_is_refused(job: dict[str, Any]) -> None:
    write_notes(job["input"], [1])
    start(job, "1")
    first = job["state"].running_job()
    second = cli("start", "1", "--input-dir", str(job["input"]), "--output-dir", str(job["output"]))
    assert second.returncode != 0
    assert "another diag-distill job is running" in second.stderr
    assert str(job["state"].root) in second.stderr
    assert job["state"].running_job() == first  # the running job is untouched
    assert len(job["sessions"].roles()) == 17


def test_files_added_while_running_and_after_a_big_gap_are_picked_up(job: dict[str, Any]) -> None:
    write_notes(job["input"], [1, 2])
    start(job, "1")
    wait_until(lambda: done_numbers(job["output"]) == [1, 2], timeout=30)
    write_notes(job["input"], [5003, 3])
    wait_until(lambda: done_numbers(job["output"]) == [1, 2, 3, 5003], timeout=30)
    job["state"].request_stop()
    wait_until(lambda: job_ended(job["state"]), timeout=30)


def test_an_endpoint_answering_401_is_disabled_while_the_others_finish(job: dict[str, Any],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    write_notes(job["input"], list(range(1, 33)))
    monkeypatch.setenv("DIAG_API_1_KEY", "sk-wrong-key")
    start(job, "1", "--until-drained")
    wait_until(lambda: job_ended(job["state"]), timeout=120)
    assert done_numbers(job["output"]) == list(range(1, 33))
    final = status(job["state"])
    assert final["apis_status"]["api_1"]["state"] == "disabled"
    assert "sk-wrong-key" not in str(final)
    assert not list((job["output"] / "failed").glob("*.json"))


def test_start_refuses_a_missing_input_folder(job: dict[str, Any]) -> None:
    result = cli("start", "1", "--input-dir", str(job["input"] / "nope"), "--output-dir", str(job["output"]))
    assert result.returncode != 0
    assert "nope" in result.stderr and "does not exist" in result.stderr
    assert job["state"].running_job() is None


def test_stop_now_checkpoints_hands_reports_back_and_a_restart_repeats_no_step(job: dict[str, Any]) -> None:
    numbers = list(range(1, 25))
    write_notes(job["input"], numbers)
    job["stub"].latency_s = 1.5
    start(job, "1", "--apis", "api_1,api_2,api_3,api_4")
    wait_until(lambda: len(working(job["state"])) == 4 and job["stub"].stats()["total"] >= 6, timeout=30)
    asked = time.monotonic()
    result = cli("stop", "--now", "--wait", "--timeout", "30")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - asked < 20
    assert job["sessions"].roles() == []
    assert len(done_numbers(job["output"])) < len(numbers)
    job["stub"].latency_s = 0.02
    start(job, "1", "--until-drained", "--apis", "api_1,api_2,api_3,api_4")
    wait_until(lambda: job_ended(job["state"]), timeout=60)
    assert done_numbers(job["output"]) == numbers
    counts = job["stub"].stats()["by_report_step"]
    # A call cut by the stop is paid again once; a finished step never.
    assert max(counts.values()) <= 2
    assert sum(1 for n in counts.values() if n == 2) <= 4


def test_a_job_with_another_state_directory_but_the_same_prefix_is_refused(job: dict[str, Any], tmp_path: Path) -> None:
    write_notes(job["input"], [1])
    start(job, "1")
    env = {**os.environ, "DIAG_STATE_DIR": str(tmp_path / "other-state")}
    second = cli("start", "1", "--input-dir", str(job["input"]), "--output-dir", str(tmp_path / "out2"), env=env)
    assert second.returncode == 2
    message = second.stderr.strip()
    assert len(message.splitlines()) == 1 and "17 tmux session(s)" in message and "and 15 more" in message
    # One refusal names everything a second job needs, so the next try does not hit another refusal.
    assert all(knob in message for knob in ("DIAG_SESSION_PREFIX=", "DIAG_STATE_DIR=", "--output-dir"))
    assert len(job["sessions"].roles()) == 17  # the running job's sessions are untouched


def test_a_second_job_beside_the_first_gets_commands_that_watch_it_not_the_first(
        job: dict[str, Any], tmp_path: Path) -> None:
    write_notes(job["input"], [1])
    start(job, "1", "--apis", "api_1")
    env = {**os.environ, "DIAG_STATE_DIR": str(tmp_path / "state2"), "DIAG_SESSION_PREFIX": "second"}
    second = cli("start", "1", "--apis", "api_5", "--input-dir", str(job["input"]), "--output-dir",
                 str(tmp_path / "out2"), env=env)
    try:
        assert second.returncode == 0, second.stderr
        lines = {line.split(":", 1)[0]: line for line in second.stdout.splitlines() if ":" in line}
        assert f"DIAG_STATE_DIR={tmp_path / 'state2'}" in lines["monitor"] and "DIAG_SESSION_PREFIX=second" in lines["monitor"]
        assert "attach -t second_api_5" in lines["attach"]
        assert str(tmp_path / "state2" / "stop_diag_distillation.sh") in lines["stop"]
    finally:
        cli("stop", "--now", "--wait", "--timeout", "30", env=env)


def _stops_gracefully(job: dict[str, Any], ask_to_stop: Callable[[], object]) -> None:
    """Ask a busy 16-worker job to stop: every report in flight is finished, none is started after."""
    write_notes(job["input"], list(range(1, 201)))
    job["stub"].latency_s = 0.3
    start(job, "1")
    wait_until(lambda: len(working(job["state"])) >= 8, timeout=30)
    ask_to_stop()
    done_before = len(done_numbers(job["output"]))  # the stop is asked for once ask_to_stop returns
    wait_until(lambda: job_ended(job["state"]), timeout=60)
    done_after = done_numbers(job["output"])
    assert done_before < len(done_after) <= done_before + 16 + 16
    assert len(done_after) < 200
    started = {int(key.split("/")[0]) for key in job["stub"].stats()["by_report_step"]}
    assert started == set(done_after)  # every report that was started was finished
    assert job["sessions"].roles() == []


def test_the_stop_flag_exists_while_the_job_runs_names_it_and_is_private(job: dict[str, Any]) -> None:
    write_notes(job["input"], [1])
    start(job, "1")
    flag, script = job["state"].stop_flag, job["state"].stop_script
    running = job["state"].running_job()
    assert running is not None and str(running["job_id"]) in flag.read_text()
    assert stat.S_IMODE(flag.stat().st_mode) == 0o600
    assert stat.S_IMODE(script.stat().st_mode) == 0o700
    assert not job["state"].stop_requested()


def test_removing_the_stop_flag_stops_the_job_gracefully(job: dict[str, Any]) -> None:
    _stops_gracefully(job, job["state"].stop_flag.unlink)


def test_the_stop_script_stops_the_job_gracefully(job: dict[str, Any]) -> None:
    ran: list[subprocess.CompletedProcess[str]] = []
    _stops_gracefully(job, lambda: ran.append(subprocess.run([str(job["state"].stop_script)], capture_output=True,
                                                             text=True, timeout=30, check=False)))
    assert ran[0].returncode == 0, ran[0].stderr
    assert "stop requested" in ran[0].stdout and "diag-distill stop --cancel" in ran[0].stdout


def test_stop_cancel_after_the_stop_script_lets_the_job_go_on(job: dict[str, Any]) -> None:
    write_notes(job["input"], list(range(1, 4)))
    job["stub"].latency_s = 4.0  # a report takes 12 s: the stop comes and goes while the first is in flight
    start(job, "1", "--until-drained", "--apis", "api_1")
    wait_until(lambda: (job["state"].read_heartbeat("api_1") or {}).get("step") == "findings", timeout=30)
    ran = subprocess.run([str(job["state"].stop_script)], capture_output=True, text=True, timeout=30, check=False)
    assert ran.returncode == 0, ran.stderr
    assert job["state"].stop_requested()
    cancelled = cli("stop", "--cancel")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "stop withdrawn" in cancelled.stdout
    assert not job["state"].stop_requested()
    wait_until(lambda: job_ended(job["state"]), timeout=120)
    assert done_numbers(job["output"]) == [1, 2, 3]  # the worker went on past the report in flight


def test_the_stop_script_with_no_job_running_says_so_and_leaves_nothing_behind(job: dict[str, Any]) -> None:
    write_notes(job["input"], [1])
    start(job, "1", "--until-drained")
    wait_until(lambda: job_ended(job["state"]), timeout=60)
    before = sorted(p.name for p in job["state"].root.iterdir())
    ran = subprocess.run([str(job["state"].stop_script)], capture_output=True, text=True, timeout=30, check=False)
    assert ran.returncode == 0, ran.stderr
    assert f"no diag-distill job is running on state directory {job['state'].root}" in ran.stdout
    assert sorted(p.name for p in job["state"].root.iterdir()) == before
    assert not job["state"].stop_flag.exists()


def test_a_misconfigured_endpoint_is_reported_and_the_others_run(job: dict[str, Any],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    write_notes(job["input"], list(range(1, 9)))
    monkeypatch.setenv("DIAG_API_2_BASE_URL", "not-a-url")
    result = cli("start", "1", "--until-drained", "--apis", "api_1,api_2,api_3", "--input-dir", str(job["input"]),
                 "--output-dir", str(job["output"]))
    assert result.returncode == 0, result.stderr
    assert "api_2 left out" in result.stderr and "DIAG_API_2_BASE_URL" in result.stderr
    wait_until(lambda: job_ended(job["state"]), timeout=60)
    assert done_numbers(job["output"]) == list(range(1, 9))
    row = status(job["state"])["apis_status"]["api_2"]
    assert row["state"] == "failed" and "DIAG_API_2_BASE_URL" in row["reason"]


def test_a_session_closed_by_hand_is_restarted_and_the_monitor_says_so(job: dict[str, Any]) -> None:
    import json

    write_notes(job["input"], list(range(1, 31)))
    start(job, "1", "--apis", "api_1,api_2")
    state, sessions = job["state"], job["sessions"]
    wait_until(lambda: set(heartbeats_of(state)) == {"api_1", "api_2"}, timeout=30)
    first_pid = heartbeats_of(state)["api_2"]["pid"]
    assert sessions.kill("api_2")
    # Restarted within one check interval (0.5 s here) plus the worker's start-up.
    wait_until(lambda: heartbeats_of(state).get("api_2", {}).get("pid") not in (None, first_pid)
               and heartbeats_of(state)["api_2"].get("state") != "exited", timeout=15)
    snapshot = json.loads(cli("monitor", "--json").stdout)
    row = next(e for e in snapshot["endpoints"] if e["api"] == "api_2")
    assert row["restarts"] == 1 and "closed by hand" in row["reason"] and "restarted" in row["reason"]
    assert row["state"] != "exited"
    wait_until(lambda: len(done_numbers(job["output"])) == 30, timeout=60)


def heartbeats_of(state: StateDir) -> dict[str, dict[str, Any]]:
    return state.read_heartbeats()


def test_the_live_monitor_fits_an_80_by_24_tmux_window_during_a_sixteen_endpoint_job(
        job: dict[str, Any], isolated: dict[str, Any]) -> None:
    import shlex
    import subprocess
    import sys

    write_notes(job["input"], list(range(1, 401)))
    job["stub"].latency_s = 0.2
    start(job, "1")
    wait_until(lambda: len(done_numbers(job["output"])) >= 5, timeout=60)
    socket = isolated["socket"]
    knobs = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in ("DIAG_STATE_DIR", "DIAG_SESSION_PREFIX",
                                                                   "DIAG_TMUX_SOCKET", "DIAG_CONFIG"))
    command = f"env {knobs} {shlex.quote(sys.executable)} -m distill monitor --interval 1"
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-s", "watch", "-x", "80", "-y", "24", command],
                   check=True)
    try:
        def screen() -> str:
            return subprocess.run(["tmux", "-L", socket, "capture-pane", "-p", "-t", "watch"], capture_output=True,
                                  text=True, check=False).stdout

        def full_screen() -> str:
            shown = screen()
            return shown if "quit:" in shown else ""

        text = wait_until(full_screen, timeout=20)
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-session", "-t", "=watch"], check=False)
    lines = text.splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    assert "Endpoints (16: stub-model 16)" in text
    assert "api_" in text and ("not shown" in text or "api_16" in text)
    for part in ("outputs", "Recent results", " done ", "failures", "stop:", "attach:", "quit:"):
        assert part in text, (part, text)


def test_stop_now_ends_the_workers_of_a_killed_supervisor_and_nothing_else(job: dict[str, Any]) -> None:
    write_notes(job["input"], list(range(1, 201)))
    job["stub"].latency_s = 0.3
    start(job, "1", "--apis", "api_1,api_2,api_3")
    wait_until(lambda: len(working(job["state"])) == 3, timeout=30)
    pids = {api: int(beat["pid"]) for api, beat in job["state"].read_heartbeats().items()}
    bystander = subprocess.Popen(["sleep", "300"])  # a process of ours that is no worker of the job
    supervisor = job["state"].running_job()
    assert supervisor is not None
    os.kill(int(supervisor["pid"]), signal.SIGKILL)
    wait_until(lambda: job["state"].running_job() is None, timeout=10)
    try:
        assert job["state"].orphaned_workers() == pids
        folder = job["state"].root / "continuous_diag_workers"
        folder.chmod(0o770)  # another member of the group could plant a heartbeat naming any pid
        refused = cli("stop", "--now")
        assert refused.returncode != 0
        assert refused.stderr.strip().splitlines()[-1].endswith(
            f"{folder} is writable by group or others (mode 770); refusing to trust it")
        assert all(process_identity(pid) is not None for pid in pids.values())  # nothing was signalled
        folder.chmod(0o700)
        result = cli("stop", "--now", "--wait", "--timeout", "30")
        assert result.returncode == 0, result.stderr
        assert "the supervisor is gone" in result.stdout and "api_1, api_2, api_3" in result.stdout
        wait_until(lambda: all(process_identity(pid) is None for pid in pids.values()), timeout=10)
        assert bystander.poll() is None
        assert "no diag-distill job is running" in cli("stop").stdout
    finally:
        bystander.kill()
        bystander.wait()


def test_start_and_stop_refuse_a_group_writable_state_directory_with_one_line(job: dict[str, Any]) -> None:
    write_notes(job["input"], [1])
    root = job["state"].root
    root.chmod(0o770)
    expected = f"{root} is writable by group or others (mode 770); refusing to trust it"
    started = cli("start", "1", "--input-dir", str(job["input"]), "--output-dir", str(job["output"]))
    assert started.returncode != 0
    assert started.stderr.strip().splitlines() == [f"diag-distill: error: DIAG_STATE_DIR: {expected}"]
    assert job["state"].running_job() is None and job["sessions"].roles() == []
    stopped = cli("stop", "--now")
    assert stopped.returncode != 0
    assert len(stopped.stderr.strip().splitlines()) == 1 and stopped.stderr.strip().endswith(expected)
