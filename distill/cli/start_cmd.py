"""``diag-distill start``: start a job (supervisor plus one tmux session per endpoint)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from distill.cli.options import input_dir_option, last_job_folders, output_dir_option, settings_from
from distill.core.config import DEFAULT_SESSION_PREFIX, DEFAULT_STATE_DIR, Settings, project_root
from distill.core.errors import DistillError, JobAlreadyRunning, StateDirError
from distill.core.redact import mask_known
from distill.job.claims import require_input_dir
from distill.job.claims_backend import CLAIMS_URL_ENV, claims_url, require_claims_store
from distill.job.job_env import adopt_job_env, remove_job_env, write_job_env
from distill.job.manifest import check_output_folder
from distill.job.state import StateDir, describe_running_job
from distill.job.supervisor import JobSpec, Supervisor, refuse_foreign_sessions, worker_environment
from distill.job.survey import survey_range
from distill.job.tmux import TmuxSessions

SUPERVISOR_START_TIMEOUT_S = 20.0
SESSION_START_ALLOWANCE_S = 0.5  # more per endpoint: the supervisor opens every session before it reports in
IN_SESSION_ENV = "DIAG_SUPERVISOR_SESSION"  # set when the supervisor runs in its own tmux session


def _apis(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


def supervisor_command(start: int, spec: JobSpec, settings: Settings) -> list[str]:
    command = [sys.executable, "-m", "distill", "start", str(start), "--foreground",
               "--input-dir", str(settings.input_dir), "--output-dir", str(settings.output_dir)]
    if spec.end is not None:
        command += ["--end", str(spec.end)]
    if spec.apis:
        command += ["--apis", ",".join(spec.apis)]
    if spec.until_drained:
        command.append("--until-drained")
    if spec.retry_failed:
        command.append("--retry-failed")
    for name in spec.redo:
        command += ["--redo", name]
    if spec.redo_changed:
        command.append("--redo-changed")
    if spec.max_cost is not None:
        command += ["--max-cost", repr(spec.max_cost)]
    if spec.follow_symlinks:
        command.append("--follow-symlinks")
    return command


def refuse_second_job(settings: Settings) -> StateDir:
    """One job per state directory and per output folder: refuse before anything is started or printed."""
    state = StateDir(settings.state_dir)
    state.ensure()
    problem = state.untrusted()
    if problem is not None:
        raise StateDirError(f"DIAG_STATE_DIR: {problem}")
    if not state.job_lock_free():
        raise JobAlreadyRunning(describe_running_job(state))
    check_output_folder(settings.output_dir, claims_url(), state_dir=settings.state_dir)
    return state


def launch_in_background(spec: JobSpec, settings: Settings) -> dict[str, object]:
    """Run the supervisor in ``<prefix>_supervisor`` and wait until it holds the job."""
    state = refuse_second_job(settings)
    require_input_dir(settings.input_dir)
    sessions = TmuxSessions(settings.tmux_socket, settings.session_prefix)
    refuse_foreign_sessions(sessions, settings)
    previous = state.running_job()
    environment = {**worker_environment(settings), IN_SESSION_ENV: sessions.name("supervisor")}
    write_job_env(settings.state_dir, os.environ)
    try:
        return _await_supervisor(spec, settings, sessions, state, environment, previous)
    except DistillError:
        if state.job_lock_free():  # no supervisor holds the job: its settings file must not outlive it
            remove_job_env(settings.state_dir)
        raise


def _await_supervisor(spec: JobSpec, settings: Settings, sessions: TmuxSessions, state: StateDir,
                      environment: dict[str, str], previous: dict[str, object] | None) -> dict[str, object]:
    sessions.start("supervisor", supervisor_command(spec.start, spec, settings), environment=environment,
                   cwd=project_root())
    timeout = SUPERVISOR_START_TIMEOUT_S + SESSION_START_ALLOWANCE_S * len(spec.apis or settings.endpoints)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = state.running_job()
        if job and job != previous and state.read_status():
            return job
        running, _pid = sessions.pane_state("supervisor")
        if not running:
            lines = [line for line in sessions.capture("supervisor", 20) if line.strip()]
            detail = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
            detail = detail.removeprefix("diag-distill: error: ")
            raise DistillError(f"the supervisor did not start: {detail or 'no output'}")
        time.sleep(0.2)
    raise DistillError(f"the supervisor did not report in within {timeout:.0f} s; "
                       f"see tmux -L {sessions.socket} attach -t {sessions.name('supervisor')}")


def how_to(settings: Settings, sessions_socket: str, prefix: str, apis: list[str]) -> list[str]:
    """The commands that watch, attach to and stop this job (not another one), as the user would type them."""
    socket = "" if sessions_socket == "default" else f"-L {sessions_socket} "
    state = StateDir(settings.state_dir)
    knobs = []
    if str(settings.state_dir) != DEFAULT_STATE_DIR:
        knobs.append(f"DIAG_STATE_DIR={settings.state_dir}")
    if prefix != DEFAULT_SESSION_PREFIX:
        knobs.append(f"DIAG_SESSION_PREFIX={prefix}")
    if settings.tmux_socket:
        knobs.append(f"DIAG_TMUX_SOCKET={settings.tmux_socket}")
    monitor = ("./scripts/distillation/monitor_diag_continuous.sh   (or: make monitor)" if not knobs
               else f"{' '.join(knobs)} .venv/bin/diag-distill monitor")
    shown = "api_3" if "api_3" in apis or not apis else apis[0]
    return [
        f"outputs:  {settings.output_dir}",
        f"monitor:  {monitor}",
        f"attach:   tmux {socket}attach -t {prefix}_{shown}   (detach: Ctrl-b d)",
        f"stop:     {state.stop_script}   (finish current reports, then exit)",
    ]


@click.command("start")
@click.argument("start", type=click.IntRange(min=0))
@input_dir_option()
@output_dir_option()
@click.option("--apis", default=None, help="Comma-separated endpoints to use, e.g. api_1,api_3 (default: all).")
@click.option("--end", type=click.IntRange(min=0), default=None,
              help="Last report number to process; the job ends by itself once the range is done.")
@click.option("--until-drained", is_flag=True, help="End the job by itself once nothing is pending.")
@click.option("--retry-failed", is_flag=True, help="Run reports with a failure record again.")
@click.option("--redo", "redo", multiple=True, metavar="TEACHER",
              help="Run the reports done by this teacher again (a model name, or 'local' for the offline teacher; "
                   "repeatable); each new result replaces the old one, kept under OUTPUT_DIR/superseded/<teacher>/.")
@click.option("--redo-changed", is_flag=True,
              help="Run again the done reports whose note changed since (old outputs kept under superseded/).")
@click.option("--follow-symlinks", is_flag=True,
              help="Read report files that are symbolic links, when they stay inside the input folder.")
@click.option("--foreground", is_flag=True, help="Keep the supervisor in this terminal (Ctrl-C stops gracefully).")
@click.option("--claims-url", default=None, metavar="redis://HOST:PORT/DB",
              help=f"Keep claims in Redis so several hosts work one job (default: {CLAIMS_URL_ENV}, else file locks).")
@click.option("--max-cost", type=click.FloatRange(min=0, min_open=True), default=None, metavar="AMOUNT",
              help="Stop claiming reports once the job's calls cost this much (prices from MODEL_PRICES).")
def command(start: int, input_dir: Path | None, output_dir: Path | None, apis: str | None, end: int | None,
            until_drained: bool, retry_failed: bool, redo: tuple[str, ...], redo_changed: bool, follow_symlinks: bool,
            foreground: bool, claims_url: str | None, max_cost: float | None) -> None:
    """Start processing reports numbered START and up, one tmux session per endpoint."""
    if end is not None and end < start:
        raise click.BadParameter(f"--end {end} is below START {start}", param_hint="--end")
    adopt_job_env()
    if retry_failed or redo or redo_changed:  # re-runs mean the last job's folders, not the configuration's
        input_dir, output_dir = last_job_folders(input_dir, output_dir)
    settings = settings_from(input_dir, output_dir)
    chosen = require_claims_store(claims_url)
    if chosen is not None:  # the supervisor and every worker read it from their environment
        os.environ[CLAIMS_URL_ENV] = chosen
    until_drained = until_drained or end is not None  # a bounded range has an end to reach
    if not foreground:
        require_input_dir(settings.input_dir)
        refuse_second_job(settings)
        chosen_apis = _apis(apis) or tuple(settings.endpoints)
        survey = survey_range(settings.input_dir, settings.output_dir, start, end, redo=redo, redo_changed=redo_changed,
                              endpoints=[settings.endpoints[a] for a in chosen_apis if a in settings.endpoints])
        for line in survey.lines(settings.input_dir, settings.output_dir):
            click.echo(line)
    spec = JobSpec(start=start, end=end, apis=_apis(apis), until_drained=until_drained, retry_failed=retry_failed,
                   max_cost=max_cost, follow_symlinks=follow_symlinks, redo=tuple(r.strip() for r in redo),
                   redo_changed=redo_changed)
    if foreground:
        supervisor = Supervisor(settings, spec, out=lambda line: click.echo(mask_known(f"supervisor: {line}")))
        click.echo(f"job starting at report {start}; Ctrl-C stops gracefully")
        for line in how_to(settings, supervisor.sessions.socket, settings.session_prefix, supervisor.apis):
            click.echo(line)
        code = supervisor.run()
        if code == 0 and os.environ.get(IN_SESSION_ENV) == supervisor.sessions.name("supervisor"):
            # A clean end closes the supervisor's own session; after an error it stays for the user to read.
            supervisor.sessions.kill("supervisor")
        sys.exit(code)
    job = launch_in_background(spec, settings)
    click.echo(f"diag-distill job {job['job_id']} started at report {start} "
               f"with {len(job['apis'])} endpoint(s) (supervisor pid {job['pid']})")  # type: ignore[arg-type]
    for line in how_to(settings, str(job["tmux_socket"]), settings.session_prefix, list(job["apis"])):  # type: ignore[call-overload]
        click.echo(line)
