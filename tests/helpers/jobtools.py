"""Running real jobs in tests: a config file, the CLI in a subprocess, waiting for states."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.core.config import Settings
from distill.job.claims import ClaimBook
from distill.job.state import StateDir
from distill.results.atomic import read_json
from distill.results.store import OutputStore
from tests.helpers.notes import PROJECT, write_notes


def write_config(folder: Path, *, check_interval: float = 0.5, endpoints: int = 16) -> Path:
    config = folder / "system_config.py"
    config.write_text(
        "from distill.core.config import endpoint_table\n"
        f"MULTI_API_CONFIG = endpoint_table({endpoints})\n"
        f"CHECK_INTERVAL = {check_interval}\n"
    )
    return config


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "distill", *args], cwd=PROJECT, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=timeout, check=False)


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def job_ended(state: StateDir) -> bool:
    """The final status is written and the supervisor process is gone (it closes its own session last)."""
    status = state.read_status()
    if state.running_job() is not None or not status or status.get("state") != "stopped":
        return False
    try:
        os.kill(int(status["pid"]), 0)
    except ProcessLookupError:
        return True
    return False


def done_numbers(output: Path) -> list[int]:
    """Reports with all three outputs: raw, normalized and log."""
    store = OutputStore(output)
    return sorted(n for n in store.done_numbers() if store.is_done(n) and store.log_path(n).is_file())


def stray_files(*folders: Path) -> list[Path]:
    """Temporary files left anywhere below the folders."""
    return [p for folder in folders for p in folder.rglob(".tmp-*")]


def heartbeats(state: StateDir) -> dict[str, dict[str, Any]]:
    return state.read_heartbeats()


def working(state: StateDir) -> dict[str, int]:
    """api -> report of workers that are working now."""
    return {api: int(b["report"]) for api, b in heartbeats(state).items()
            if b.get("state") == "working" and b.get("report") is not None}


def status(state: StateDir) -> dict[str, Any]:
    return read_json(state.status_path) or {}


def start_job(job: dict[str, Any], *args: str) -> str:
    """``diag-distill start ARGS`` on the job fixture's input and output folders; its output, after asserting exit 0."""
    result = cli("start", *args, "--input-dir", str(job["input"]), "--output-dir", str(job["output"]))
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def begin_claims(settings: Settings, numbers: list[int]) -> None:
    """Notes ``numbers`` in the settings' input folder and a claims book begun at the first of them."""
    write_notes(settings.input_dir, numbers)
    state = StateDir(settings.state_dir)
    state.ensure()
    store = OutputStore(settings.output_dir)
    store.prepare()
    ClaimBook(state, store, settings.input_dir).begin(min(numbers), None)
