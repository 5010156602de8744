from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from distill.core.errors import InputDirMissing
from distill.job.claims import ClaimBook, scan_input
from distill.job.state import CLAIMS_FILE, COUNTER_FILE, StateDir, my_identity
from distill.results.atomic import write_json
from distill.results.store import OutputStore
from tests.helpers.notes import write_notes


def make_book(tmp_path: Path, numbers: list[int], *, start: int = 1, end: int | None = None,
              check_interval: float = 0.0) -> ClaimBook:
    inputs = tmp_path / "in"
    write_notes(inputs, numbers, text="note")
    state = StateDir(tmp_path / "state")
    state.ensure()
    store = OutputStore(tmp_path / "out")
    store.prepare()
    book = ClaimBook(state, store, inputs, check_interval=check_interval)
    book.begin(start, end)
    return book


def mark_done(book: ClaimBook, number: int) -> None:
    write_json(book.store.normalized_path(number), [])
    write_json(book.store.raw_path(number), {})


def test_claims_come_in_order_and_skip_missing_numbers(tmp_path: Path) -> None:
    book = make_book(tmp_path, [5, 3, 9, 1000])
    got = [book.claim_next("api_1", my_identity()) for _ in range(5)]
    assert [c.number if c else None for c in got] == [3, 5, 9, 1000, None]


def test_counter_file_keeps_the_highest_number_handed_out(tmp_path: Path) -> None:
    book = make_book(tmp_path, [3, 5])
    book.claim_next("api_1", my_identity())
    book.claim_next("api_1", my_identity())
    assert (book.state.path(COUNTER_FILE)).read_text().strip() == "5"


def test_the_counter_file_is_read_only_and_editing_it_changes_no_claim(tmp_path: Path) -> None:
    book = make_book(tmp_path, [3, 5, 8])
    book.claim_next("api_1", my_identity())
    counter = book.state.path(COUNTER_FILE)
    assert counter.stat().st_mode & 0o777 == 0o400
    counter.chmod(0o600)
    counter.write_text("7\n")  # the predecessor's habit: skip ahead by editing the counter
    claim = book.claim_next("api_1", my_identity())
    assert claim is not None and claim.number == 5


def test_reports_before_start_and_after_end_are_not_claimed(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1, 2, 3, 4, 5], start=2, end=4)
    got = [c.number for c in iter(lambda: book.claim_next("api_1", my_identity()), None)]
    assert got == [2, 3, 4]


def test_done_and_failed_reports_are_skipped(tmp_path: Path) -> None:
    inputs_numbers = [1, 2, 3, 4]
    book = make_book(tmp_path, inputs_numbers)
    mark_done(book, 2)
    write_json(book.store.failed_path(3), {"error_class": "bad_input"})
    book.begin(1, None)
    got = [c.number for c in iter(lambda: book.claim_next("api_1", my_identity()), None)]
    assert got == [1, 4]


def test_a_dead_owners_claim_is_handed_out_before_new_numbers(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1, 2, 3])
    first = book.claim_next("api_1", "999999999:1")  # an identity no live process has
    assert first is not None and first.number == 1
    again = book.claim_next("api_2", my_identity())
    assert again is not None and (again.number, again.handed_back) == (1, True)
    assert book.claim_next("api_2", my_identity()).number == 2  # type: ignore[union-attr]


def test_a_live_owners_claim_is_not_handed_out_again(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1, 2])
    assert book.claim_next("api_1", my_identity()).number == 1  # type: ignore[union-attr]
    assert book.claim_next("api_2", my_identity()).number == 2  # type: ignore[union-attr]
    assert book.claim_next("api_3", my_identity()) is None


def test_an_unfinished_release_goes_back_ahead_of_new_numbers(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1, 2, 3])
    book.claim_next("api_1", my_identity())
    book.claim_next("api_1", my_identity())
    book.release(1, finished=False)
    assert book.claim_next("api_2", my_identity()).number == 1  # type: ignore[union-attr]


def test_a_finished_release_is_not_handed_out_again(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1, 2])
    book.claim_next("api_1", my_identity())
    mark_done(book, 1)
    book.release(1, finished=True)
    assert book.claim_next("api_1", my_identity()).number == 2  # type: ignore[union-attr]
    assert book.claim_next("api_1", my_identity()) is None


def test_files_that_arrive_later_are_picked_up_even_below_the_counter(tmp_path: Path) -> None:
    book = make_book(tmp_path, [10, 20])
    assert [book.claim_next("api_1", my_identity()).number for _ in range(2)] == [10, 20]  # type: ignore[union-attr]
    assert book.claim_next("api_1", my_identity()) is None
    write_notes(book.input_dir, [15, 30], text="late")
    os.utime(book.input_dir, ns=(1, 1))  # a distinct modification time, however fast the test runs
    got = [book.claim_next("api_1", my_identity()) for _ in range(3)]
    assert [c.number if c else None for c in got] == [15, 30, None]


def test_a_gap_of_five_thousand_numbers_does_not_end_the_run(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1, 5002, 5003])
    got = [c.number for c in iter(lambda: book.claim_next("api_1", my_identity()), None)]
    assert got == [1, 5002, 5003]


def test_drained_only_when_nothing_is_claimable_or_in_flight(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1])
    assert not book.drained()
    claim = book.claim_next("api_1", my_identity())
    assert claim is not None and not book.drained()  # in flight
    mark_done(book, 1)
    book.release(1, finished=True)
    assert book.drained()


def test_begin_recomputes_from_outputs_and_keeps_live_leases(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1, 2, 3])
    book.claim_next("api_1", my_identity())  # 1, live
    book.claim_next("api_1", "999999999:1")  # 2, dead owner
    book.begin(1, None)
    leases = book.snapshot()["leases"]
    assert list(leases) == ["1"]
    assert [c.number for c in iter(lambda: book.claim_next("api_2", my_identity()), None)] == [2, 3]


def test_missing_input_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputDirMissing, match="does-not-exist"):
        scan_input(tmp_path / "does-not-exist", 1, None)


def test_claim_state_files_are_private(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1])
    book.claim_next("api_1", my_identity())
    assert (book.state.path(CLAIMS_FILE).stat().st_mode & 0o777) == 0o600


def _claim_all(args: tuple[str, str, str, str, Any]) -> list[int]:
    state_dir, out_dir, in_dir, api, barrier = args
    book = ClaimBook(StateDir(Path(state_dir)), OutputStore(Path(out_dir)), Path(in_dir))
    barrier.wait()  # all claimers start together, so they contend
    got = []
    while (claim := book.claim_next(api, my_identity())) is not None:
        got.append(claim.number)
    return got


def test_concurrent_claimers_never_get_the_same_report(tmp_path: Path) -> None:
    numbers = list(range(1, 400, 2))
    book = make_book(tmp_path, numbers)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(8) as pool:
        barrier = manager.Barrier(8)
        jobs = [(str(book.state.root), str(book.store.root), str(book.input_dir), f"api_{i}", barrier)
                for i in range(8)]
        results = pool.map(_claim_all, jobs)
    claimed = [n for part in results for n in part]
    assert sorted(claimed) == numbers
    assert sum(1 for part in results if part) >= 2  # they really claimed side by side


def test_a_deferred_release_is_written_with_the_next_claim(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1, 2])
    book.claim_next("api_1", my_identity())
    mark_done(book, 1)
    book.release(1, finished=True, defer=True)
    assert "1" in book.snapshot()["leases"]  # not written yet
    book.claim_next("api_1", my_identity())
    assert list(book.snapshot()["leases"]) == ["2"]


def test_flush_writes_deferred_releases_and_drained_sees_them(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1])
    book.claim_next("api_1", my_identity())
    mark_done(book, 1)
    book.release(1, finished=True, defer=True)
    assert book.drained()
    book.release(1, finished=True, defer=True)
    book.flush()
    assert book.snapshot()["leases"] == {}
