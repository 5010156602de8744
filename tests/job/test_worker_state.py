"""A worker when notes are still being written and when the claims file is spoiled under it."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

from distill.job.state import CLAIMS_FILE, StateDir
from distill.job.worker import EXIT_OK, Worker
from distill.results.store import OutputStore
from tests.helpers.fakes import FakeExtractor
from tests.helpers.jobtools import wait_until
from tests.job.test_worker import begin, factory, make_settings


def test_a_worker_says_it_waits_for_a_note_to_settle_then_processes_it_whole(tmp_path: Path) -> None:
    settings = make_settings(tmp_path).with_overrides(settle_s=1.5)
    begin(settings, [1])
    os.utime(settings.input_dir / "report_1.txt", (time.time() - 60, time.time() - 60))  # an old note
    note = settings.input_dir / "report_2.txt"
    with note.open("w", encoding="utf-8") as handle:
        handle.write("CHIEF COMPLAINT: Shortness of breath")
        handle.flush()
        out = io.StringIO()
        worker = Worker("api_1", settings, job_id="j", until_drained=True, out=out,
                        extractor_factory=factory(FakeExtractor()))
        codes: list[int] = []
        thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
        thread.start()
        wait_until(lambda: "waiting for 1 note to settle" in out.getvalue(), timeout=20)
        beat = wait_until(lambda: (b := StateDir(settings.state_dir).read_heartbeat("api_1") or {}).get("note") and b,
                          timeout=20)
        handle.write(" and ankle swelling.\nASSESSMENT: Congestive heart failure with left ventricular dysfunction.\n")
    thread.join(timeout=30)
    assert codes == [EXIT_OK]
    store = OutputStore(settings.output_dir)
    assert store.is_done(1) and store.is_done(2) and store.failed_numbers() == set()
    assert beat.get("state") == "idle" and "waiting for 1 note to settle" in beat.get("note", "")
    assert out.getvalue().count("waiting for 1 note to settle") == 1
    raw = store.raw_path(2).read_text(encoding="utf-8")
    assert f'"chars": {len(note.read_text(encoding="utf-8"))}' in raw  # read whole, not the half seen first


def test_a_malformed_claims_file_under_a_running_worker_is_one_line_and_no_crash(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    begin(settings, [1])
    state = StateDir(settings.state_dir)
    out = io.StringIO()
    worker = Worker("api_1", settings, job_id="j", out=out, extractor_factory=factory(FakeExtractor()))
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
    thread.start()
    try:
        wait_until(lambda: OutputStore(settings.output_dir).is_done(1), timeout=20)
        spoiled = state.path("spoiled.json")
        spoiled.write_text('{"start": 1, "leases": "none"}', encoding="utf-8")
        spoiled.replace(state.path(CLAIMS_FILE))  # at once: the worker never reads a half-written file
        wait_until(lambda: "is malformed" in out.getvalue(), timeout=20)
        wait_until(lambda: (state.read_heartbeat("api_1") or {}).get("note"), timeout=20)
        beat = state.read_heartbeat("api_1") or {}
        looks = len(out.getvalue().splitlines())
        threading.Event().wait(0.5)  # several check intervals (0.1 s) later
        assert thread.is_alive()
    finally:
        state.request_stop()
        thread.join(timeout=30)
    assert codes == [EXIT_OK]
    lines = [line for line in out.getvalue().splitlines() if "is malformed" in line]
    assert len(lines) == 1 and str(state.path(CLAIMS_FILE)) in lines[0] and "Traceback" not in out.getvalue()
    assert "is malformed" in beat["note"] and beat["state"] == "idle"
    assert len(out.getvalue().splitlines()) <= looks + 2  # no line per look: at most the exit lines
