"""``python -m distill``: the same as the ``diag-distill`` command."""

from distill.cli.main import main

main()
