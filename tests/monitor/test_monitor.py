"""The monitor: snapshots built from fixture state directories, their rendering, ``--json`` and the wrapper."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from distill.cli.monitor_cmd import command as monitor_command
from distill.core.redact import scrub_secrets
from distill.job.state import JOB_FILE, StateDir, my_identity
from distill.job.status import Throughput, build_status, iso
from distill.monitor.snapshot import MonitorConfig, Snapshot, take_snapshot
from distill.monitor.view import duration, render, watch

PROJECT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "state"
DEAD = "999999999:1"
JOB_ID = "a1b2c3d4e5f6"
CHECK_INTERVAL = 5.0
FAKE_KEY = "sk-proj-Zx81Qa9LmN3vB7cD5eF2gH4jK6"


def stats(done: int = 0, failed: int = 0, *, recent: list[dict[str, Any]] | None = None,
          failures: dict[str, int] | None = None) -> dict[str, Any]:
    """A heartbeat's ``stats`` as ``WorkerStats.to_dict`` writes it."""
    return {"done": done, "failed": failed, "calls": 3 * (done + failed), "prompt_tokens": 900 * done,
            "completion_tokens": 300 * done, "cached_tokens": 600 * done, "cost": 0.001 * done, "latency_s": round(0.4 * 3 * (done + failed), 3),
            "bytes_written": 5000 * done, "failures": dict(failures or {}), "recent": list(recent or [])}


def heartbeat(api: str, state: str, *, now: float, alive: bool = True, **details: Any) -> dict[str, Any]:
    """A heartbeat in the worker's format (see ``Worker.beat``); ``alive`` picks a live or a dead identity."""
    return {
        "api": api, "job_id": JOB_ID, "pid": os.getpid() if alive else 999999999,
        "identity": my_identity() if alive else DEAD, "endpoint": f"{api}: offline teacher",
        "model": "local-rules", "teacher": "local", "state": state, "since": now - 30,
        "last_error": details.pop("last_error", ""), "started": iso(now - 3600),
        "started_epoch": now - 3600, "updated": now - 1, "stats": details.pop("stats", stats()), **details,
    }


def result(report: int, at: str, *, status: str = "done", findings: int = 4) -> dict[str, Any]:
    return {"report": report, "status": status, "at": at, "findings": findings, "units": findings,
            "bytes": 5120 if status == "done" else 0, "error_class": "" if status == "done" else "invalid_output",
            "duration_s": 1.5}


def write_job_state(root: Path, beats: dict[str, dict[str, Any] | None], *, now: float,
                    views: dict[str, dict[str, Any]] | None = None, alive: bool = True, state: str = "running",
                    status_at: float | None = None, stop_flag: bool = False) -> StateDir:
    """A state directory as a supervisor leaves it: job record, status file (``build_status``), heartbeats."""
    folder = StateDir(root)
    folder.ensure()
    job = {
        "job_id": JOB_ID, "pid": os.getpid() if alive else 999999999, "identity": my_identity() if alive else DEAD,
        "started_at": iso(now - 3600), "start": 10001, "end": None, "apis": list(beats),
        "until_drained": False, "input_dir": "/data/notes", "output_dir": "/data/out", "state_dir": str(root),
        "tmux_socket": "default", "session_prefix": "continuous_diag", "check_interval": CHECK_INTERVAL,
    }
    folder.arm_stop_flag(JOB_ID)  # as the supervisor does: the flag exists while the job runs
    folder.write_job(job)
    present = {api: beat for api, beat in beats.items() if beat is not None}
    throughput = Throughput()
    throughput.add((status_at or now) - 120, 0)
    status = build_status(job=job, state=state, claims={"counter": 10040, "leases": {"10039": {}, "10040": {}},
                                                        "scan": {"existing": 200}},
                          begin_scan={"done": 10, "failed": 1, "existing": 200},
                          begin_outputs={"raw": 10, "normalized": 10, "logs": 11, "failed": 1},
                          beats=present, views=views or {}, throughput=throughput, now=status_at or now)
    folder.write_status(status)
    for api, beat in present.items():
        folder.write_heartbeat(api, beat)
    if stop_flag:
        folder.request_stop()
    return folder


def snapshot_of(root: Path, now: float) -> Snapshot:
    return take_snapshot(MonitorConfig(state_dir=root, check_interval=CHECK_INTERVAL), now=now)


def rendered(snap: Snapshot, width: int = 80) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(render(snap, console.width))
    return console.export_text()


def flat(text: str) -> str:
    """Rendered text without box drawing and line breaks, so a wrapped sentence reads as one."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", text).split())


def test_fixture_heartbeats_have_the_worker_format() -> None:
    from distill.job.heartbeat import WorkerStats

    assert set(stats()) == set(WorkerStats().to_dict())


# --- endpoint states ----------------------------------------------------------------------------------------

ENDPOINT_CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str, str]] = {
    # name: (heartbeat fields, supervisor view, expected state, text the row shows)
    "working": ({"state": "working", "report": 10005, "step": "findings"}, {}, "working", "10005 findings"),
    "idle": ({"state": "idle"}, {}, "idle", "idle"),
    "backing_off": ({"state": "working", "report": 10006, "step": "organs", "backing_off_until": 60.0},
                    {}, "backing_off", "backing off"),
    "disabled": ({"state": "exited", "exit_code": 3, "reason": "disabled: 401 from endpoint"},
                 {"state": "disabled", "reason": "disabled: 401 from endpoint"}, "disabled", "401 from endpo"),
    "failed": ({"state": "exited", "exit_code": 2, "reason": "bad base_url"},
               {"state": "failed", "reason": "worker failed 5 times in a row"}, "failed", "worker failed"),
    "not_started": ({}, {}, "not_started", "not started"),
    "exited": ({"state": "exited", "exit_code": 0, "reason": "stop requested"}, {"state": "exited"}, "exited",
               "stop requested"),
    "died": ({"state": "working", "report": 10007, "step": "mapping", "alive": False}, {}, "died", "died"),
    "respawning": ({"state": "exited", "exit_code": 70, "reason": "crashed", "alive": False},
                   {"state": "respawning", "reason": "crashed", "restarts": 1}, "respawning", "respawning"),
}


@pytest.mark.parametrize("case", list(ENDPOINT_CASES))
def test_endpoint_state_is_shown(tmp_path: Path, case: str) -> None:
    fields, view, expected, shown = ENDPOINT_CASES[case]
    now = time.time()
    fields = dict(fields)
    beat = None
    if fields:
        alive = fields.pop("alive", True)
        if "backing_off_until" in fields:
            fields["backing_off_until"] = now + fields["backing_off_until"]
        beat = heartbeat("api_1", fields.pop("state"), now=now, alive=alive, **fields)
    write_job_state(tmp_path, {"api_1": beat, "api_2": heartbeat("api_2", "idle", now=now)},
                    views={"api_1": view} if view else None, now=now)
    snap = snapshot_of(tmp_path, now)
    row = snap.endpoints[0]
    assert (row.api, row.state) == ("api_1", expected)
    line = next(line for line in rendered(snap).splitlines() if "api_1" in line)
    assert shown in line


def test_working_endpoint_shows_step_elapsed_time(tmp_path: Path) -> None:
    now = time.time()
    beat = heartbeat("api_1", "working", now=now, report=10005, step="organs", step_since=now - 75)
    write_job_state(tmp_path, {"api_1": beat}, now=now)
    row = snapshot_of(tmp_path, now).endpoints[0]
    assert (row.report, row.step, round(row.elapsed_s or 0)) == (10005, "organs", 75)
    assert duration(row.elapsed_s) == "1m 15s"


def test_heartbeat_counts_are_fresher_than_the_status(tmp_path: Path) -> None:
    now = time.time()
    folder = write_job_state(tmp_path, {"api_1": heartbeat("api_1", "idle", now=now, stats=stats(2))}, now=now)
    folder.write_heartbeat("api_1", heartbeat("api_1", "idle", now=now, stats=stats(7, 1)))
    row = snapshot_of(tmp_path, now).endpoints[0]
    assert (row.done, row.failed, row.mean_latency_s, row.tokens) == (7, 1, 0.4, 7 * 1200)


def test_endpoints_are_in_numeric_order_with_totals(tmp_path: Path) -> None:
    now = time.time()
    beats: dict[str, dict[str, Any] | None] = {
        f"api_{i}": heartbeat(f"api_{i}", "working" if i % 2 else "idle", now=now, report=10000 + i, step="findings")
        for i in (10, 2, 1, 3)
    }
    write_job_state(tmp_path, beats, now=now)
    snap = snapshot_of(tmp_path, now)
    assert [row.api for row in snap.endpoints] == ["api_1", "api_2", "api_3", "api_10"]
    assert (snap.endpoint_totals["active"], snap.endpoint_totals["idle"]) == (2, 2)


# --- the system panel ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("age", "stale"), [("fresh", False), ("two_intervals", False), ("past_three", True)])
def test_stale_status_is_flagged(tmp_path: Path, age: str, stale: bool) -> None:
    written = time.time()
    write_job_state(tmp_path, {"api_1": heartbeat("api_1", "idle", now=written)}, now=written, status_at=written)
    seconds = {"fresh": 1.0, "two_intervals": 2 * CHECK_INTERVAL, "past_three": 3 * CHECK_INTERVAL + 1}[age]
    snap = snapshot_of(tmp_path, written + seconds)
    assert snap.system["stale"] is stale
    assert ("STALE" in rendered(snap)) is stale


@pytest.mark.parametrize(("alive", "flag", "state"), [
    ("alive", False, "running"), ("alive", True, "stopping"), ("dead", False, "stopped"),
])
def test_system_state_follows_the_job_record_and_the_stop_flag(tmp_path: Path, alive: str, flag: bool,
                                                               state: str) -> None:
    now = time.time()
    write_job_state(tmp_path, {"api_1": heartbeat("api_1", "idle", now=now)}, now=now, alive=alive == "alive",
                    stop_flag=flag)
    snap = snapshot_of(tmp_path, now)
    assert snap.system["state"] == state
    assert state in rendered(snap)


def test_stopping_shows_how_to_cancel(tmp_path: Path) -> None:
    now = time.time()
    folder = write_job_state(tmp_path, {"api_1": heartbeat("api_1", "idle", now=now)}, now=now, stop_flag=True)
    snap = snapshot_of(tmp_path, now)
    assert folder.stop_requested()
    assert snap.control["cancel_stop"] == "diag-distill stop --cancel"
    assert "cancel: diag-distill stop --cancel" in flat(rendered(snap))


def test_dead_supervisor_is_stopped_and_says_so(tmp_path: Path) -> None:
    now = time.time()
    write_job_state(tmp_path, {"api_1": heartbeat("api_1", "working", now=now, alive=False, report=10003,
                                                  step="findings")}, now=now, alive=False)
    snap = snapshot_of(tmp_path, now)
    assert snap.system["state"] == "stopped" and not snap.system["stale"]
    assert snap.endpoints[0].state == "died"
    assert any("supervisor is not running" in p for p in snap.problems)


@pytest.mark.parametrize("identity", [None, 12345, ["x"]], ids=["null", "number", "list"])
def test_heartbeat_with_a_foreign_identity_is_shown_died(tmp_path: Path, identity: Any) -> None:
    now = time.time()
    write_job_state(tmp_path, {"api_1": heartbeat("api_1", "working", now=now, identity=identity)}, now=now)
    snap = snapshot_of(tmp_path, now)
    assert snap.system["state"] == "running"
    assert snap.endpoints[0].state == "died"


def test_finished_job_without_heartbeats_shows_endpoints_exited(tmp_path: Path) -> None:
    now = time.time()
    folder = write_job_state(tmp_path, {"api_1": heartbeat("api_1", "working", now=now, report=10003)},
                             now=now, alive=False, state="stopped")
    folder.clear_heartbeats()
    folder.path(JOB_FILE).unlink()
    snap = snapshot_of(tmp_path, now)
    assert snap.system["state"] == "stopped"
    assert [(row.state, row.report) for row in snap.endpoints] == [("exited", None)]
    assert snap.problems == []


def test_never_started_gives_a_clear_line(tmp_path: Path) -> None:
    snap = snapshot_of(tmp_path, time.time())
    assert snap.system["state"] == "never_started" and snap.endpoints == []
    text = rendered(snap)
    assert "never started" in text and "make start START=" in flat(text)


def test_missing_state_directory_gives_a_clear_line(tmp_path: Path) -> None:
    snap = snapshot_of(tmp_path / "nowhere", time.time())
    assert snap.system["state"] == "never_started"
    assert any("does not exist" in p for p in snap.problems)


@pytest.mark.parametrize("content", [b"{\"start_time\": \"2030-", b"\x00\xff garbage", b"[1, 2, 3]"],
                         ids=["truncated", "binary", "not_an_object"])
def test_corrupt_status_gives_a_clear_line(tmp_path: Path, content: bytes) -> None:
    now = time.time()
    folder = write_job_state(tmp_path, {"api_1": heartbeat("api_1", "working", now=now, report=10002,
                                                           step="organs")}, now=now)
    folder.status_path.write_bytes(content)
    snap = snapshot_of(tmp_path, now)
    assert snap.system["status_read"] == "unusable"
    assert snap.endpoints[0].state == "working"  # the heartbeats still tell
    assert "is corrupt" in flat(rendered(snap))


def test_status_from_another_program_does_not_crash(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "foreign_status", tmp_path / "state")
    snap = snapshot_of(tmp_path / "state", time.time())
    assert snap.system["status_read"] == "foreign" and snap.system["state"] == "stopped"
    assert snap.progress["start_number"] == 10001
    assert "api_1" in rendered(snap)


def test_status_symlink_is_not_followed(tmp_path: Path) -> None:
    now = time.time()
    folder = write_job_state(tmp_path / "state", {"api_1": heartbeat("api_1", "idle", now=now)}, now=now)
    target = tmp_path / "elsewhere.json"
    folder.status_path.rename(target)
    folder.status_path.symlink_to(target)
    snap = snapshot_of(folder.root, now)
    assert snap.system["status_read"] == "unusable"
    assert any("symbolic link" in p for p in snap.problems)


# --- other panels -------------------------------------------------------------------------------------------


def test_progress_outputs_recent_and_failures(tmp_path: Path) -> None:
    now = time.time()
    recent1 = [result(10001, "2030-01-01T10:00:01+00:00"), result(10003, "2030-01-01T10:00:03+00:00")]
    recent2 = [result(10002, "2030-01-01T10:00:02+00:00", status="failed", findings=0)]
    beats: dict[str, dict[str, Any] | None] = {
        "api_1": heartbeat("api_1", "idle", now=now, stats=stats(2, recent=recent1)),
        "api_2": heartbeat("api_2", "idle", now=now, last_error="report 10002: invalid_output: no JSON",
                           stats=stats(0, 1, recent=recent2, failures={"invalid_output": 1})),
    }
    write_job_state(tmp_path, beats, now=now)
    snap = snapshot_of(tmp_path, now)
    assert snap.progress["done"] == 12 and snap.progress["failed"] == 2 and snap.progress["in_flight"] == 2
    assert snap.progress["pending"] == 200 - 12 - 2 - 2
    assert snap.outputs == {"raw": 12, "normalized": 12, "logs": 14, "failed": 2, "bytes_this_job": 10000}
    assert [r["report"] for r in snap.recent] == [10003, 10002, 10001]
    assert snap.recent[0]["api"] == "api_1"
    assert snap.failures_by_class == {"invalid_output": 1}
    text = rendered(snap, width=200)  # long temporary paths stay on one line
    assert "report 10002: invalid_output: no JSON" in text
    assert f"stop: {snap.control['stop_script']}" in flat(text) and "tmux attach -t continuous_diag_api_<N>" in text


def test_eighty_columns_hold_sixteen_endpoints_and_long_errors(tmp_path: Path) -> None:
    now = time.time()
    beats: dict[str, dict[str, Any] | None] = {
        f"api_{i}": heartbeat(f"api_{i}", "working", now=now, report=1_000_000 + i, step="mapping",
                              stats=stats(123456, 789, failures={"api_unavailable": 789}),
                              last_error="report 1000001: api_unavailable: " + "connection refused " * 20)
        for i in range(1, 17)
    }
    write_job_state(tmp_path / "s", beats, now=now, stop_flag=True)
    snap = snapshot_of(tmp_path / "s", now + 10 * CHECK_INTERVAL)
    lines = rendered(snap).splitlines()
    assert len(lines) > 40
    assert max(len(line) for line in lines) <= 80
    assert sum("1000016 mapping" in line for line in lines) == 1


# --- secrets ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    f"401: Authorization: Bearer {FAKE_KEY}", f"invalid api key {FAKE_KEY} rejected", f"url?api_key={FAKE_KEY}",
    "bearer abcdefghij0123456789", "token=hunter2hunter2", "ab12" * 10,
], ids=["bearer_header", "bare_sk_key", "query_parameter", "lowercase_bearer", "token_value", "long_token"])
def test_scrub_secrets_masks_key_shapes(text: str) -> None:
    scrubbed = scrub_secrets(text)
    assert FAKE_KEY not in scrubbed and "abcdefghij0123456789" not in scrubbed
    assert "hunter2" not in scrubbed and "ab12ab12ab12" not in scrubbed
    assert "[redacted]" in scrubbed


def test_scrub_secrets_keeps_ordinary_errors() -> None:
    text = "report 10002: invalid_output: 1200 tokens, finish_reason length at /data/out/logs/diagnostic_10002.log"
    assert scrub_secrets(text) == text


def test_monitor_never_shows_a_key(tmp_path: Path) -> None:
    now = time.time()
    beat = heartbeat("api_1", "idle", now=now, last_error=f"401 from endpoint: Bearer {FAKE_KEY}")
    write_job_state(tmp_path, {"api_1": beat}, now=now)
    snap = snapshot_of(tmp_path, now)
    assert FAKE_KEY not in rendered(snap)
    assert FAKE_KEY not in json.dumps(snap.to_dict())


# --- refresh cost -------------------------------------------------------------------------------------------


def test_snapshot_never_lists_the_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    write_job_state(tmp_path / "state", {"api_1": heartbeat("api_1", "idle", now=now)}, now=now)
    listed: list[str] = []
    real_listdir, real_scandir = os.listdir, os.scandir

    def listdir(path: Any = ".") -> list[str]:
        listed.append(str(path))
        return real_listdir(path)

    def scandir(path: Any = ".") -> Any:
        listed.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(os, "scandir", scandir)
    take_snapshot(MonitorConfig(state_dir=tmp_path / "state", output_dir=tmp_path / "out"), now=now)
    assert listed and all(path.startswith(str(tmp_path / "state")) for path in listed)


# --- the command line ---------------------------------------------------------------------------------------

DOCUMENTED = re.compile(r"^\| `([a-z_]+(?:\.[a-z_]+)*)`", re.MULTILINE)


def test_json_snapshot_fields_are_documented(isolated: dict[str, Any]) -> None:
    now = time.time()
    write_job_state(Path(isolated["state"]), {"api_1": heartbeat("api_1", "working", now=now, report=10001,
                                                                 step="findings", stats=stats(
                                                                     1, recent=[result(10000, "2030-01-01T10:00")]))},
                    now=now)
    outcome = CliRunner().invoke(monitor_command, ["--json"])
    assert outcome.exit_code == 0, outcome.output
    data = json.loads(outcome.output)
    documented = set(DOCUMENTED.findall((PROJECT / "docs" / "monitor.md").read_text(encoding="utf-8")))
    fields = {key for key in data} | {f"{section}.{key}" for section in
                                      ("system", "progress", "endpoint_totals", "outputs", "control", "tokens")
                                      for key in data[section]}
    fields |= {f"endpoints.{key}" for key in data["endpoints"][0]} | {f"recent.{key}" for key in data["recent"][0]}
    assert fields - documented == set()
    assert data["format"] == "diag-distill/monitor-v1"
    assert data["system"]["state"] == "running" and data["endpoints"][0]["state"] == "working"


@pytest.mark.parametrize("state", ["never_started", "corrupt"])
def test_once_prints_a_clear_line_and_exits_zero(isolated: dict[str, Any], state: str) -> None:
    if state == "corrupt":
        (Path(isolated["state"]) / "continuous_diag_distillation_status.json").write_text("{oops")
    outcome = CliRunner().invoke(monitor_command, ["--once"])
    assert outcome.exit_code == 0, outcome.output
    assert "Traceback" not in outcome.output
    assert ("never started" if state == "never_started" else "is corrupt") in outcome.output


def test_watch_repaints_each_tick_and_quits_on_ctrl_c(tmp_path: Path) -> None:
    now = time.time()
    write_job_state(tmp_path, {"api_1": heartbeat("api_1", "idle", now=now)}, now=now)
    taken: list[float] = []
    sleeps: list[float] = []

    def take() -> Snapshot:
        taken.append(time.time())
        return snapshot_of(tmp_path, now)

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    screen = io.StringIO()
    console = Console(width=80, file=screen, force_terminal=True)
    assert watch(take, interval=10.0, console=console, sleep=sleep) == 0
    assert (len(taken), sleeps) == (3, [10.0, 10.0, 10.0])
    assert "api_1" in screen.getvalue()


def test_wrapper_help_prints_usage_without_building() -> None:
    script = PROJECT / "scripts" / "distillation" / "monitor_diag_continuous.sh"
    done = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0
    assert "usage:" in done.stdout and "--once" in done.stdout and "10 s" in done.stdout


def test_every_panel_fits_an_80_by_24_terminal_and_the_endpoints_that_do_not_fit_are_summarized(
        tmp_path: Path) -> None:
    now = time.time()
    beats = {f"api_{i}": heartbeat(f"api_{i}", "working" if i % 3 else "idle", now=now,
                                   stats=stats(i, recent=[result(10000 + i, iso(now - 5))]),
                                   **({"report": 10000 + i, "step": "organs"} if i % 3 else {}))
             for i in range(1, 17)}
    beats["api_2"].update(model="teacher-model-x", teacher="llm")
    write_job_state(tmp_path / "state", beats, now=now)
    snap = snapshot_of(tmp_path / "state", now)
    console = Console(width=80, height=24, record=True, file=io.StringIO(), color_system=None)
    console.print(render(snap, 80, 24, live=True))
    lines = console.export_text().splitlines()
    assert len(lines) <= 23 and max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    for part in ("running", "done 146", "api_1 ", "teacher-model-x", "not shown", "outputs", "Recent results",
                 "10001", "failures", "stop:", "attach:", "quit:"):
        assert part in text, part
    assert "Endpoints (16: offline 15, teacher-model-x 1)" in text
    working = [line for line in lines if " working " in line]
    assert len(working) >= 4  # busy endpoints are shown before idle ones are summarized


def test_a_one_off_snapshot_has_no_quit_line_and_a_stopped_job_no_throughput(tmp_path: Path) -> None:
    now = time.time()
    write_job_state(tmp_path / "state", {"api_1": heartbeat("api_1", "idle", now=now)}, now=now)
    snap = snapshot_of(tmp_path / "state", now)
    assert "quit:" not in rendered(snap) and "throughput" in rendered(snap)
    write_job_state(tmp_path / "stopped", {"api_1": heartbeat("api_1", "exited", now=now)}, now=now,
                    state="stopped", alive=False)
    stopped = snapshot_of(tmp_path / "stopped", now)
    assert stopped.system["state"] == "stopped"
    assert "throughput" not in rendered(stopped) and "ETA" not in rendered(stopped)
