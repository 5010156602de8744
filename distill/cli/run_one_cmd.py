"""``diag-distill run-one``: process one report in the foreground."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from distill.cli.options import output_dir_option, settings_from
from distill.core.words import counted
from distill.extraction.pipeline import process_report
from distill.extraction.report import report_number
from distill.job.worker import make_extractor
from distill.results.store import OutputStore


@click.command("run-one")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--api", default="api_1", show_default=True, help="The endpoint to use.")
@output_dir_option()
def command(path: Path, api: str, output_dir: Path | None) -> None:
    """Process the report at PATH and print a short summary.

    Exit status: 0 done, 1 failed, 2 usage or configuration error.
    """
    if report_number(path) is None:
        raise click.BadParameter(f"{path.name} is not a report file name (report_<N>.txt or report_<N>.json)",
                                 param_hint="PATH")
    settings = settings_from(None, output_dir)
    endpoint = settings.endpoint(api)
    store = OutputStore(settings.output_dir)
    store.prepare()
    extractor = make_extractor(endpoint, events=lambda event, details: None, should_stop=lambda: False)
    try:
        outcome = process_report(path, extractor=extractor, store=store, max_bytes=settings.max_report_bytes)
    finally:
        extractor.close()
    number = outcome.number
    if outcome.status == "done":
        click.echo(f"report {number}: done with {endpoint.describe()}: {counted(outcome.findings, 'finding')}, "
                   f"{counted(outcome.units, 'unit')}, {counted(len(outcome.calls), 'call')}, {outcome.duration_s:.2f} s")
        click.echo(f"  raw:        {store.raw_path(number)}")
        click.echo(f"  normalized: {store.normalized_path(number)}")
        click.echo(f"  log:        {store.log_path(number)}")
        sys.exit(0)
    click.echo(f"report {number}: failed: {outcome.error_class}: {outcome.message}", err=True)
    click.echo(f"  failure record: {store.failed_path(number)}", err=True)
    sys.exit(1)
