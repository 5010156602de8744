"""``python -m distill.stub_server``: the same as ``diag-distill stub`` (kept for existing scripts)."""

from __future__ import annotations

from distill.bench.stub_server import main

if __name__ == "__main__":
    raise SystemExit(main())
