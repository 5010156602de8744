from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from distill.cli.main import COMMANDS, cli


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output


def test_the_worker_command_loads_neither_tmux_nor_the_monitor_nor_the_other_commands() -> None:
    probe = ("import sys; from distill.cli.main import cli; cli.get_command(None, 'worker'); "
             "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('libtmux', 'rich', 'distill'))))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert "distill.job.worker" in loaded
    assert not [m for m in loaded if m.startswith(("libtmux", "rich", "distill.monitor", "distill.job.supervisor",
                                                   "distill.job.tmux", "distill.cli.start_cmd", "distill.results.export"))]


def test_an_unknown_subcommand_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2 and "No such command" in result.output
