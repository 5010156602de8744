"""A running job finds notes changed since they were done, a few reports per status write."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from distill.job.survey import ChangedNotes
from distill.results.store import OutputStore
from tests.helpers.notes import write_notes


def _done(store: OutputStore, note: Path, number: int) -> None:
    store.commit_done(number, {"teacher_id": "local/local-rules-2", "report": {
        "source": str(note), "sha256": hashlib.sha256(note.read_bytes()).hexdigest()}}, [], "log\n")


def _touch_after_raw(store: OutputStore, note: Path, number: int) -> None:
    later = store.raw_path(number).stat().st_mtime_ns + 10**9
    os.utime(note, ns=(later, later))


def test_changed_notes_are_found_a_chunk_at_a_time_and_dropped_once_redone(tmp_path: Path) -> None:
    notes = tmp_path / "in"
    write_notes(notes, [1, 2, 3, 9])
    store = OutputStore(tmp_path / "out")
    store.prepare()
    for number in (1, 2, 3, 9):
        _done(store, notes / f"report_{number}.txt", number)
    (notes / "report_2.txt").write_text("CHIEF COMPLAINT: Fever.\n", encoding="utf-8")
    _touch_after_raw(store, notes / "report_2.txt", 2)
    now = [0.0]
    watch = ChangedNotes(store, notes, 1, 3, chunk=1, every_s=100.0, clock=lambda: now[0])
    assert watch.numbers() == []  # report 1 looked at
    assert watch.numbers() == [2]
    assert watch.numbers() == [2]  # report 3; 9 is outside the range
    _done(store, notes / "report_2.txt", 2)  # redone on the new text
    assert watch.numbers() == [2]  # the next cycle is not due yet
    now[0] = 101.0
    assert [watch.numbers() for _ in range(3)][-1] == []
