"""``diag-distill eval``: score the offline teacher, run through the whole system, on the labelled sets."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("eval")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=Path("../shared/data"),
              show_default=True, help="Folder holding the labelled sets (iu_xray_dev, chip_cdee_train, ...).")
@click.option("--sample", type=click.IntRange(min=1), default=None,
              help="Notes per set, evenly spread (default: every note).")
@click.option("--keep", is_flag=True, help="Keep the temporary input, state and outputs for inspection.")
def command(data: Path, sample: int | None, keep: bool) -> None:
    """Run the offline teacher over the labelled sets as a user would and print the figures."""
    from distill.bench.evaluate import format_eval, run_eval

    result = run_eval(data, sample, say=lambda line: click.echo(line, err=True), keep=keep)
    for line in format_eval(result):
        click.echo(line)
