"""Shared fixtures: every test that touches the state directory or tmux gets its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path | str]]:
    """Own state directory, tmux socket and session prefix; the private tmux server is killed at the end."""
    tag = uuid.uuid4().hex[:8]
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    socket = f"diagtest_{tag}"
    prefix = f"t{tag}"
    for name in list(os.environ):
        if name.startswith("DIAG_"):  # nothing from the developer's shell (keys, config, folders) leaks in
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DIAG_STATE_DIR", str(state))
    monkeypatch.setenv("DIAG_TMUX_SOCKET", socket)
    monkeypatch.setenv("DIAG_SESSION_PREFIX", prefix)
    # Notes a test has just written are settled at once (a test of settling sets its own SETTLE_S).
    monkeypatch.setenv("DIAG_SETTLE_S", "0.2")
    yield {"state": state, "socket": socket, "prefix": prefix, "tmp": tmp_path}
    if shutil.which("tmux"):
        # Only the server on this test's own socket, which this test started.
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
