"""Who made the done reports, which notes changed, and moving outputs aside for a redo."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from distill.extraction.pipeline import process_report
from distill.extraction.teacher import LocalTeacher
from distill.results import provenance
from distill.results.atomic import read_json
from distill.results.provenance import (
    SUPERSEDED_DIR,
    changed_notes,
    changed_since_written,
    release_for_redo,
    supersede,
    survey_done,
    teacher_folder,
)
from distill.results.store import OutputStore
from tests.helpers.notes import write_notes

LOCAL = "local/local-rules-2"
QWEN = "openai/qwen@diag-prompts-2"


def _done(store: OutputStore, input_dir: Path, number: int, teacher: str) -> None:
    data = (input_dir / f"report_{number}.txt").read_bytes()
    raw = {"teacher_id": teacher, "report": {"number": number, "sha256": hashlib.sha256(data).hexdigest()}}
    store.commit_done(number, raw, [], f"log of {number} by {teacher}\n")


@pytest.fixture
def folders(tmp_path: Path) -> tuple[OutputStore, Path]:
    write_notes(tmp_path / "in", [1, 2, 3, 4])
    store = OutputStore(tmp_path / "out")
    store.prepare()
    for number, teacher in ((1, LOCAL), (2, LOCAL), (3, QWEN)):
        _done(store, tmp_path / "in", number, teacher)
    return store, tmp_path / "in"


def test_done_reports_are_counted_by_teacher(folders: tuple[OutputStore, Path]) -> None:
    store, notes = folders
    done = survey_done(store, notes, store.done_numbers())
    assert done.by_teacher == {LOCAL: [1, 2], QWEN: [3]} and done.changed == []
    assert done.matching(["local"]) == {LOCAL: [1, 2]}
    assert done.matching(["qwen"]) == {QWEN: [3]} and done.matching(["gpt-4o"]) == {}


def test_a_note_changed_after_it_was_done_is_found(folders: tuple[OutputStore, Path]) -> None:
    store, notes = folders
    (notes / "report_2.txt").write_text("CHIEF COMPLAINT: Cough for a week.\n", encoding="utf-8")
    assert survey_done(store, notes, store.done_numbers()).changed == [2]
    os.utime(notes / "report_2.txt", ns=(1, 1))  # older than its raw file: the quick look skips it
    assert survey_done(store, notes, store.done_numbers(), quick=True).changed == []
    assert survey_done(store, notes, store.done_numbers()).changed == [2]


def test_supersede_moves_every_output_and_keeps_a_second_copy(folders: tuple[OutputStore, Path]) -> None:
    store, notes = folders
    store.save_checkpoint(1, "findings", {"teacher_id": LOCAL})
    target = supersede(store, 1, LOCAL)
    assert target == store.root / SUPERSEDED_DIR / "local" / "local-rules-2"
    assert not store.is_done(1) and not store.log_path(1).exists() and not store.checkpoint_files(1)
    assert read_json(target / "diagnostic_results" / "diagnostic_1.json")["teacher_id"] == LOCAL
    assert (target / "diagnostic_results_normalized" / "diagnostic_1.json").is_file()
    assert (target / "logs" / "diagnostic_1.log").read_text() == f"log of 1 by {LOCAL}\n"
    assert (target / "checkpoints" / "1.jsonl").is_file()
    _done(store, notes, 1, LOCAL)
    supersede(store, 1, LOCAL)
    assert len(list((target / "diagnostic_results").iterdir())) == 2  # the first copy is never overwritten


def test_redo_releases_the_named_teachers_and_the_changed_notes(folders: tuple[OutputStore, Path]) -> None:
    store, notes = folders
    (notes / "report_3.txt").write_text("CHIEF COMPLAINT: Fever.\n", encoding="utf-8")
    summary = release_for_redo(store, notes, [1, 2, 3], teachers=["local"], changed=True)
    assert summary.by_teacher == {LOCAL: [1, 2]} and summary.changed == [3] and summary.total == 3
    assert store.settled_numbers() == set() and store.redo_numbers() == {1, 2, 3}
    assert not any(store.is_done(n) for n in (1, 2, 3))
    # The old outputs stay where readers find them until the new ones are committed.
    assert store.done_numbers() == {1, 2, 3} and read_json(store.raw_path(3))["teacher_id"] == QWEN
    assert release_for_redo(store, notes, [1, 2, 3], teachers=[]).total == 0


def test_a_redone_report_replaces_its_outputs_and_keeps_the_old_ones(folders: tuple[OutputStore, Path]) -> None:
    store, _notes = folders
    assert store.mark_for_redo(1, LOCAL) and not store.mark_for_redo(1, LOCAL)
    store.append_log(1, "attempt by the new teacher\n")
    assert store.log_path(1).read_text() == f"log of 1 by {LOCAL}\n"  # the old log stands meanwhile
    store.commit_done(1, {"teacher_id": QWEN}, [], store.read_log(1) + "done\n")
    kept = store.root / SUPERSEDED_DIR / "local" / "local-rules-2"
    assert read_json(kept / "diagnostic_results" / "diagnostic_1.json")["teacher_id"] == LOCAL
    assert (kept / "logs" / "diagnostic_1.log").read_text() == f"log of 1 by {LOCAL}\n"
    assert (kept / "diagnostic_results_normalized" / "diagnostic_1.json").is_file()
    assert read_json(store.raw_path(1))["teacher_id"] == QWEN and store.is_done(1)
    assert store.log_path(1).read_text() == "attempt by the new teacher\ndone\n"
    assert store.redo_numbers() == set() and store.settled_numbers() == {1, 2, 3}


def test_a_redo_that_fails_leaves_the_old_outputs_in_place(folders: tuple[OutputStore, Path]) -> None:
    store, _notes = folders
    store.mark_for_redo(2, LOCAL)
    store.commit_failed(2, {"error_class": "invalid_output", "teacher_id": QWEN}, "rejected\n")
    assert read_json(store.raw_path(2))["teacher_id"] == LOCAL
    assert store.log_path(2).read_text() == f"log of 2 by {LOCAL}\n"
    assert store.is_failed(2) and not store.is_done(2)
    assert not (store.root / SUPERSEDED_DIR / "local").exists()


def test_a_marker_left_on_a_committed_redo_is_cleared_at_start(folders: tuple[OutputStore, Path]) -> None:
    store, notes = folders
    store.mark_for_redo(1, LOCAL)
    marker = store.redo_marker(1).read_bytes()
    _done(store, notes, 1, QWEN)
    store.redo_marker(1).write_bytes(marker)  # as if the writer died before removing it
    assert not store.is_done(1)
    store.prepare()
    assert store.is_done(1) and store.redo_numbers() == set()


def test_a_teacher_folder_is_a_safe_relative_path() -> None:
    assert teacher_folder("openai/Qwen/Qwen2.5-7B@diag-prompts-2") == Path("openai/Qwen/Qwen2.5-7B@diag-prompts-2")
    assert teacher_folder("openai/../x y@p") == Path("openai/_/x_y@p")


def test_changed_notes_are_found_from_the_source_each_raw_file_names(tmp_path: Path) -> None:
    write_notes(tmp_path / "in", [1, 2])
    store = OutputStore(tmp_path / "out")
    store.prepare()
    for number in (1, 2):
        note = tmp_path / "in" / f"report_{number}.txt"
        store.commit_done(number, {"teacher_id": LOCAL, "report": {
            "source": str(note), "sha256": hashlib.sha256(note.read_bytes()).hexdigest()}}, [], "log\n")
    assert changed_notes(store.root) == []
    (tmp_path / "in" / "report_1.txt").write_text("CHIEF COMPLAINT: Fever.\n", encoding="utf-8")
    assert changed_notes(store.root) == [1]


def test_the_quick_look_reads_only_notes_modified_after_their_raw_file(folders: tuple[OutputStore, Path]) -> None:
    store, notes = folders
    (notes / "report_1.txt").write_text("CHIEF COMPLAINT: Fever.\n", encoding="utf-8")
    (notes / "report_2.txt").write_text("CHIEF COMPLAINT: Cough.\n", encoding="utf-8")
    os.utime(notes / "report_2.txt", ns=(1, 1))
    raw_time = store.raw_path(1).stat().st_mtime_ns
    os.utime(notes / "report_1.txt", ns=(raw_time + 10**9, raw_time + 10**9))
    assert changed_since_written(store, notes, [1, 2, 3]) == [1]


def test_a_written_raw_file_is_read_from_its_first_bytes(tmp_path: Path) -> None:
    write_notes(tmp_path / "in", [1])
    store = OutputStore(tmp_path / "out")
    store.prepare()
    process_report(tmp_path / "in" / "report_1.txt", extractor=LocalTeacher("api_1"), store=store)
    head = provenance._raw_head(store.raw_path(1))
    raw = read_json(store.raw_path(1))
    assert head == {"teacher_id": LOCAL, "report": {"source": raw["report"]["source"],
                                                    "sha256": raw["report"]["sha256"]}}
