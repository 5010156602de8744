"""What a stop may trust in the state directory, and which pids it may signal."""

from __future__ import annotations

import os
from pathlib import Path

from distill.job.claims import ClaimBook
from distill.job.state import CLAIMS_FILE, COUNTER_FILE, StateDir, my_identity, worker_pid
from distill.results.store import OutputStore


def test_a_group_writable_heartbeat_makes_the_state_directory_untrusted(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    assert state.untrusted() is None
    state.write_heartbeat("api_1", {"api": "api_1", "pid": os.getpid()})
    beat = state.path("continuous_diag_workers") / "api_1.json"
    beat.chmod(0o620)
    assert state.untrusted() == f"{beat} is writable by group or others (mode 620); refusing to trust it"


def test_a_heartbeat_naming_a_live_pid_that_is_no_worker_of_the_job_gives_no_pid() -> None:
    mine = {"api": "api_1", "job_id": "j1", "pid": os.getpid(), "identity": my_identity()}
    assert worker_pid(mine, "j1") is None  # alive and ours, but its command line is pytest's, not a worker's
    assert worker_pid({**mine, "identity": f"{os.getpid()}:1"}, "j1") is None  # a reused pid
    assert worker_pid(mine, "other-job") is None


def test_the_end_of_a_job_removes_its_claims_files_and_their_slots_and_keeps_the_counter(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    (tmp_path / "in").mkdir()
    book = ClaimBook(state, OutputStore(tmp_path / "out"), tmp_path / "in")
    book.begin(5, None)
    for _ in range(3):  # rewrites of the claims file and the counter: both slots in use
        book.begin(5, None)
    assert (state.root / f".{CLAIMS_FILE}.slot-2").is_file()
    state.drop_job_files()
    left = sorted(p.name for p in state.root.iterdir() if CLAIMS_FILE in p.name or COUNTER_FILE in p.name)
    assert left == [COUNTER_FILE] and state.path(COUNTER_FILE).read_text() == "4\n"


def test_heartbeats_are_rewritten_without_new_files_and_cleared_with_their_slots(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    for n in range(4):
        state.write_heartbeat("api_1", {"state": "busy", "n": n})
    assert state.read_heartbeats() == {"api_1": {"state": "busy", "n": 3}}
    folder = state.heartbeat_path("api_1").parent
    assert len({p.stat().st_ino for p in folder.iterdir()}) == 2  # the heartbeat is one of its two slots
    state.clear_heartbeats()
    assert list(folder.iterdir()) == []
