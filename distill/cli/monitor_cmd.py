"""``diag-distill monitor``: watch what every endpoint is doing, or print one snapshot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from distill.core.config import load_settings
from distill.core.errors import ConfigError
from distill.job.claims_backend import claims_url
from distill.monitor.snapshot import MonitorConfig, take_snapshot

DEFAULT_INTERVAL_S = 10.0


def monitor_config(*, say_folders: bool = False) -> MonitorConfig:
    """Where the job's files are, from the settings; from the environment alone when the configuration is broken.

    The output folder is the last job's on this state directory (said in one
    line on stderr when ``say_folders``), else the configuration's.

    The monitor only needs the state directory, so a configuration file being
    edited while the job runs must not blind it.
    """
    try:
        settings = load_settings(create_output=False)
    except ConfigError as exc:
        click.echo(f"note: configuration not loaded ({exc}); using DIAG_STATE_DIR only", err=True)
        return MonitorConfig(state_dir=Path(os.environ.get("DIAG_STATE_DIR") or "/tmp"),
                             tmux_socket=os.environ.get("DIAG_TMUX_SOCKET") or None,
                             session_prefix=os.environ.get("DIAG_SESSION_PREFIX") or "continuous_diag")
    from distill.job.folders import job_folders

    folders = job_folders(None, None, state_dir=settings.state_dir)
    if folders.line() and say_folders:
        click.echo(folders.line(), err=True)
    return MonitorConfig(state_dir=settings.state_dir, output_dir=folders.output_dir or settings.output_dir,
                         check_interval=settings.check_interval, tmux_socket=settings.tmux_socket,
                         session_prefix=settings.session_prefix)


@click.command("monitor")
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@click.option("--interval", type=click.FloatRange(min=0.5), default=DEFAULT_INTERVAL_S, show_default=True,
              help="Seconds between refreshes.")
@click.option("--json", "as_json", is_flag=True, help="Print one machine-readable snapshot (JSON) and exit.")
def command(once: bool, interval: float, as_json: bool) -> None:
    """Watch what every endpoint is doing.

    Reads only the files of the state directory (DIAG_STATE_DIR); the job is
    not affected. Ctrl-C quits the monitor, not the job.
    """
    config = monitor_config(say_folders=not as_json)  # JSON readers get the folders in the snapshot
    if claims_url():  # a job shared by hosts: this host's panels, then every host's endpoints
        from distill.monitor.hosts import show_with_hosts

        show_with_hosts(lambda: take_snapshot(config), once=once, interval=interval, as_json=as_json)
        return
    if as_json:
        click.echo(json.dumps(take_snapshot(config).to_dict(), ensure_ascii=False, indent=2))
        return
    from rich.console import Console

    from distill.monitor.view import render, watch

    console = Console()
    if once:
        console.print(render(take_snapshot(config), console.width))
        return
    watch(lambda: take_snapshot(config), interval=interval, console=console)
