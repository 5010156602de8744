"""Options shared by several subcommands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from distill.config import Settings, load_settings


def input_dir_option() -> Callable[[Any], Any]:
    return click.option("--input-dir", type=click.Path(path_type=Path), default=None,
                        help="Folder of report_<N>.txt / .json files (default: INPUT_DIR of the configuration).")


def output_dir_option() -> Callable[[Any], Any]:
    return click.option("--output-dir", type=click.Path(path_type=Path), default=None,
                        help="Where results go (default: OUTPUT_DIR of the configuration).")


def settings_from(input_dir: Path | None, output_dir: Path | None, *, create_output: bool = True) -> Settings:
    """Settings with the command line's folders applied; notices are printed once."""
    settings = load_settings(input_dir=input_dir, output_dir=output_dir, create_output=create_output)
    for notice in settings.notices:
        click.echo(f"note: {notice}", err=True)
    return settings
