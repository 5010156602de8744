"""Whole jobs (offline teacher): one job per output folder, and commands that find the last job's folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distill.job.manifest import MANIFEST_FILE, read_manifest
from distill.job.state import StateDir, identity_alive
from distill.results.atomic import read_json
from tests.helpers.jobtools import cli, done_numbers, job_ended, wait_until, write_config
from tests.helpers.notes import write_notes

pytestmark = [pytest.mark.tmux, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


@pytest.fixture
def job(isolated: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A two-endpoint offline job; the configuration's own folders are decoys a lookup must not fall back to."""
    config = write_config(tmp_path, endpoints=2)
    decoy_in, decoy_out = tmp_path / "config_in", tmp_path / "config_out"
    write_notes(decoy_in, [10001, 10002, 10003])
    with config.open("a", encoding="utf-8") as handle:
        handle.write(f"INPUT_DIR = {str(decoy_in)!r}\nOUTPUT_DIR = {str(decoy_out)!r}\n")
    env = {**os.environ, "DIAG_CONFIG": str(config)}
    info = {"env": env, "state": StateDir(Path(isolated["state"])), "input": tmp_path / "in",
            "output": tmp_path / "out", "decoy_out": decoy_out, "others": []}
    yield info
    for other in [info, *info["others"]]:
        if other["state"].running_job() is not None:
            cli("stop", "--now", env=other["env"])
            wait_until(lambda o=other: o["state"].running_job() is None, timeout=30)  # type: ignore[misc]
    for other in info["others"]:
        subprocess.run(["tmux", "-L", other["env"]["DIAG_TMUX_SOCKET"], "kill-server"], capture_output=True,
                       check=False)


def second_job(job: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Another state directory, tmux socket and session prefix on the same machine."""
    tag = uuid.uuid4().hex[:8]
    state = StateDir(tmp_path / f"state_{tag}")
    state.root.mkdir(mode=0o700)
    env = {**job["env"], "DIAG_STATE_DIR": str(state.root), "DIAG_TMUX_SOCKET": f"diagtest_{tag}",
           "DIAG_SESSION_PREFIX": f"s{tag}"}
    other = {"env": env, "state": state}
    job["others"].append(other)
    return other


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("diagnostic_*") if p.is_file()}


def test_a_second_job_on_the_same_output_folder_is_refused_and_the_first_goes_on(job: dict[str, Any],
                                                                               tmp_path: Path) -> None:
    write_notes(job["input"], list(range(10001, 10005)))
    first = cli("start", "10001", "--input-dir", str(job["input"]), "--output-dir", str(job["output"]),
                env=job["env"])
    assert first.returncode == 0, first.stderr + first.stdout
    wait_until(lambda: done_numbers(job["output"]) == list(range(10001, 10005)))
    running = job["state"].running_job()
    assert running is not None
    before = outputs(job["output"])

    other = second_job(job, tmp_path)
    other_input = tmp_path / "other_in"
    write_notes(other_input, list(range(10001, 10003)), text="CHIEF COMPLAINT: Cough.\nASSESSMENT: Asthma.\n")
    refused = cli("start", "10001", "--input-dir", str(other_input), "--output-dir", str(job["output"]),
                  env=other["env"])
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, refused.stderr
    assert running["job_id"] in lines[0] and str(job["state"].root) in lines[0]
    assert refused.stdout == ""  # refused before the survey, before anything is started

    # The first job is untouched: still running, same manifest, outputs as they were, and still working.
    assert job["state"].running_job() == running and identity_alive(running["identity"])
    assert (read_manifest(job["output"]) or {}).get("job_id") == running["job_id"]
    assert other["state"].running_job() is None and read_json(other["state"].status_path) is None
    assert outputs(job["output"]) == before
    write_notes(job["input"], [10005])
    wait_until(lambda: 10005 in done_numbers(job["output"]))
    assert {k: v for k, v in outputs(job["output"]).items() if k in before} == before

    # The output folder's manifest finds the first job from the second state directory; once it has
    # ended, its manifest blocks nothing.
    stopped = cli("stop", "--output-dir", str(job["output"]), "--wait", "--timeout", "60", env=other["env"])
    assert stopped.returncode == 0, stopped.stderr
    assert f"job {running['job_id']}: input {job['input']}, output {job['output']}" in stopped.stdout
    wait_until(lambda: job_ended(job["state"]))
    assert (read_manifest(job["output"]) or {}).get("ended_at")
    again = cli("start", "10001", "--input-dir", str(job["input"]), "--output-dir", str(job["output"]),
                "--until-drained", env=other["env"])
    assert again.returncode == 0, again.stderr + again.stdout
    wait_until(lambda: job_ended(other["state"]))
    manifest = read_manifest(job["output"]) or {}
    assert manifest.get("state_dir") == str(other["state"].root) and manifest.get("job_id") != running["job_id"]


def test_retry_failed_with_no_folders_retries_the_last_jobs_failures_in_its_folders(job: dict[str, Any]) -> None:
    write_notes(job["input"], [10001, 10002, 10004])
    (job["input"] / "report_10003.txt").write_bytes(b"")  # empty: a bad_input failure
    first = cli("start", "10001", "--input-dir", str(job["input"]), "--output-dir", str(job["output"]),
                "--until-drained", env=job["env"])
    assert first.returncode == 0, first.stderr + first.stdout
    wait_until(lambda: job_ended(job["state"]))
    assert (job["output"] / "failed" / "diagnostic_10003.json").is_file()
    first_id = (read_manifest(job["output"]) or {}).get("job_id")
    write_notes(job["input"], [10003])  # fixed

    retry = cli("start", "10001", "--retry-failed", "--until-drained", env=job["env"])
    assert retry.returncode == 0, retry.stderr + retry.stdout
    said = [line for line in retry.stderr.splitlines() if line.startswith("using the folders of")]
    assert len(said) == 1 and f"job {first_id}" in said[0]
    assert f"input {job['input']}" in said[0] and f"output {job['output']}" in said[0]
    wait_until(lambda: job_ended(job["state"]))
    assert done_numbers(job["output"]) == [10001, 10002, 10003, 10004]
    assert not (job["output"] / "failed" / "diagnostic_10003.json").exists()
    assert list((job["output"] / "failed" / "retried").glob("diagnostic_10003.*.json"))
    assert not (job["decoy_out"] / "diagnostic_results").exists()  # the configuration's folder was never used
    assert (job["output"] / MANIFEST_FILE).is_file()


def test_stats_monitor_and_export_with_no_folders_read_the_last_jobs_output(job: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    write_notes(job["input"], [10001, 10002])
    first = cli("start", "10001", "--input-dir", str(job["input"]), "--output-dir", str(job["output"]),
                "--until-drained", env=job["env"])
    assert first.returncode == 0, first.stderr + first.stdout
    wait_until(lambda: job_ended(job["state"]))
    stats = cli("stats", "--json", env=job["env"])
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["output_dir"] == str(job["output"])
    assert json.loads(stats.stdout)["reports"]["done"] == 2
    assert stats.stderr.count("using the folders of job") == 1 and str(job["output"]) in stats.stderr
    to = tmp_path / "train.jsonl"
    exported = cli("export", "--to", str(to), "--min-units", "0", env=job["env"])
    assert exported.returncode == 0, exported.stderr
    assert "exported 2 of 2 reports" in exported.stdout and "by teacher: local 2" in exported.stdout
    assert "using the folders of job" in exported.stderr
    monitor = cli("monitor", "--once", env=job["env"])
    assert monitor.returncode == 0, monitor.stderr
    assert monitor.stderr.count("using the folders of job") == 1 and str(job["output"]) in monitor.stderr


def test_the_manifest_of_a_killed_job_does_not_block_a_new_job_on_its_folder(job: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    from tests.helpers.chaos_tools import kill_all

    write_notes(job["input"], list(range(10001, 10004)))
    first = cli("start", "10001", "--input-dir", str(job["input"]), "--output-dir", str(job["output"]),
                env=job["env"])
    assert first.returncode == 0, first.stderr + first.stdout
    wait_until(lambda: done_numbers(job["output"]) == [10001, 10002, 10003])
    # Both workers up (a fast first worker may finish every note before the second has started).
    wait_until(lambda: sum(identity_alive(b.get("identity")) for b in job["state"].read_heartbeats().values()) == 2)
    killed_id = (job["state"].running_job() or {})["job_id"]
    kill_all(job["state"], job["output"])  # supervisor and workers at once: no exit record, no ended_at
    wait_until(lambda: job["state"].running_job() is None)
    manifest = read_manifest(job["output"]) or {}
    assert manifest.get("job_id") == killed_id and not manifest.get("ended_at")

    # SIGKILL takes effect asynchronously: a killed worker may show until it is reaped, never longer.
    assert wait_until(lambda: job["state"].orphaned_workers() == {}, timeout=10)
    other = second_job(job, tmp_path)
    write_notes(job["input"], [10004])
    second = cli("start", "10001", "--input-dir", str(job["input"]), "--output-dir", str(job["output"]),
                 "--until-drained", env=other["env"])
    assert second.returncode == 0, second.stderr + second.stdout
    wait_until(lambda: job_ended(other["state"]))
    assert done_numbers(job["output"]) == [10001, 10002, 10003, 10004]
    assert (read_manifest(job["output"]) or {}).get("state_dir") == str(other["state"].root)
