"""Secrets stay secret; the state and output folders are private and refuse planted symlinks.

One real job runs with a canary key (and, for one endpoint, a wrong canary
key that the stub echoes in its 401 body); the tests then look for either key
in every file, every tmux pane and every error message it produced.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from distill.bench.stub_server import StubServer
from distill.core.config import Endpoint, Secret
from distill.core.errors import EndpointAuthError, OutputWriteError, StateDirError
from distill.extraction.http_client import ChatClient
from distill.job.claims import CLAIMS_QUEUE, ClaimBook
from distill.job.job_env import ENV_FILE
from distill.job.state import (
    CLAIMS_FILE,
    CLAIMS_LOCK,
    COUNTER_FILE,
    INDEX_FILE,
    JOB_FILE,
    JOB_LOCK,
    STATUS_FILE,
    STOP_FLAG,
    STOP_SCRIPT,
    WORKERS_DIR,
    StateDir,
)
from distill.job.tmux import TmuxSessions
from distill.results.atomic import TMP_MARK
from distill.results.store import OutputStore
from tests.helpers.chaos_tools import files_containing, write_endpoint_config
from tests.helpers.jobtools import cli, done_numbers, job_ended, status, wait_until, write_config
from tests.helpers.notes import write_notes

CANARY = "sk-canary-7f3a9c1e5b2d4068"
WRONG_CANARY = "sk-canary-wrong-0b1c2d3e4f5a"
NOTES = [1, 2, 3, 4, 5, 6]
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _private(path: Path) -> bool:
    """No group or other bits; a file renamed away while the job runs (a temporary) is not a finding."""
    try:
        return stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0
    except FileNotFoundError:
        return True


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A job on three endpoints (api_2 with a wrong key) run to the end; pane captures taken before it stopped."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    tmp = tmp_path_factory.mktemp("secrets")
    tag = uuid.uuid4().hex[:8]
    socket = f"diagtest_{tag}"
    stub = StubServer(latency_s=0.02, require_key=CANARY).start()
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith("DIAG_"):
                env.delenv(name)
        env.setenv("DIAG_STATE_DIR", str(tmp / "state"))  # created by start
        env.setenv("DIAG_TMUX_SOCKET", socket)
        env.setenv("DIAG_SESSION_PREFIX", f"t{tag}")
        env.setenv("DIAG_CONFIG", str(write_endpoint_config(tmp, endpoints=3)))
        env.setenv("DIAG_API_KEY", CANARY)
        env.setenv("DIAG_API_2_KEY", WRONG_CANARY)
        env.setenv("DIAG_BASE_URL", stub.url)
        state = StateDir(tmp / "state")
        output = tmp / "new" / "out"  # created by start
        write_notes(tmp / "in", NOTES)
        try:
            result = cli("start", "1", "--input-dir", str(tmp / "in"), "--output-dir", str(output))
            assert result.returncode == 0, result.stderr + result.stdout
            sessions = TmuxSessions(socket, f"t{tag}")
            wait_until(lambda: done_numbers(output) == NOTES, timeout=60)
            wait_until(lambda: status(state).get("apis_status", {}).get("api_2", {}).get("state") == "disabled",
                       timeout=30)
            panes = {role: sessions.capture(role, 5000) for role in sessions.roles()}
            running = {path: _private(path) for path in [state.root, *state.root.rglob("*")]}
            # The job's private settings file is the one place the keys are meant to be while it runs.
            hits_running = [p for key in (CANARY, WRONG_CANARY) for p in files_containing(key.encode(), state.root,
                                                                                            output)
                            if p != state.path(ENV_FILE)]
            final_status = status(state)
            state.request_stop()
            wait_until(lambda: job_ended(state), timeout=60)
            yield {"state": state, "output": output, "panes": panes, "running_modes": running, "hits": hits_running,
                   "status": final_status, "tmp": tmp, "result": result}
        finally:
            if state.running_job() is not None:
                cli("stop", "--now")
            subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
            stub.stop()


# --- secrets -----------------------------------------------------------------------------


@needs_tmux
def test_neither_key_is_in_any_file_under_the_state_and_output_folders(finished_job: dict[str, Any]) -> None:
    folders = (finished_job["state"].root, finished_job["output"])
    assert sum(1 for folder in folders for _ in folder.rglob("*")) > 10  # the job did write files
    for key in (CANARY, WRONG_CANARY):
        assert files_containing(key.encode(), *folders) == []
    assert finished_job["hits"] == []  # nor while it ran (heartbeats are removed at the end)
    assert not finished_job["state"].path(ENV_FILE).exists()


@needs_tmux
def test_neither_key_is_in_any_tmux_pane_or_in_the_start_output(finished_job: dict[str, Any]) -> None:
    panes = finished_job["panes"]
    assert {"supervisor", "api_1", "api_2", "api_3"} <= set(panes)
    assert any("saved" in line for line in panes["api_1"] + panes["api_3"])  # the capture holds the live log
    for key in (CANARY, WRONG_CANARY):
        assert not [(role, line) for role, lines in panes.items() for line in lines if key in line]
        assert key not in finished_job["result"].stdout + finished_job["result"].stderr


@needs_tmux
def test_a_401_disables_its_endpoint_with_a_message_that_does_not_hold_the_key(finished_job: dict[str, Any],
                                                                               ) -> None:
    api_2 = finished_job["status"]["apis_status"]["api_2"]
    shown = str(api_2)
    assert api_2["state"] == "disabled" and "401" in shown
    assert WRONG_CANARY not in shown and CANARY not in shown
    assert any("api_2" in line and "disabled" in line for line in finished_job["panes"]["supervisor"])


def test_the_stub_echoes_a_wrong_key_and_the_client_error_does_not() -> None:
    with StubServer(require_key=CANARY) as stub:
        echoed = requests.post(stub.url + "/chat/completions", json={"model": "m", "messages": []},
                               headers={"Authorization": f"Bearer {WRONG_CANARY}"}, timeout=5)
        assert echoed.status_code == 401 and WRONG_CANARY in echoed.text  # so the scrubbing below is tested
        endpoint = Endpoint(name="api_5", base_url=stub.url, model="m", provider="openai",
                            api_key=Secret(WRONG_CANARY))
        client = ChatClient(endpoint)
        calls: list[Any] = []
        with pytest.raises(EndpointAuthError) as caught:
            client.chat([{"role": "user", "content": "[report: 1]"}], step="findings", calls=calls)
        client.close()
    told = "".join(traceback.format_exception(caught.value)) + repr(caught.value) + repr(calls) + repr(client)
    assert "401" in str(caught.value) and "api_5" in str(caught.value)
    assert WRONG_CANARY not in told


# --- private folders ------------------------------------------------------------------------


@needs_tmux
def test_the_state_directory_and_everything_in_it_is_private(finished_job: dict[str, Any]) -> None:
    running = finished_job["running_modes"]
    state: StateDir = finished_job["state"]
    assert state.path(STATUS_FILE) in running and state.path(WORKERS_DIR) / "api_1.json" in running
    assert [path for path, private in running.items() if not private] == []
    assert [path for path in [state.root, *state.root.rglob("*")] if not _private(path)] == []
    assert stat.S_IMODE(state.root.stat().st_mode) == 0o700


@needs_tmux
def test_the_output_folder_is_created_0700_and_its_files_are_private(finished_job: dict[str, Any]) -> None:
    output: Path = finished_job["output"]
    assert stat.S_IMODE(output.stat().st_mode) == 0o700
    entries = list(output.rglob("*"))
    assert len([p for p in entries if p.is_file()]) >= 3 * len(NOTES)
    for path in entries:
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


# --- planted symlinks -------------------------------------------------------------------------


def _writers(tmp_path: Path) -> dict[str, Callable[[StateDir], object]]:
    """Each state file, and the operation of a job that writes it."""
    def claims(state: StateDir) -> object:
        (tmp_path / "in").mkdir(exist_ok=True)
        return ClaimBook(state, OutputStore(tmp_path / "out"), tmp_path / "in").begin(1, None)

    return {
        STATUS_FILE: lambda state: state.write_status({"state": "running"}),
        COUNTER_FILE: claims,
        CLAIMS_FILE: claims,
        INDEX_FILE: claims,
        CLAIMS_LOCK: claims,
        CLAIMS_QUEUE: claims,
        JOB_FILE: lambda state: state.write_job({"pid": 1}),
        JOB_LOCK: lambda state: state.acquire_job_lock(),
        STOP_SCRIPT: lambda state: state.write_stop_script(sys.executable),
        STOP_FLAG: lambda state: state.request_stop(),
        WORKERS_DIR: lambda state: state.ensure(),
        f"{WORKERS_DIR}/api_1.json": lambda state: state.write_heartbeat("api_1", {"state": "idle"}),
        f".{CLAIMS_FILE}.slot-1": claims,  # the hidden files the claims file and the counter take turns with
        f".{COUNTER_FILE}.slot-1": claims,
    }


@pytest.mark.parametrize("name", [STATUS_FILE, COUNTER_FILE, CLAIMS_FILE, INDEX_FILE, CLAIMS_LOCK, CLAIMS_QUEUE, JOB_FILE,
                                  JOB_LOCK, STOP_SCRIPT, STOP_FLAG, WORKERS_DIR, f"{WORKERS_DIR}/api_1.json",
                                  f".{CLAIMS_FILE}.slot-1", f".{COUNTER_FILE}.slot-1"])
def test_a_symlink_planted_at_a_state_file_is_refused_not_followed(tmp_path: Path, name: str) -> None:
    state = StateDir(tmp_path / "state")
    state.root.mkdir(mode=0o700)
    if "/" in name:
        state.path(WORKERS_DIR).mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    state.path(name).symlink_to(victim)
    with pytest.raises(StateDirError, match="symbolic link"):
        _writers(tmp_path)[name](state)
    assert victim.read_text() == "precious\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert state.path(name).is_symlink()


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / f"{TMP_MARK}{STATUS_FILE}.{threading.get_native_id()}.{os.getpid()}").symlink_to(victim)
    with pytest.raises(OutputWriteError, match=STATUS_FILE):
        state.write_status({"state": "running"})
    assert victim.read_text() == "precious\n"


@needs_tmux
@pytest.mark.parametrize("name", [JOB_LOCK, WORKERS_DIR, STATUS_FILE])
def test_start_refuses_a_planted_symlink_with_one_line_naming_it(isolated: dict[str, Any], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("DIAG_CONFIG", str(write_config(tmp_path)))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = Path(isolated["state"]) / name
    planted.symlink_to(victim)
    write_notes(tmp_path / "in", [1])
    result = cli("start", "1", "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"))
    assert result.returncode != 0
    assert f"{planted} is a symbolic link; refusing to follow it" in result.stderr
    assert victim.read_text() == "precious\n"
    wait_until(lambda: StateDir(Path(isolated["state"])).running_job() is None, timeout=10)


# --- input files --------------------------------------------------------------------------------


@needs_tmux
def test_a_symlink_to_a_file_outside_the_input_folder_is_bad_input_and_never_sent(
        isolated: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    tmp: Path = isolated["tmp"]
    write_notes(tmp / "in", [1, 2])
    outside = tmp / "private.txt"
    outside.write_text("CHIEF COMPLAINT: text that must never leave this machine.\n")
    (tmp / "in" / "report_3.txt").symlink_to(outside)
    output = tmp / "out"
    state = StateDir(Path(isolated["state"]))
    with StubServer(latency_s=0.01, require_key=CANARY) as stub:
        monkeypatch.setenv("DIAG_CONFIG", str(write_endpoint_config(tmp, endpoints=1)))
        monkeypatch.setenv("DIAG_API_KEY", CANARY)
        monkeypatch.setenv("DIAG_BASE_URL", stub.url)
        result = cli("start", "1", "--end", "3", "--input-dir", str(tmp / "in"), "--output-dir", str(output))
        assert result.returncode == 0, result.stderr + result.stdout
        wait_until(lambda: job_ended(state), timeout=60)
        sent = stub.stats()["by_report_step"]
    assert done_numbers(output) == [1, 2]
    assert any(key.startswith("1/") for key in sent)  # the stub does see the regular notes
    assert [key for key in sent if key.startswith("3/")] == []
    failure = json.loads(OutputStore(output).failed_path(3).read_text())
    assert failure["error_class"] == "bad_input"
    assert "symbolic link" in str(failure) and str(outside) in str(failure)


@needs_tmux
def test_follow_symlinks_reads_links_inside_the_input_folder_and_refuses_the_others(
        isolated: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    tmp: Path = isolated["tmp"]
    write_notes(tmp / "notes", [1])
    (tmp / "in").mkdir()
    (tmp / "notes" / "report_1.txt").rename(tmp / "in" / "kept.txt")
    (tmp / "in" / "report_1.txt").symlink_to("kept.txt")
    (tmp / "in" / "report_2.txt").symlink_to(tmp / "notes" / "missing_here.txt")
    write_notes(tmp / "notes", [3])
    (tmp / "in" / "report_3.txt").symlink_to(tmp / "notes" / "report_3.txt")
    output = tmp / "out"
    state = StateDir(Path(isolated["state"]))
    monkeypatch.setenv("DIAG_CONFIG", str(write_config(tmp)))
    result = cli("start", "1", "--end", "3", "--apis", "api_1", "--follow-symlinks", "--input-dir", str(tmp / "in"),
                 "--output-dir", str(output))
    assert result.returncode == 0, result.stderr + result.stdout
    wait_until(lambda: job_ended(state), timeout=60)
    assert done_numbers(output) == [1]
    outside = json.loads(OutputStore(output).failed_path(3).read_text())
    assert outside["error_class"] == "bad_input" and "outside the input folder" in str(outside)
