"""Benchmarking: the loopback OpenAI-compatible stub endpoint, the system and claim benchmarks, and
the figures they print.

Imports ``distill.job``, ``distill.results``, ``distill.extraction`` and ``distill.core``.
"""
