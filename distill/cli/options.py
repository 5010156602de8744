"""Options shared by several subcommands."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from distill.core.config import Settings, load_settings
from distill.core.redact import register_secrets

if TYPE_CHECKING:  # the output reader is only needed by the commands that show progress
    from distill.results.outputs import ProgressSink


def input_dir_option() -> Callable[[Any], Any]:
    return click.option("--input-dir", type=click.Path(path_type=Path), default=None,
                        help="Folder of report_<N>.txt / .json files (default: INPUT_DIR of the configuration).")


def output_dir_option() -> Callable[[Any], Any]:
    return click.option("--output-dir", type=click.Path(path_type=Path), default=None,
                        help="Where results go (default: OUTPUT_DIR of the configuration).")


def settings_from(input_dir: Path | None, output_dir: Path | None, *, create_output: bool = True) -> Settings:
    """Settings with the command line's folders applied; notices are printed once."""
    settings = load_settings(input_dir=input_dir, output_dir=output_dir, create_output=create_output)
    register_secrets(e.api_key.reveal() if e.api_key else None for e in settings.endpoints.values())
    for notice in settings.notices:
        click.echo(f"note: {notice}", err=True)
    return settings


def last_job_folders(input_dir: Path | None, output_dir: Path | None) -> tuple[Path | None, Path | None]:
    """The folders the command line left out, from the last job on this state directory; says which in one line."""
    from distill.job.folders import job_folders

    folders = job_folders(input_dir, output_dir)
    line = folders.line()
    if line:
        click.echo(line, err=True)
    return folders.input_dir, folders.output_dir


def output_folder_of_last_job(output_dir: Path | None, input_dir: Path | None) -> tuple[Path, Path | None]:
    """``--output-dir``, else the last job's (with its input folder when ``input_dir`` is not given).

    Raises ``ConfigError`` naming ``--output-dir`` when there is no such job.
    """
    if output_dir is not None:
        return output_dir, input_dir
    from distill.core.errors import ConfigError
    from distill.job.folders import job_folders, state_dir_in_effect

    folders = job_folders(input_dir, None)
    if folders.output_dir is None:
        raise ConfigError(f"no --output-dir given and no earlier job on state directory {state_dir_in_effect()} "
                          f"to take it from: name the output folder with --output-dir")
    line = folders.line()
    if line:
        click.echo(line, err=True)
    found = folders.input_dir if folders.input_dir is not None and folders.input_dir.is_dir() else None
    return folders.output_dir, input_dir or found


@contextmanager
def progress_bar(label: str) -> Iterator[ProgressSink | None]:
    """A rich progress bar on stderr when stderr is a terminal; otherwise no progress sink at all."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            if done == 1 or done == total or done % 200 == 0:
                bar.update(task, completed=done, total=total)

        yield advance
