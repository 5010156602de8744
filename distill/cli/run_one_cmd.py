"""``diag-distill run-one``: process one report in the foreground."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

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
@click.option("--force", is_flag=True, help="Process the report again even when it is already done.")
def command(path: Path, api: str, output_dir: Path | None, force: bool) -> None:
    """Process the report at PATH and print a short summary.

    A report already done in the output folder is left alone unless --force
    is given. Exit status: 0 done, 1 failed, 2 refused (usage, configuration,
    a done report without --force); a refusal writes nothing.
    """
    number = report_number(path)
    if number is None:
        _refuse(f"{path} is not a report file name (report_<N>.txt or report_<N>.json)")
    if not path.is_file():
        _refuse(f"{path} does not exist or is not a file" if not path.exists() else f"{path} is not a file")
    settings = settings_from(None, output_dir)
    endpoint = settings.endpoint(api)
    store = OutputStore(settings.output_dir)
    if store.is_done(number) and not force:
        _refuse(f"report {number} is already done in {settings.output_dir} ({store.raw_path(number)}); "
                f"give --force to process it again")
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


def _refuse(message: str) -> NoReturn:
    click.echo(f"diag-distill run-one: {message}", err=True)
    sys.exit(2)
