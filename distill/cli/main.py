"""The ``diag-distill`` command group. Each subcommand lives in its own module."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from distill import __version__
from distill.core.errors import ConfigError, DistillError

EXIT_FAILED = 1
EXIT_USAGE = 2


#: Each subcommand and the module of ``distill.cli`` that defines it. A module is imported only when its
#: command runs (or help lists it): a worker process loads the worker's code, not tmux, the monitor or export.
COMMANDS = {"start": "start_cmd", "stop": "stop_cmd", "worker": "worker_cmd", "run-one": "run_one_cmd",
            "monitor": "monitor_cmd", "status": "status_cmd", "export": "export_cmd", "stats": "stats_cmd",
            "bench": "bench_cmd", "stub": "stub_cmd", "estimate": "estimate_cmd", "eval": "eval_cmd"}


class DistillGroup(click.Group):
    """Maps our exceptions to one clear line and an exit code, never a traceback; loads subcommands on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in {*COMMANDS, *self.commands} if self.get_command(ctx, name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        name = f"distill.cli.{COMMANDS[cmd_name]}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command left out of this installation
            if exc.name != name:
                raise
            return None
        command: click.Command = module.command
        return command

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


def main() -> None:
    cli(prog_name="diag-distill")


if __name__ == "__main__":
    main()
