"""``diag-distill stop``: ask the running job to stop."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import click

from distill.core.config import load_settings
from distill.job.manifest import MANIFEST_FILE, output_job_state_dir
from distill.job.state import StateDir


@click.command("stop")
@click.option("--now", is_flag=True, help="Checkpoint and exit within seconds instead of finishing current reports.")
@click.option("--wait/--no-wait", default=False, help="Wait until the job has ended.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds to wait with --wait.")
@click.option("--cancel", is_flag=True, help="Withdraw a graceful stop before the workers have finished.")
@click.option("--output-dir", type=click.Path(path_type=Path), default=None,
              help="Stop the job writing this output folder (its manifest names the job's state directory).")
def command(now: bool, wait: bool, timeout: float, cancel: bool, output_dir: Path | None) -> None:
    """Stop the job of this state directory (DIAG_STATE_DIR), or the job writing --output-dir."""
    if cancel and (now or wait):
        raise click.UsageError("--cancel withdraws a stop; it goes with neither --now nor --wait")
    settings = load_settings(create_output=False)
    root = settings.state_dir
    if output_dir is not None:
        found = output_job_state_dir(output_dir)
        if found is None:
            raise click.ClickException(f"{output_dir / MANIFEST_FILE} does not exist or names no state directory: "
                                       f"no diag-distill job has written to {output_dir}")
        root = found
    state = StateDir(root)
    problem = state.untrusted()
    if problem is not None:  # the job record and heartbeats say which pids to signal
        raise click.ClickException(problem)
    job = state.running_job()
    if job is None:
        _stop_orphans(state, now=now, cancel=cancel, wait=wait, timeout=timeout)
        return
    click.echo(f"job {job.get('job_id', '?')}: input {job.get('input_dir', '?')}, output {job.get('output_dir', '?')} "
               f"(state directory {state.root})")
    if cancel:
        click.echo(_cancel(state))
        return
    state.request_stop(now=now)
    if now:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(job["pid"]), signal.SIGTERM)
        click.echo("stop now requested: workers checkpoint, hand their reports back and exit within seconds")
    else:
        click.echo("stop requested: workers finish their current report, then exit "
                   "(withdraw with: diag-distill stop --cancel)")
    if wait:
        _wait(lambda: state.running_job() is not None, timeout)


def _cancel(state: StateDir) -> str:
    if state.stop_now_requested():
        return "a stop now is under way and cannot be withdrawn; start the job again once it has ended"
    if not state.stop_requested():
        return "no stop was requested; the job goes on"
    if not state.cancel_stop():
        return f"no diag-distill job is running on state directory {state.root}"
    return "stop withdrawn: the job goes on"


def _stop_orphans(state: StateDir, *, now: bool, cancel: bool, wait: bool, timeout: float) -> None:
    """Workers whose supervisor was killed go on paying for calls: stop them from their heartbeats."""
    orphans = state.orphaned_workers()
    if not orphans:
        click.echo(f"no diag-distill job is running on state directory {state.root}")
        return
    names = ", ".join(sorted(orphans))
    if cancel:
        click.echo(f"the supervisor is gone; {len(orphans)} worker(s) left running ({names}): stop them, then start again")
        return
    state.request_stop(now=now)
    if now:
        for pid in orphans.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        click.echo(f"the supervisor is gone; stop now sent to its {len(orphans)} worker(s): {names}")
    else:
        click.echo(f"the supervisor is gone; its {len(orphans)} worker(s) finish their current report, then exit: "
                   f"{names}")
    if wait:
        _wait(lambda: bool(state.orphaned_workers()), timeout)


def _wait(running: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while running():
        if time.monotonic() > deadline:
            raise click.ClickException(f"the job is still running after {timeout:.0f} s")
        time.sleep(0.5)
    click.echo("job ended")
