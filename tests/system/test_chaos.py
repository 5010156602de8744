"""The chaos run: 200 notes, 16 endpoints, one call in five faulted, workers SIGKILLed at random moments.

It proves that nothing is lost and none done twice, that no partial or
temporary file is left, that no finished step is called again, and that
failures are failure records naming a reason, under the faults an endpoint pool really
shows. The figures of the run are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distill.bench.stub_server import StubServer
from distill.core.errors import OutputWriteError
from distill.job.state import CLAIMS_FILE, STATUS_FILE, WORKERS_DIR, StateDir
from distill.results.atomic import TMP_MARK, read_json, write_json
from distill.results.store import OutputStore
from tests.helpers.chaos_tools import (
    FAILURE_CLASSES,
    RandomFaults,
    copy_notes,
    kill_all,
    kill_worker,
    read_outputs,
    stub_counts_by_report,
    write_endpoint_config,
)
from tests.helpers.jobtools import cli, job_ended, status, stray_files, wait_until
from tests.helpers.notes import write_notes

KEY = "sk-chaos-run-key"
NOTES = 200
ENDPOINTS = 16
FAULT_RATE = 0.2
KILLS = 4
CHAOS_KINDS = ("latency", "429", "500", "502", "503", "hang", "reset", "not_json", "bad_body", "length",
               "bad_schema", "ungrounded")
STEPS = ("findings", "organs", "mapping", "combined")


@pytest.fixture
def chaos(isolated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    faults = RandomFaults(rate=FAULT_RATE, kinds=CHAOS_KINDS, seed=20240611, hang_s=2.0)
    stub = StubServer(latency_s=0.01, fault_plan=faults, require_key=KEY).start()
    monkeypatch.setenv("DIAG_CONFIG", str(write_endpoint_config(tmp_path, endpoints=ENDPOINTS, timeout=1.0,
                                                                max_attempts=5, backoff_base=0.05,
                                                                backoff_cap=0.2)))
    monkeypatch.setenv("DIAG_API_KEY", KEY)
    monkeypatch.setenv("DIAG_BASE_URL", stub.url)
    state = StateDir(Path(isolated["state"]))
    yield {"stub": stub, "faults": faults, "state": state, "input": tmp_path / "in", "output": tmp_path / "out",
           "socket": isolated["socket"]}
    if state.running_job() is not None:
        cli("stop", "--now")
        wait_until(lambda: state.running_job() is None, timeout=30)
    stub.stop()


def _kill_some_workers(state: StateDir, output: Path, kills: int,
                       rng: random.Random) -> tuple[list[str], Counter[int]]:
    """SIGKILL ``kills`` busy workers (different endpoints) at random moments; how often each report was held.

    A report held at one kill goes back to the pool and may be held again by the next worker killed.
    """
    killed: list[str] = []
    held: Counter[int] = Counter()
    while len(killed) < kills and state.running_job() is not None:
        time.sleep(rng.uniform(0.1, 0.8))
        busy = [b for api, b in state.read_heartbeats().items()
                if b.get("state") == "working" and api not in killed]
        if not busy:
            continue
        beat = rng.choice(busy)
        frozen = kill_worker(state, beat, output)
        if frozen is not None:  # only a worker that was still alive counts as a kill
            held.update(frozen)
            killed.append(str(beat["api"]))
    return killed, held


@pytest.mark.tmux
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_chaos_run_loses_nothing_repeats_no_finished_step_and_leaves_no_partial_file(chaos: dict[str, Any]) -> None:
    numbers = copy_notes(chaos["input"], NOTES)
    state: StateDir = chaos["state"]
    started = time.monotonic()
    result = cli("start", str(numbers[0]), "--until-drained", "--input-dir", str(chaos["input"]),
                 "--output-dir", str(chaos["output"]))
    assert result.returncode == 0, result.stderr + result.stdout
    killed, held = _kill_some_workers(state, chaos["output"], KILLS, random.Random(7))
    wait_until(lambda: job_ended(state), timeout=150, interval=0.25)
    elapsed = time.monotonic() - started

    outputs = read_outputs(chaos["output"])
    stats = chaos["stub"].stats()
    asked, answered = stats["by_report_step"], stats["answered_by_report_step"]
    # Every report is done or failed, never both: nothing lost, nothing pending.
    assert len(killed) == KILLS
    assert outputs.done | set(outputs.failed) == set(numbers)
    assert not outputs.done & set(outputs.failed)
    for number, record in outputs.failed.items():
        assert record["error_class"] in FAILURE_CLASSES and record["message"], number
        assert record["endpoint"].startswith("api_") and record["report_number"] == number
    for number in outputs.done:
        assert isinstance(outputs.normalized[number], list)
        assert outputs.raw[number]["report"]["number"] == number
    # No partial or temporary file, no checkpoint left behind a finished report.
    assert stray_files(chaos["output"], state.root) == []
    store = OutputStore(chaos["output"])
    assert not [n for n in outputs.done if store.checkpoint_files(n)]
    # No finished step answered twice (so no report done twice), except a step in flight at a kill, once a kill.
    repeated = {key: n for key, n in answered.items() if n > 1}
    assert {key: n for key, n in repeated.items() if n > 1 + held[int(key.split("/")[0])]} == {}, (repeated, held)
    # The counts add up: every call the stub received is in a report's record, except calls lost at a kill.
    on_stub, on_file = stub_counts_by_report(asked), outputs.recorded_calls()
    mismatched = {n for n in numbers if on_stub[n] != on_file[n]}
    assert mismatched <= set(held)
    assert all(on_stub[n] >= on_file[n] for n in held)
    assert stats["total"] == sum(on_stub.values()) == chaos["faults"].calls
    final = status(state)
    assert final["state"] == "stopped"
    assert final["counts"]["done"] == len(outputs.done) and final["counts"]["failed"] == len(outputs.failed)
    assert final["counts"]["pending"] == 0 and final["total_processed"] == NOTES
    figures = {
        "notes": len(numbers), "endpoints": ENDPOINTS, "seconds": round(elapsed, 1), "calls": stats["total"],
        "faults_injected": sum(chaos["faults"].injected.values()), "faults_by_kind": dict(chaos["faults"].injected),
        "kills": len(killed), "reports_held_at_kills": sorted(held.elements()),
        "retries": sum(asked.values()) - len(asked), "calls_lost_at_kills": stats["total"] - sum(on_file.values()),
        "done": len(outputs.done), "failed": len(outputs.failed),
        "failed_by_class": dict(sorted({c: sum(1 for r in outputs.failed.values() if r["error_class"] == c)
                                        for c in {r["error_class"] for r in outputs.failed.values()}}.items())),
        "calls_by_endpoint": dict(sorted(stats["by_model"].items())),
        "fallbacks": sum(1 for raw in outputs.raw.values() if raw.get("fallback_used")),
    }
    print("\nchaos run figures: " + json.dumps(figures))
    assert len(stats["by_model"]) == ENDPOINTS  # every endpoint took part



@pytest.mark.tmux
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_reboot_that_wipes_the_state_directory_loses_nothing_and_repeats_no_finished_step(
        chaos: dict[str, Any]) -> None:
    stub: StubServer = chaos["stub"]
    stub.fault_plan, stub.latency_s = None, 0.15
    state: StateDir = chaos["state"]
    numbers = list(range(1, 41))
    write_notes(chaos["input"], numbers)
    args = ("--until-drained", "--apis", "api_1,api_2,api_3,api_4,api_5,api_6",
            "--input-dir", str(chaos["input"]), "--output-dir", str(chaos["output"]))
    assert cli("start", "1", *args).returncode == 0
    wait_until(lambda: len(read_outputs(chaos["output"]).done) >= 8, timeout=60)
    # The power goes: every process stops at once, then tmux and /tmp are gone.
    _pids, in_flight = kill_all(state, chaos["output"])
    subprocess.run(["tmux", "-L", chaos["socket"], "kill-server"], capture_output=True, check=False)
    shutil.rmtree(state.root)
    assert cli("start", "1", *args).returncode == 0
    wait_until(lambda: job_ended(state), timeout=90)
    outputs = read_outputs(chaos["output"])
    assert outputs.done == set(numbers) and outputs.failed == {}
    answered = stub.stats()["answered_by_report_step"]
    assert {int(key.split("/")[0]) for key, n in answered.items() if n > 1} <= in_flight
    assert max(answered.values()) <= 2
    assert stray_files(chaos["output"], state.root) == []

# --- what a writer killed at the wrong moment leaves, cleaned at the next start --------------------------


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_checkpoints_of_a_report_done_just_before_a_kill_are_removed_at_the_next_start(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "out")
    store.prepare()
    for number in (1, 2):
        store.save_checkpoint(number, "mapping", {"sha256": "x", "output": {}})
    store.commit_done(1, {"report": 1}, [], "log\n")
    store.save_checkpoint(1, "mapping", {"sha256": "x", "output": {}})  # as if the clean-up was cut short
    store.prepare()
    assert not store.checkpoint_files(1)
    assert store.load_checkpoints(2)  # an unfinished report keeps its finished steps


def test_stale_temporaries_of_our_state_files_are_removed_and_nothing_else(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    dead, alive = _dead_pid(), os.getpid()
    ours = [tmp_path / f"{TMP_MARK}{STATUS_FILE}.{dead}", tmp_path / f"{TMP_MARK}{CLAIMS_FILE}.{dead}",
            state.path(WORKERS_DIR) / f"{TMP_MARK}api_3.json.{dead}"]
    kept = [tmp_path / f"{TMP_MARK}{STATUS_FILE}.{alive}", tmp_path / f"{TMP_MARK}someone_else.{dead}"]
    for path in ours + kept:
        path.write_text("{")
    assert state.remove_stale_temporaries() == len(ours)
    assert [p for p in ours if p.exists()] == [] and all(p.exists() for p in kept)


def test_threads_of_one_process_writing_one_file_never_tear_it(tmp_path: Path) -> None:
    """A worker's heartbeat thread and its main thread write the same heartbeat file."""
    path = tmp_path / "beat.json"
    write_json(path, {"writer": -1}, durable=False)
    errors: list[Exception] = []
    torn: list[int] = []
    done = threading.Event()

    def write(writer: int) -> None:
        for _ in range(150):
            try:
                write_json(path, {"writer": writer, "pad": "x" * 10_000}, durable=False)
            except OutputWriteError as exc:
                errors.append(exc)

    def read() -> None:
        while not done.is_set():
            if read_json(path) is None:
                torn.append(1)
            time.sleep(0.0002)

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    assert errors == [] and torn == []
    assert stray_files(tmp_path) == []
