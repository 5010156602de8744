"""Results on disk: atomic writes, the output store (done, failed, checkpoints), reading an output
folder, export as training data, and run statistics.

Imports ``distill.extraction`` and ``distill.core``.
"""
