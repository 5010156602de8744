"""diag-distill: continuous distillation of clinical notes."""

__version__ = "0.1.0"
