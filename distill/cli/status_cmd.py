"""``diag-distill status``: the job and every endpoint in plain lines, or the status file as JSON."""

from __future__ import annotations

import json

import click

from distill.cli.monitor_cmd import monitor_config
from distill.job.state import StateDir
from distill.monitor.outage import status_lines
from distill.monitor.snapshot import read_status_file, take_snapshot


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status file as it is (JSON).")
def command(as_json: bool) -> None:
    """Show the job and what every endpoint is doing, once: a down endpoint with since when and why.

    Reads only the state directory (DIAG_STATE_DIR), like the monitor.
    """
    config = monitor_config()
    if as_json:
        status, problem = read_status_file(StateDir(config.state_dir))
        if status is None:
            raise click.ClickException(problem or f"no status file in {config.state_dir} (no job has run there)")
        click.echo(json.dumps(status, ensure_ascii=False, indent=2))
        return
    for line in status_lines(take_snapshot(config)):
        click.echo(line)
