"""A full disk while writing outputs: nothing partial, not done, a paused worker, a resume.

The worker runs in this process, on a thread, with ``os.open`` / ``os.write``
wrapped so that writes below the output folder fail with ENOSPC once the disk
"fills up" (after writing part of the data, as a real disk does).
"""

from __future__ import annotations

import errno
import io
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from distill.core.config import Endpoint, Settings
from distill.job.claims import ClaimBook
from distill.job.state import CLAIMS_FILE, StateDir
from distill.job.worker import EXIT_OK, Worker
from distill.results.store import OutputStore
from tests.helpers.fakes import FakeExtractor
from tests.helpers.jobtools import stray_files, wait_until
from tests.helpers.notes import write_notes


class FullDisk:
    """``os.open`` / ``os.write`` stand-ins: once full, each file below ``root`` takes half a write, then ENOSPC.

    The disk fills up at the first file opened for writing in the folder named
    ``fills_at``; ``full = False`` frees the space again.
    """

    def __init__(self, root: Path, fills_at: str) -> None:
        self.root = str(root) + os.sep
        self.fills_at = fills_at
        self.full = False
        self.refused = 0
        self._paths: dict[int, Path] = {}
        self._partial: set[int] = set()
        self._open, self._write, self._pwrite = os.open, os.write, os.pwrite

    def open(self, path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = self._open(path, flags, *args, **kwargs)
        self._partial.discard(fd)
        target = Path(os.fspath(path))
        if str(target).startswith(self.root) and flags & (os.O_WRONLY | os.O_RDWR):
            self._paths[fd] = target
            if self.fills_at and target.relative_to(self.root).parts[0] == self.fills_at:
                self.fills_at, self.full = "", True
        else:
            self._paths.pop(fd, None)
        return fd

    def write(self, fd: int, data: Any) -> int:
        return self._limited(fd, data, self._write)

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        return self._limited(fd, data, lambda fd, chunk: self._pwrite(fd, chunk, offset))

    def _limited(self, fd: int, data: Any, send: Any) -> int:
        """Once full: half of a file's first write lands, every later one is refused."""
        if not self.full or fd not in self._paths:
            return int(send(fd, data))
        if fd not in self._partial:
            self._partial.add(fd)
            return int(send(fd, bytes(data)[: max(1, len(data) // 2)]))
        self.refused += 1
        raise OSError(errno.ENOSPC, "No space left on device")


def settings_for(tmp_path: Path) -> Settings:
    return Settings(endpoints={"api_1": Endpoint(name="api_1")}, input_dir=tmp_path / "in",
                    output_dir=tmp_path / "out", check_interval=0.05, state_dir=tmp_path / "state")


@pytest.mark.parametrize("fills_at", ["checkpoints", "logs", "diagnostic_results_normalized", "diagnostic_results"])
def test_a_full_disk_pauses_the_worker_leaves_nothing_partial_and_the_job_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fills_at: str) -> None:
    settings = settings_for(tmp_path)
    write_notes(settings.input_dir, [1, 2, 3])
    state, store = StateDir(settings.state_dir), OutputStore(settings.output_dir)
    state.ensure()
    store.prepare()
    ClaimBook(state, store, settings.input_dir).begin(1, None)
    disk = FullDisk(settings.output_dir, fills_at)
    monkeypatch.setattr(os, "open", disk.open)
    monkeypatch.setattr(os, "write", disk.write)
    monkeypatch.setattr(os, "pwrite", disk.pwrite)
    sleeps: list[float] = []

    def counted_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(min(seconds, 0.01))

    extractor, out = FakeExtractor(), io.StringIO()
    worker = Worker("api_1", settings, job_id="j", until_drained=True, out=out, sleep=counted_sleep,
                    extractor_factory=lambda endpoint, **kwargs: extractor)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
    thread.start()
    try:
        wait_until(lambda: (state.read_heartbeat("api_1") or {}).get("state") == "paused", timeout=20)
        # Several failed probes later, still paused and nothing new claimed.
        waited = len(sleeps)
        wait_until(lambda: len(sleeps) >= waited + 5 and disk.refused >= 3, timeout=20)
        beat = state.read_heartbeat("api_1") or {}
        calls_while_paused = sum(extractor.calls.values())
        claims = json.loads(state.path(CLAIMS_FILE).read_text())
    finally:
        disk.full = False
    thread.join(timeout=30)
    assert codes == [EXIT_OK]
    # While the disk was full:
    assert beat["state"] == "paused" and "disk full" in beat["reason"]
    assert "disk full" in out.getvalue() and "pausing until writes succeed" in out.getvalue()
    # Only report 1 was ever started; its log is written from its first line on, its checkpoints after each step.
    assert calls_while_paused == {"checkpoints": 1, "logs": 1}.get(fills_at, 3)
    assert claims["leases"] == {} and claims["counter"] == 1  # report 1 handed back, nothing new claimed
    # Once space is back: resumed, all done, no failure record, no step of report 1 paid twice but the cut one.
    assert "writes succeed again; resuming" in out.getvalue()
    assert all(store.is_done(n) for n in (1, 2, 3)) and store.failed_numbers() == set()
    assert sum(extractor.calls.values()) == 9 + (1 if fills_at in ("checkpoints", "logs") else 0)
    assert stray_files(settings.output_dir, settings.state_dir) == []
    for path in settings.output_dir.rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))  # no torn JSON anywhere


def test_nothing_partial_and_not_done_while_the_disk_is_full(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(tmp_path)
    write_notes(settings.input_dir, [1])
    state, store = StateDir(settings.state_dir), OutputStore(settings.output_dir)
    state.ensure()
    store.prepare()
    ClaimBook(state, store, settings.input_dir).begin(1, None)
    disk = FullDisk(settings.output_dir, "diagnostic_results")
    monkeypatch.setattr(os, "open", disk.open)
    monkeypatch.setattr(os, "write", disk.write)
    monkeypatch.setattr(os, "pwrite", disk.pwrite)
    worker = Worker("api_1", settings, job_id="j", until_drained=True, out=io.StringIO(),
                    extractor_factory=lambda endpoint, **kwargs: FakeExtractor())
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: (state.read_heartbeat("api_1") or {}).get("state") == "paused", timeout=20)
        assert not store.is_done(1) and not store.is_failed(1)
        assert not store.raw_path(1).exists()
        assert stray_files(settings.output_dir) == []
        for path in settings.output_dir.rglob("*.json"):
            json.loads(path.read_text(encoding="utf-8"))
        assert disk.refused >= 1
    finally:
        state.request_stop()
        disk.full = False
        thread.join(timeout=30)
    assert not thread.is_alive()


class FillingExtractor(FakeExtractor):
    """Fills ``disk`` during the last step of the first report: its claim is in hand when the state disk fills."""

    def __init__(self, disk: FullDisk) -> None:
        super().__init__()
        self.disk = disk

    def run(self, step: str, data: Any) -> Any:
        if step == "mapping" and not self.calls["mapping"]:
            self.disk.full = True
        return super().run(step, data)


def test_a_full_state_disk_pauses_claims_loses_no_claim_and_the_job_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(tmp_path)
    write_notes(settings.input_dir, [1, 2, 3])
    state, store = StateDir(settings.state_dir), OutputStore(settings.output_dir)
    state.ensure()
    store.prepare()
    ClaimBook(state, store, settings.input_dir).begin(1, None)
    disk = FullDisk(settings.state_dir, "")
    monkeypatch.setattr(os, "open", disk.open)
    monkeypatch.setattr(os, "write", disk.write)
    monkeypatch.setattr(os, "pwrite", disk.pwrite)
    sleeps: list[float] = []

    def counted_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(min(seconds, 0.01))

    extractor, out = FillingExtractor(disk), io.StringIO()
    worker = Worker("api_1", settings, job_id="j", until_drained=True, out=out, sleep=counted_sleep,
                    extractor_factory=lambda endpoint, **kwargs: extractor)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
    thread.start()
    try:
        wait_until(lambda: "pausing claims until the state directory is writable" in out.getvalue(), timeout=20)
        waited = len(sleeps)
        wait_until(lambda: len(sleeps) >= waited + 5 and disk.refused >= 3, timeout=20)
        calls_while_paused = sum(extractor.calls.values())
        done_while_paused = sorted(store.done_numbers())
        claims = json.loads(state.path(CLAIMS_FILE).read_text())
        assert thread.is_alive()
    finally:
        disk.full = False
    thread.join(timeout=30)
    assert codes == [EXIT_OK]
    # While the state disk was full: report 1 was saved, nothing new was claimed, the claims file is whole.
    assert done_while_paused == [1] and calls_while_paused == 3
    assert claims["counter"] == 1 and list(claims["leases"]) == ["1"]  # its release waits for space
    text = out.getvalue()
    assert "disk full" in text and text.count("cannot write heartbeat") <= 1
    # Once space is back: resumed, every report done once, no failure record, nothing torn or left behind.
    assert "writes succeed again; resuming" in text
    assert all(store.is_done(n) for n in (1, 2, 3)) and store.failed_numbers() == set()
    assert sum(extractor.calls.values()) == 9
    claims = json.loads(state.path(CLAIMS_FILE).read_text())
    assert claims["leases"] == {} and claims["counter"] == 3
    assert stray_files(settings.output_dir, settings.state_dir) == []
    for path in settings.state_dir.rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
