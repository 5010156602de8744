"""The monitor: a snapshot of a job read from its state directory only, and its terminal view.

Imports ``distill.job`` (state layout, status format), ``distill.results`` and ``distill.core``.
"""
