"""Basics every layer uses: configuration, the error hierarchy, clock, masking of secrets.

Imports nothing else of the project.
"""
