"""One job per output folder: the manifest, the lock, and who counts as running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from distill.core.errors import JobAlreadyRunning
from distill.job.manifest import (
    LOCK_FILE,
    MANIFEST_FILE,
    STALE_AFTER_S,
    OutputFolderClaim,
    output_job_state_dir,
    read_manifest,
)
from distill.job.state import process_identity


def record(job_id: str, state_dir: str = "/s/one") -> dict[str, Any]:
    return {"job_id": job_id, "input_dir": "/notes", "state_dir": state_dir, "start": 10001, "end": None,
            "teachers": ["local"], "claims": "file"}


def dead_identity() -> str:
    """The identity of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(child.pid)
    child.wait()
    return identity or f"{child.pid}:0"


def write_manifest(folder: Path, job_id: str, hosts: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_FILE).write_text(json.dumps({**record(job_id), "hosts": hosts}))


def test_hold_writes_the_manifest_with_every_field(tmp_path: Path) -> None:
    claim = OutputFolderClaim(tmp_path / "out", host="here")
    claim.hold(record("job1"))
    manifest = read_manifest(tmp_path / "out")
    assert manifest is not None
    assert {k: manifest[k] for k in ("job_id", "input_dir", "state_dir", "start", "teachers", "output_dir")} == {
        "job_id": "job1", "input_dir": "/notes", "state_dir": "/s/one", "start": 10001, "teachers": ["local"],
        "output_dir": str(tmp_path / "out")}
    assert manifest["started_at"] and manifest["hosts"]["here"]["pid"] == os.getpid()
    assert (tmp_path / "out" / LOCK_FILE).exists()
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".tmp")] == []
    claim.release()


def test_a_second_job_is_refused_naming_the_job_and_its_state_directory(tmp_path: Path) -> None:
    first = OutputFolderClaim(tmp_path, host="here")
    first.hold(record("job1", state_dir="/s/one"))
    with pytest.raises(JobAlreadyRunning) as refused:
        OutputFolderClaim(tmp_path, host="here").hold(record("job2", state_dir="/s/two"))
    message = str(refused.value)
    assert "job1" in message and "/s/one" in message and "\n" not in message
    assert read_manifest(tmp_path)["job_id"] == "job1"  # type: ignore[index]
    first.release()


def test_a_lock_held_without_a_manifest_still_refuses(tmp_path: Path) -> None:
    import filelock

    lock = filelock.FileLock(str(tmp_path / LOCK_FILE), timeout=0)
    lock.acquire()
    try:
        with pytest.raises(JobAlreadyRunning, match="in use by another diag-distill job"):
            OutputFolderClaim(tmp_path, host="here").check(None)
    finally:
        lock.release()


def test_the_manifest_of_a_dead_job_on_this_host_blocks_nothing(tmp_path: Path) -> None:
    write_manifest(tmp_path, "old", {"here": {"identity": dead_identity(), "pid": 1, "renewed_at": 0}})
    claim = OutputFolderClaim(tmp_path, host="here")
    claim.hold(record("new"))
    assert read_manifest(tmp_path)["job_id"] == "new"  # type: ignore[index]
    claim.release()


@pytest.mark.parametrize(("age", "refused"), [pytest.param(5.0, True, id="renewed-lately"),
                                              pytest.param(STALE_AFTER_S + 1, False, id="stale")])
def test_another_hosts_entry_counts_while_it_is_renewed(tmp_path: Path, age: float, refused: bool) -> None:
    now = 1_000_000.0
    write_manifest(tmp_path, "there-job", {"there": {"identity": "1:1", "pid": 1, "renewed_at": now - age}})
    claim = OutputFolderClaim(tmp_path, host="here", clock=lambda: now)
    if refused:
        with pytest.raises(JobAlreadyRunning, match="there-job"):
            claim.check(None)
    else:
        claim.check(None)


def test_hosts_of_one_shared_job_join_and_another_job_is_refused(tmp_path: Path) -> None:
    first = OutputFolderClaim(tmp_path, host="host-a")
    first.hold({**record("shared1"), "claims": "redis"}, shared_job_id="shared1")
    second = OutputFolderClaim(tmp_path, host="host-b")
    second.hold({**record("shared1", state_dir="/s/b"), "claims": "redis"}, shared_job_id="shared1")
    manifest = read_manifest(tmp_path)
    assert manifest is not None and set(manifest["hosts"]) == {"host-a", "host-b"}
    assert manifest["state_dir"] == "/s/one"  # the job's first host; each host's own is in its entry
    with pytest.raises(JobAlreadyRunning, match="shared1"):
        OutputFolderClaim(tmp_path, host="host-c").check("other")
    with pytest.raises(JobAlreadyRunning):
        OutputFolderClaim(tmp_path, host="host-c").check(None)  # a one-host job
    first.release()
    assert "ended_at" not in read_manifest(tmp_path)  # type: ignore[operator]  # host-b still runs it
    with pytest.raises(JobAlreadyRunning):
        OutputFolderClaim(tmp_path, host="host-c").check(None)
    second.release()
    OutputFolderClaim(tmp_path, host="host-c").check(None)


def test_release_keeps_the_manifest_as_a_record_and_frees_the_folder(tmp_path: Path) -> None:
    claim = OutputFolderClaim(tmp_path, host="here")
    claim.hold(record("job1"))
    claim.release()
    manifest = read_manifest(tmp_path)
    assert manifest is not None and manifest["job_id"] == "job1" and manifest["ended_at"]
    assert manifest["hosts"] == {}
    assert (tmp_path / LOCK_FILE).exists()  # never deleted: another process may be waiting on it
    OutputFolderClaim(tmp_path, host="here").check(None)
    assert output_job_state_dir(tmp_path) == Path("/s/one")


def test_renew_refreshes_this_hosts_entry_only_when_due(tmp_path: Path) -> None:
    now = [1000.0]
    claim = OutputFolderClaim(tmp_path, host="here", clock=lambda: now[0])
    claim.hold(record("job1"))
    first = read_manifest(tmp_path)["hosts"]["here"]["renewed_at"]  # type: ignore[index]
    now[0] += 1
    claim.renew()
    assert read_manifest(tmp_path)["hosts"]["here"]["renewed_at"] == first  # type: ignore[index]
    now[0] += 60
    claim.renew()
    assert read_manifest(tmp_path)["hosts"]["here"]["renewed_at"] == now[0]  # type: ignore[index]
    claim.release()


def test_workers_left_by_a_killed_supervisor_keep_the_folder_from_another_job(tmp_path: Path) -> None:
    from distill.job.state import JOB_FILE, StateDir

    theirs = StateDir(tmp_path / "their_state")
    theirs.ensure()
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "distill", "worker", "--api",
                               "api_1", "--job-id", "j1"])
    try:
        identity = process_identity(worker.pid)
        out = tmp_path / "out"
        (theirs.root / JOB_FILE).write_text(json.dumps({"job_id": "j1", "identity": dead_identity(),
                                                        "output_dir": str(out)}))
        theirs.write_heartbeat("api_1", {"api": "api_1", "job_id": "j1", "pid": worker.pid, "identity": identity})
        write_manifest(out, "j1", {"here": {"identity": dead_identity(), "pid": 1, "renewed_at": 0}})
        manifest = json.loads((out / MANIFEST_FILE).read_text())
        (out / MANIFEST_FILE).write_text(json.dumps({**manifest, "state_dir": str(theirs.root)}))
        with pytest.raises(JobAlreadyRunning, match=r"1 worker\(s\) of diag-distill job j1"):
            OutputFolderClaim(out, host="here").check(None, state_dir=tmp_path / "mine")
        # The job's own state directory takes over: its next start closes those workers' sessions.
        OutputFolderClaim(out, host="here").check(None, state_dir=theirs.root)
    finally:
        worker.kill()
        worker.wait()
    OutputFolderClaim(out, host="here").check(None, state_dir=tmp_path / "mine")
