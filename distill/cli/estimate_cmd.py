"""``diag-distill estimate START``: pending reports and expected tokens and cost, before any call."""

from __future__ import annotations

from pathlib import Path

import click

from distill.cli.options import input_dir_option, output_dir_option, settings_from
from distill.job.estimate import estimate_range


@click.command("estimate")
@click.argument("start", type=click.IntRange(min=0))
@input_dir_option()
@output_dir_option()
@click.option("--end", type=click.IntRange(min=0), default=None, help="Last report number of the range.")
@click.option("--sample", type=click.IntRange(min=1), default=50, show_default=True,
              help="How many pending reports to build prompts for (spread over the range).")
def command(start: int, input_dir: Path | None, output_dir: Path | None, end: int | None, sample: int) -> None:
    """Estimate the tokens and cost of the pending reports numbered START and up (no call is made)."""
    if end is not None and end < start:
        raise click.BadParameter(f"--end {end} is below START {start}", param_hint="--end")
    settings = settings_from(input_dir, output_dir, create_output=False)
    if not settings.input_dir.is_dir():
        raise click.BadParameter(f"{settings.input_dir} is not a folder", param_hint="--input-dir")
    for line in estimate_range(settings, start, end, sample).lines():
        click.echo(line)
