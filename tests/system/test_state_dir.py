"""Whole jobs when notes arrive half-written, names are odd, and the state directory loses files.

Each test runs a real job (supervisor and four worker sessions in tmux, on this test's
own socket, state directory and session prefix) against the loopback stub endpoint.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distill.bench.stub_server import StubServer
from distill.job.job_env import env_file
from distill.job.state import CLAIMS_FILE, JOB_FILE, JOB_LOCK, STOP_SCRIPT, WORKERS_DIR, StateDir
from tests.helpers.chaos_tools import read_outputs, stub_counts_by_report
from tests.helpers.jobtools import cli, done_numbers, job_ended, status, stray_files, wait_until, write_config
from tests.helpers.jobtools import start_job as start
from tests.helpers.notes import write_notes

pytestmark = [pytest.mark.tmux, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

KEY = "sk-test-state-dir-key"
CHECK_INTERVAL = 0.5


@pytest.fixture
def job(isolated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("DIAG_CONFIG", str(write_config(tmp_path, check_interval=CHECK_INTERVAL, endpoints=4)))
    stub = StubServer(latency_s=0.05, require_key=KEY).start()
    monkeypatch.setenv("DIAG_API_KEY", KEY)
    monkeypatch.setenv("DIAG_BASE_URL", stub.url)
    monkeypatch.setenv("DIAG_MODEL", "stub-model")
    state = StateDir(Path(isolated["state"]))
    info = {"stub": stub, "state": state, "input": tmp_path / "in", "output": tmp_path / "out"}
    yield info
    if state.running_job() is not None:
        cli("stop", "--now")
        wait_until(lambda: state.running_job() is None, timeout=30)
    stub.stop()


def calls_per_step(job: dict[str, Any]) -> dict[str, int]:
    return dict(job["stub"].stats()["by_report_step"])


def test_a_note_written_slowly_over_five_seconds_is_processed_whole_and_once(
        job: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIAG_SETTLE_S", "1.5")
    write_notes(job["input"], [1, 2, 3])
    lines = ["CHIEF COMPLAINT: Chest pain and shortness of breath for three days.\n",
             "HISTORY OF PRESENT ILLNESS: The patient reports chest pain on exertion and denies fever.\n",
             "PHYSICAL EXAMINATION: Mild bilateral lower extremity edema. A systolic murmur is heard.\n",
             "ASSESSMENT: Congestive heart failure with left ventricular dysfunction.\n",
             "PLAN: Start diuretics.\n"] * 4
    slow = job["input"] / "report_4.txt"
    written = threading.Event()

    def write_slowly() -> None:
        with slow.open("w", encoding="utf-8") as handle:
            for line in lines:  # 20 lines, one every 0.25 s: never still for the settling time until the end
                handle.write(line)
                handle.flush()
                time.sleep(0.25)
        written.set()

    start(job, "1")
    wait_until(lambda: done_numbers(job["output"]) == [1, 2, 3], timeout=60)
    writer = threading.Thread(target=write_slowly, daemon=True)
    writer.start()  # arrives while the job runs, as notes copied in by another program do
    # While it is being written, the monitor says why the idle workers wait.
    shown = wait_until(lambda: "waiting for 1 note to settle" in (text := cli("monitor", "--once", "--json").stdout)
                       and text, timeout=30)
    assert not written.is_set() and "SETTLE_S 1.5 s" in shown
    wait_until(lambda: done_numbers(job["output"]) == [1, 2, 3, 4], timeout=60)
    assert written.is_set()
    assert cli("stop").returncode == 0
    wait_until(lambda: job_ended(job["state"]), timeout=60)
    outputs = read_outputs(job["output"])
    assert outputs.done == {1, 2, 3, 4} and outputs.failed == {}
    assert outputs.raw[4]["report"]["chars"] == len("".join(lines))  # the whole note, not the part seen first
    steps = {key: n for key, n in calls_per_step(job).items() if key.startswith("4/")}
    assert len(steps) == 3 and set(steps.values()) == {1}, steps  # each step asked once: processed once


def test_odd_report_names_beside_good_notes_each_get_a_line_and_the_good_notes_all_finish(job: dict[str, Any]) -> None:
    write_notes(job["input"], [1, 2, 3, 5])
    odd = {"report_².txt": "ASCII digits", "report_007.txt": "rename it report_7.txt",
           "report_٤.txt": "ASCII digits"}
    for name in odd:
        (job["input"] / name).write_text("CHIEF COMPLAINT: Cough.\nASSESSMENT: Bronchitis.\n", encoding="utf-8")
    (job["input"] / "report_5.json").write_text('{"text": "CHIEF COMPLAINT: Fever."}', encoding="utf-8")
    out = start(job, "1", "--until-drained")
    for name, words in odd.items():
        line = next((line for line in out.splitlines() if line.startswith(f"{name}: not used: ")), "")
        assert words in line, (name, out)
    assert "report_5.json: not used: report_5.txt has the same number and is the one used" in out
    assert "found 4 report(s)" in out
    wait_until(lambda: job_ended(job["state"]), timeout=90)
    outputs = read_outputs(job["output"])
    assert outputs.done == {1, 2, 3, 5} and outputs.failed == {}
    assert outputs.raw[5]["report"]["source"].endswith("report_5.txt")
    final = status(job["state"])
    assert all(row["restarts"] == 0 for row in final["apis_status"].values())  # nothing crash-looped
    assert final["counts"]["pending"] == 0 and final["counts"]["done"] == 4


def test_an_odd_name_that_arrives_mid_run_is_said_once_by_a_worker(job: dict[str, Any]) -> None:
    write_notes(job["input"], [1])
    start(job, "1")
    wait_until(lambda: done_numbers(job["output"]) == [1], timeout=60)
    (job["input"] / "report_0042.txt").write_text("CHIEF COMPLAINT: Cough.\n", encoding="utf-8")
    write_notes(job["input"], [2])
    wait_until(lambda: done_numbers(job["output"]) == [1, 2], timeout=60)
    panes = wait_until(lambda: [p for p in _worker_panes(job) if "report_0042.txt: not used" in p], timeout=30)
    assert len(panes) == 1 and panes[0].count("report_0042.txt: not used") == 1
    assert "rename it report_42.txt" in panes[0]


def _worker_panes(job: dict[str, Any]) -> list[str]:
    from distill.job.tmux import TmuxSessions

    record = job["state"].running_job() or {}
    sessions = TmuxSessions(record.get("tmux_socket"), record.get("session_prefix", ""))
    return ["\n".join(sessions.capture(f"api_{i}", 200)) for i in range(1, 5)]


def test_a_second_start_is_refused_even_with_the_lock_file_and_job_record_deleted(job: dict[str, Any]) -> None:
    write_notes(job["input"], [1])
    start(job, "1")
    first = job["state"].running_job()
    assert first is not None
    job["state"].path(JOB_LOCK).unlink()
    job["state"].path(JOB_FILE).unlink()
    second = cli("start", "1", "--input-dir", str(job["input"]), "--output-dir", str(job["output"]))
    assert second.returncode != 0
    assert "another diag-distill job is running" in second.stderr and str(job["state"].root) in second.stderr
    foreground = cli("start", "1", "--foreground", "--input-dir", str(job["input"]), "--output-dir",
                     str(job["output"]))
    assert foreground.returncode != 0 and "another diag-distill job is running" in foreground.stderr
    # The running job wrote its record again and goes on.
    assert wait_until(lambda: job["state"].running_job(), timeout=10)["job_id"] == first["job_id"]
    assert status(job["state"])["state"] == "running"


def test_deleted_job_record_stop_script_settings_file_and_workers_folder_are_made_again(job: dict[str, Any]) -> None:
    write_notes(job["input"], [1])
    start(job, "1")
    wait_until(lambda: done_numbers(job["output"]) == [1], timeout=60)
    state: StateDir = job["state"]
    job_id = (state.running_job() or {})["job_id"]
    for path in (state.path(JOB_FILE), state.path(STOP_SCRIPT), env_file(state.root)):
        path.unlink()
    shutil.rmtree(state.path(WORKERS_DIR))
    wait_until(lambda: all(p.exists() for p in (state.path(JOB_FILE), state.path(STOP_SCRIPT), env_file(state.root))),
               timeout=10)
    wait_until(lambda: len(state.read_heartbeats()) == 4, timeout=20)  # every worker beats again
    assert (state.running_job() or {}).get("job_id") == job_id
    write_notes(job["input"], [2])
    wait_until(lambda: done_numbers(job["output"]) == [1, 2], timeout=60)
    assert status(job["state"])["state"] == "running"


def test_a_claims_file_deleted_mid_run_stops_the_job_saying_why_and_a_restart_finishes_every_note_once(
        job: dict[str, Any]) -> None:
    write_notes(job["input"], list(range(1, 41)))
    job["stub"].latency_s = 0.2
    start(job, "1")
    wait_until(lambda: len(done_numbers(job["output"])) >= 4, timeout=60)
    claims = job["state"].path(CLAIMS_FILE)
    claims.unlink()
    wait_until(lambda: status(job["state"]).get("stop_reason"), timeout=30)  # said, not a silent stall
    wait_until(lambda: job_ended(job["state"]), timeout=60)
    final = status(job["state"])
    assert final["state"] == "stopped"
    assert f"claims file {claims} was deleted while the job ran" in final["stop_reason"]
    assert "start it again to resume" in final["stop_reason"]
    job["stub"].latency_s = 0.02
    start(job, "1", "--until-drained")
    wait_until(lambda: job_ended(job["state"]), timeout=120)
    outputs = read_outputs(job["output"])
    assert outputs.done == set(range(1, 41)) and outputs.failed == {}
    per_report = stub_counts_by_report(calls_per_step(job))
    assert all(per_report[n] == 3 for n in range(1, 41)), per_report  # none twice
    assert stray_files(job["output"], job["state"].root) == []


def test_a_wrongly_shaped_leftover_claims_file_gives_one_line_and_the_job_runs(job: dict[str, Any]) -> None:
    write_notes(job["input"], [1, 2])
    job["state"].path(CLAIMS_FILE).write_text(json.dumps({"start": 1, "leases": [1, 2], "returned": "x"}))
    result = cli("start", "1", "--until-drained", "--input-dir", str(job["input"]), "--output-dir",
                 str(job["output"]))
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Traceback" not in result.stdout + result.stderr and "AttributeError" not in result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if CLAIMS_FILE in line]
    assert len(lines) == 1 and "malformed" in lines[0] and str(job["state"].path(CLAIMS_FILE)) in lines[0]
    wait_until(lambda: job_ended(job["state"]), timeout=60)
    assert read_outputs(job["output"]).done == {1, 2}
