"""The ``diag-distill`` command line: one module per subcommand, each parsing options and printing.

May import every other layer; nothing imports it.
"""
