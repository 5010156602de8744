"""Keys reach the job's processes through a private file, never a command line or a tmux environment."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from distill.bench.stub_answers import CallInfo, default_answer
from distill.bench.stub_server import StubServer
from distill.job.job_env import ENV_FILE
from distill.job.state import StateDir
from distill.job.tmux import TmuxSessions
from distill.results.outputs import teacher_fields
from distill.results.store import OutputStore
from tests.helpers.chaos_tools import files_containing, write_endpoint_config
from tests.helpers.jobtools import cli, done_numbers, job_ended, wait_until, write_config
from tests.helpers.notes import write_notes

CANARY = "sk-canary-handoff-3e8d1f0a9b7c"
NOTES = [1, 2, 3, 4]

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _cmdlines_holding(secret: bytes) -> list[str]:
    hits = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if secret in cmdline:
                hits.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return hits


def _tmux_environments(socket: str, sessions: list[str]) -> dict[str, str]:
    shown = {}
    for target in ["-g", *sessions]:
        args = ["-g"] if target == "-g" else ["-t", f"={target}"]
        result = subprocess.run(["tmux", "-L", socket, "show-environment", *args], capture_output=True, text=True,
                                check=False)
        shown[target] = result.stdout
    return shown


def test_the_key_is_on_no_command_line_and_in_no_tmux_environment(isolated: dict[str, Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tmp: Path = isolated["tmp"]
    state = StateDir(Path(isolated["state"]))
    write_notes(tmp / "in", NOTES)
    output = tmp / "out"
    with StubServer(latency_s=0.05, require_key=CANARY) as stub:
        monkeypatch.setenv("DIAG_CONFIG", str(write_endpoint_config(tmp, endpoints=2)))
        monkeypatch.setenv("DIAG_API_KEY", CANARY)
        monkeypatch.setenv("DIAG_BASE_URL", stub.url)
        hits: list[str] = []
        samples = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                hits.extend(_cmdlines_holding(CANARY.encode()))
                samples[0] += 1

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = cli("start", "1", "--input-dir", str(tmp / "in"), "--output-dir", str(output))
            assert result.returncode == 0, result.stderr + result.stdout
            wait_until(lambda: done_numbers(output) == NOTES, timeout=60)
            settings_file = state.path(ENV_FILE)
            assert stat.S_IMODE(settings_file.stat().st_mode) == 0o600
            assert CANARY in settings_file.read_text()  # the workers' one source of the key
            sessions = TmuxSessions(str(isolated["socket"]), str(isolated["prefix"]))
            names = [sessions.name(role) for role in sessions.roles()]
            assert len(names) == 3  # supervisor, api_1, api_2
            environments = _tmux_environments(str(isolated["socket"]), names)
        finally:
            done.set()
            sampler.join()
        assert stub.stats()["total"] >= 3 * len(NOTES)  # the key did reach the endpoint
        state.request_stop()
        wait_until(lambda: job_ended(state), timeout=60)
    assert samples[0] > 20
    assert hits == []
    assert all("DIAG_STATE_DIR" in shown for target, shown in environments.items() if target != "-g")
    assert [target for target, shown in environments.items() if CANARY in shown or "DIAG_API_KEY" in shown] == []
    assert not state.path(ENV_FILE).exists()  # removed when the job ended


def test_a_key_left_in_an_old_tmux_server_never_reaches_a_job(isolated: dict[str, Any]) -> None:
    tmp: Path = isolated["tmp"]
    socket = str(isolated["socket"])
    state = StateDir(Path(isolated["state"]))
    write_notes(tmp / "in", NOTES)
    output = tmp / "out"
    with StubServer(latency_s=0.01) as stub:
        old = {**os.environ, "DIAG_API_5_KEY": "old", "DIAG_BASE_URL": stub.url, "DIAG_MODEL": "old-model"}
        started = subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-s", "earlier", "sleep 600"], env=old,
                                 capture_output=True, text=True, check=False)
        assert started.returncode == 0, started.stderr
        global_env = subprocess.run(["tmux", "-L", socket, "show-environment", "-g", "DIAG_API_5_KEY"],
                                    capture_output=True, text=True, check=False).stdout
        assert "DIAG_API_5_KEY=old" in global_env  # so the job below does start on a server holding it
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIAG_")}
        env.update({"DIAG_STATE_DIR": str(state.root), "DIAG_TMUX_SOCKET": socket,
                    "DIAG_SESSION_PREFIX": str(isolated["prefix"]), "DIAG_CONFIG": str(write_config(tmp))})
        result = cli("start", "1", "--end", str(NOTES[-1]), "--apis", "api_5", "--input-dir", str(tmp / "in"),
                     "--output-dir", str(output), env=env)
        assert result.returncode == 0, result.stderr + result.stdout
        wait_until(lambda: done_numbers(output) == NOTES and job_ended(state), timeout=60)
        assert stub.stats()["total"] == 0
    store = OutputStore(output)
    teachers = [teacher_fields(json.loads(store.raw_path(n).read_text())) for n in NOTES]
    assert {t["teacher"] for t in teachers} == {"api_5"}
    assert {t["teacher_kind"] for t in teachers} == {"local"}


def _echoing_answer(call: CallInfo) -> dict[str, Any]:
    """A valid answer that also repeats the caller's key; for report 2 an unusable one that repeats it."""
    if call.report == 2:
        return {"result": f"cannot help, key {call.api_key}"}
    return {**default_answer(call), "echo": f"authorised with {call.api_key}"}


def test_a_key_echoed_inside_a_200_answer_reaches_no_file_and_no_pane(isolated: dict[str, Any],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tmp: Path = isolated["tmp"]
    state = StateDir(Path(isolated["state"]))
    write_notes(tmp / "in", NOTES)
    output = tmp / "out"
    with StubServer(latency_s=0.01, require_key=CANARY, responder=_echoing_answer) as stub:
        monkeypatch.setenv("DIAG_CONFIG", str(write_endpoint_config(tmp, endpoints=1, max_attempts=2)))
        monkeypatch.setenv("DIAG_API_KEY", CANARY)
        monkeypatch.setenv("DIAG_BASE_URL", stub.url)
        result = cli("start", "1", "--end", str(NOTES[-1]), "--input-dir", str(tmp / "in"), "--output-dir",
                     str(output))
        assert result.returncode == 0, result.stderr + result.stdout
        sessions = TmuxSessions(str(isolated["socket"]), str(isolated["prefix"]))
        panes: dict[str, list[str]] = {}

        def settled() -> bool:
            panes.update({role: sessions.capture(role, 5000) for role in sessions.roles()})
            return sorted([*done_numbers(output), 2]) == NOTES and OutputStore(output).failed_path(2).exists()

        wait_until(settled, timeout=60)
        hits_running = [p for p in files_containing(CANARY.encode(), state.root, output) if p.name != ENV_FILE]
        wait_until(lambda: job_ended(state), timeout=60)
        (tmp / "export").mkdir()
        export = cli("export", "--output-dir", str(output), "--to", str(tmp / "export" / "train.jsonl"))
    assert hits_running == []
    assert files_containing(CANARY.encode(), state.root, output, tmp / "export") == []
    failure = json.loads(OutputStore(output).failed_path(2).read_text())
    assert failure["error_class"] == "invalid_output"  # the echoing answer was received and judged
    assert "api_1" in panes and any("saved" in line or "done" in line for line in panes["api_1"])
    assert [line for lines in panes.values() for line in lines if CANARY in line] == []
    assert CANARY not in result.stdout + result.stderr + export.stdout + export.stderr
