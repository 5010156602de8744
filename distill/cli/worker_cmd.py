"""``diag-distill worker``: one endpoint's worker (the supervisor runs it in a tmux session)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from distill.cli.options import input_dir_option, output_dir_option, settings_from
from distill.job.job_env import adopt_job_env
from distill.job.worker import Worker


@click.command("worker")
@click.option("--api", required=True, help="The endpoint this worker serves, e.g. api_3.")
@click.option("--job-id", default="manual", show_default=True, help="The job this worker belongs to.")
@input_dir_option()
@output_dir_option()
@click.option("--until-drained", is_flag=True, help="Exit once nothing is pending.")
@click.option("--follow-symlinks", is_flag=True, help="Read report files that are links inside the input folder.")
def command(api: str, job_id: str, input_dir: Path | None, output_dir: Path | None, until_drained: bool,
            follow_symlinks: bool) -> None:
    """Claim and process reports with one endpoint until stopped (used by the supervisor)."""
    adopt_job_env()
    settings = settings_from(input_dir, output_dir)
    worker = Worker(api, settings, job_id=job_id, until_drained=until_drained, follow_symlinks=follow_symlinks)
    worker.install_signals()
    sys.exit(worker.run())
