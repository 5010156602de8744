from __future__ import annotations

import os
import time
from pathlib import Path

from distill.job.inputs import SettleCheck, scan_names
from tests.helpers.notes import write_notes

ODD = ["report_².txt", "report_007.txt", "report_٤.txt", "report_12a.json"]


def test_the_scan_counts_only_report_names_and_lists_every_report_like_name_it_does_not_use(tmp_path: Path) -> None:
    write_notes(tmp_path, [1, 2, 7])
    for name in ODD:
        (tmp_path / name).write_text("note", encoding="utf-8")
    (tmp_path / "report_2.json").write_text('{"text": "note"}', encoding="utf-8")
    (tmp_path / "notes.md").write_text("not a report", encoding="utf-8")
    scan = scan_names(tmp_path, 1, None)
    assert list(scan.numbers) == [1, 2, 7]
    assert set(scan.unused) == {*ODD, "report_2.json"} and scan.unused_count == 5
    assert "rename it report_7.txt" in scan.unused["report_007.txt"]
    assert "ASCII digits" in scan.unused["report_².txt"] and "ASCII digits" in scan.unused["report_٤.txt"]
    assert scan.unused["report_2.json"] == "report_2.txt has the same number and is the one used"
    assert all(line.count("\n") == 0 and ": not used: " in line for line in scan.unused_lines())


def test_a_json_report_out_of_the_range_beside_nothing_is_not_listed(tmp_path: Path) -> None:
    (tmp_path / "report_3.json").write_text('{"text": "note"}', encoding="utf-8")
    scan = scan_names(tmp_path, 1, None)
    assert list(scan.numbers) == [3] and scan.unused == {}


def test_a_note_modified_just_now_is_not_settled_and_one_left_alone_is(tmp_path: Path) -> None:
    note = tmp_path / "report_1.txt"
    note.write_text("half a note", encoding="utf-8")
    now = note.stat().st_mtime
    check = SettleCheck(2.0, clock=lambda: now + 0.5)
    assert 1.4 < check.wait_left(note) <= 1.5
    check.clock = lambda: now + 2.0
    assert check.wait_left(note) == 0.0


def test_a_note_stamped_in_the_future_settles_once_it_has_stayed_the_same_for_the_settling_time(tmp_path: Path) -> None:
    note = tmp_path / "report_1.txt"
    note.write_text("a note", encoding="utf-8")
    future = time.time() + 3600
    os.utime(note, (future, future))
    ticks = [100.0]
    check = SettleCheck(1.0, monotonic=lambda: ticks[0])
    assert check.wait_left(note) == 1.0  # first seen now
    ticks[0] = 100.6
    assert 0.3 < check.wait_left(note) < 0.5
    with note.open("a", encoding="utf-8") as handle:
        handle.write(" grows")
    os.utime(note, (future, future))
    assert check.wait_left(note) == 1.0  # the size changed: watched from now on
    ticks[0] = 101.7
    assert check.wait_left(note) == 0.0


def test_no_settling_time_claims_at_once_and_a_missing_file_is_left_to_the_reader(tmp_path: Path) -> None:
    note = tmp_path / "report_1.txt"
    note.write_text("a note", encoding="utf-8")
    assert SettleCheck(0.0).wait_left(note) == 0.0
    assert SettleCheck(5.0).wait_left(tmp_path / "report_2.txt") == 0.0
