"""Shared fixtures: every test that touches the state directory or tmux gets its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED_NOTES = PROJECT.parent / "shared" / "data" / "mtsamples_dev"


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
    yield {"state": state, "socket": socket, "prefix": prefix, "tmp": tmp_path}
    if shutil.which("tmux"):
        # Only the server on this test's own socket, which this test started.
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


def write_notes(folder: Path, numbers: list[int], text: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        body = text or (
            f"CHIEF COMPLAINT: Chest pain and shortness of breath for {n % 7 + 1} days.\n"
            "HISTORY OF PRESENT ILLNESS: The patient reports chest pain on exertion and denies fever.\n"
            "PHYSICAL EXAMINATION: Mild bilateral lower extremity edema. A systolic murmur is heard.\n"
            "ASSESSMENT: Congestive heart failure with left ventricular dysfunction.\n"
            "PLAN: Start diuretics.\n"
        )
        (folder / f"report_{n}.txt").write_text(body, encoding="utf-8")
