"""The ``diag-distill`` command group. Each subcommand lives in its own module."""

from __future__ import annotations

import sys
from typing import Any

import click

from distill import __version__
from distill.core.errors import ConfigError, DistillError

EXIT_FAILED = 1
EXIT_USAGE = 2


class DistillGroup(click.Group):
    """Maps our exceptions to one clear line and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"diag-distill: error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except DistillError as exc:
            click.echo(f"diag-distill: error: {exc}", err=True)
            sys.exit(EXIT_FAILED)


@click.group(cls=DistillGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="diag-distill")
def cli() -> None:
    """Continuous distillation of clinical notes through a pool of LLM endpoints."""


def _register() -> None:
    from distill.cli import run_one_cmd, start_cmd, stop_cmd, worker_cmd

    for module in (start_cmd, stop_cmd, worker_cmd, run_one_cmd):
        cli.add_command(module.command)
    optional = ("monitor_cmd", "status_cmd", "export_cmd", "stats_cmd", "bench_cmd", "stub_cmd", "estimate_cmd",
                "eval_cmd")
    for name in optional:
        try:
            module = __import__(f"distill.cli.{name}", fromlist=["command"])
        except ModuleNotFoundError as exc:
            if exc.name != f"distill.cli.{name}":
                raise
            continue
        cli.add_command(module.command)


_register()


def main() -> None:
    cli(prog_name="diag-distill")


if __name__ == "__main__":
    main()
