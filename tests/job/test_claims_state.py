"""The file backend when notes are still being written, and when its own files are deleted or spoiled."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from distill.core.errors import JobNotStarted, StateDirError
from distill.job.claims import SETTLING_HELD, ClaimBook
from distill.job.claims_file import CLAIMS_QUEUE
from distill.job.state import CLAIMS_FILE, COUNTER_FILE, INDEX_FILE, StateDir, my_identity
from distill.results.store import OutputStore
from tests.job.test_claims import make_book, mark_done

ME = my_identity()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def settling_book(tmp_path: Path, settle_s: float, clock: Clock | None = None) -> ClaimBook:
    book = make_book(tmp_path, [])
    return ClaimBook(book.state, book.store, book.input_dir, check_interval=0.0, settle_s=settle_s,
                     clock=clock or time.time)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_note_still_changing_is_left_for_a_later_claim_and_claimed_once_settled(tmp_path: Path) -> None:
    clock = Clock()
    book = settling_book(tmp_path, 5.0, clock)
    (book.input_dir / "report_1.txt").write_text("old note", encoding="utf-8")
    age(book.input_dir / "report_1.txt", 60)
    (book.input_dir / "report_2.txt").write_text("half of a no", encoding="utf-8")
    first = book.claim_next("api_1", ME)
    assert first is not None and first.number == 1
    assert book.claim_next("api_1", ME) is None
    assert set(book.settling) == {2} and book.settling[2] > clock.now + 4
    assert not book.drained()  # a note that is settling is pending: --until-drained waits for it
    book.release(1, finished=True)
    mark_done(book, 1)
    clock.now += 3
    assert book.claim_next("api_1", ME) is None  # not yet
    with (book.input_dir / "report_2.txt").open("a", encoding="utf-8") as handle:
        handle.write("te, the rest")  # written again: settling starts over
    os.utime(book.input_dir / "report_2.txt", (clock.now, clock.now))  # at the test clock's time
    clock.now += 3
    assert book.claim_next("api_1", ME) is None
    clock.now += 3
    claim = book.claim_next("api_1", ME)
    assert claim is not None and claim.number == 2 and claim.handed_back
    assert book.settling == {}
    assert json.loads(book.state.path(CLAIMS_FILE).read_text())["settling"] == {}


def test_a_settling_note_below_the_counter_is_not_lost_when_higher_numbers_are_claimed(tmp_path: Path) -> None:
    clock = Clock()
    book = settling_book(tmp_path, 5.0, clock)
    for n in (1, 2, 3):
        (book.input_dir / f"report_{n}.txt").write_text(f"note {n}", encoding="utf-8")
    age(book.input_dir / "report_1.txt", 60)
    age(book.input_dir / "report_3.txt", 60)
    got = [book.claim_next("api_1", ME) for _ in range(3)]
    assert [c.number if c else None for c in got] == [1, 3, None]
    clock.now += 6
    again = book.claim_next("api_1", ME)
    assert again is not None and again.number == 2


def test_a_folder_copied_in_at_once_is_not_walked_note_by_note_and_each_note_is_claimed_once_settled(
        tmp_path: Path) -> None:
    clock = Clock()
    book = settling_book(tmp_path, 5.0, clock)
    for n in range(1, 5 * SETTLING_HELD + 1):
        (book.input_dir / f"report_{n}.txt").write_text(f"note {n}", encoding="utf-8")
    assert book.claim_next("api_1", ME) is None
    doc = json.loads(book.state.path(CLAIMS_FILE).read_text())
    assert len(doc["settling"]) == SETTLING_HELD and doc["counter"] == SETTLING_HELD  # the rest wait above it
    assert not book.drained()
    clock.now += 6  # every note unchanged for longer than SETTLE_S
    claimed = []
    while (claim := book.claim_next("api_1", ME)) is not None:
        claimed.append(claim.number)
        assert len(json.loads(book.state.path(CLAIMS_FILE).read_text())["settling"]) <= SETTLING_HELD
    assert claimed == list(range(1, 5 * SETTLING_HELD + 1))


def test_a_settling_note_that_is_deleted_is_forgotten(tmp_path: Path) -> None:
    book = settling_book(tmp_path, 5.0)
    (book.input_dir / "report_4.txt").write_text("half", encoding="utf-8")
    assert book.claim_next("api_1", ME) is None and set(book.settling) == {4}
    doc = json.loads(book.state.path(CLAIMS_FILE).read_text())
    doc["settling"] = {"4": 0.0}  # due now
    book.state.path(CLAIMS_FILE).write_text(json.dumps(doc))
    (book.input_dir / "report_4.txt").unlink()
    assert book.claim_next("api_1", ME) is None and book.settling == {}
    assert book.drained()


def test_names_not_used_are_told_once_per_job(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1])
    (book.input_dir / "report_007.txt").write_text("note", encoding="utf-8")
    (book.input_dir / "report_².txt").write_text("note", encoding="utf-8")
    book.notices.clear()
    claim = book.claim_next("api_1", ME)  # the folder changed: rescanned
    assert claim is not None and claim.number == 1
    assert sorted(book.notices) == sorted([
        "report_007.txt: not used: leading zeros in the report number (rename it report_7.txt)",
        "report_².txt: not used: the report number must be written in ASCII digits 0-9 "
        "(report_<N>.txt or report_<N>.json)"])
    other = ClaimBook(book.state, book.store, book.input_dir, check_interval=0.0)
    (book.input_dir / "report_2.txt").write_text("note", encoding="utf-8")
    assert other.claim_next("api_2", ME) is not None
    assert other.notices == []  # another worker's scan of the same names says nothing again


@pytest.mark.parametrize(("content", "words"), [
    (b'{"start": 1, "end": null, "counter": 0, "leases": [], "returned": [], '
     b'"scan": {"generation": 1, "mtime_ns": 0, "at": 0}}', "malformed 'leases'"),
    (b'["a", "list"]', "it holds list, not an object"),
    (b'{"start": 1, "leases": {', "not valid JSON"),
    (b"", "empty"),
])
def test_a_malformed_claims_file_gives_one_line_naming_it(tmp_path: Path, content: bytes, words: str) -> None:
    book = make_book(tmp_path, [1])
    path = book.state.path(CLAIMS_FILE)
    path.write_bytes(content)
    with pytest.raises(StateDirError) as caught:
        book.claim_next("api_1", ME)
    message = str(caught.value)
    assert str(path) in message and words in message and "\n" not in message
    assert not isinstance(caught.value, JobNotStarted)
    assert book.check() == message
    assert book.snapshot() == {}


def test_a_deleted_claims_file_is_reported_by_the_check(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1])
    book.state.path(CLAIMS_FILE).unlink()
    assert book.check() == f"claims file {book.state.path(CLAIMS_FILE)} was deleted while the job ran"
    with pytest.raises(JobNotStarted, match=CLAIMS_FILE):
        book.claim_next("api_1", ME)


@pytest.mark.parametrize("leftover", [
    {"start": 1, "leases": [1, 2]},
    {"start": 1, "leases": {"3": "not an object"}},
    ["wrong"],
])
def test_start_replaces_a_wrongly_shaped_leftover_claims_file_with_one_line(tmp_path: Path, leftover: object) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "report_1.txt").write_text("note", encoding="utf-8")
    state = StateDir(tmp_path / "state")
    state.ensure()
    store = OutputStore(tmp_path / "out")
    store.prepare()
    state.path(CLAIMS_FILE).write_text(json.dumps(leftover))
    book = ClaimBook(state, store, inputs, check_interval=0.0)
    book.begin(1, None)
    assert len(book.notices) == 1
    assert str(state.path(CLAIMS_FILE)) in book.notices[0] and "malformed" in book.notices[0]
    claim = book.claim_next("api_1", ME)
    assert claim is not None and claim.number == 1


@pytest.mark.parametrize("spoil", ["delete", "truncate", "unsorted"])
def test_a_missing_or_malformed_index_is_rebuilt_with_one_line(tmp_path: Path, spoil: str) -> None:
    book = make_book(tmp_path, [1, 2, 3])
    index = book.state.path(INDEX_FILE)
    if spoil == "delete":
        index.unlink()
    elif spoil == "truncate":
        index.write_bytes(index.read_bytes()[:5])
    else:
        index.write_bytes(index.read_bytes()[::-1][:16][::-1] + index.read_bytes()[:8])
    fresh = ClaimBook(book.state, book.store, book.input_dir, check_interval=0.0)  # reads the index file
    got = [fresh.claim_next("api_1", ME) for _ in range(4)]
    assert [c.number if c else None for c in got] == [1, 2, 3, None]
    assert len(fresh.notices) == 1 and str(index) in fresh.notices[0] and "rebuilt" in fresh.notices[0]


def test_the_check_rewrites_a_deleted_or_malformed_counter_file(tmp_path: Path) -> None:
    book = make_book(tmp_path, [4, 5])
    book.claim_next("api_1", ME)
    counter = book.state.path(COUNTER_FILE)
    counter.unlink()
    assert book.check() is None
    assert counter.read_text().strip() == "4" and "was missing" in book.notices[-1]
    counter.chmod(0o600)
    counter.write_text("four\n")
    assert book.check() is None
    assert counter.read_text().strip() == "4" and "was malformed" in book.notices[-1]
    assert str(counter) in book.notices[-1]


def test_a_deleted_queue_file_is_opened_again_so_every_claimer_waits_on_the_same_file(tmp_path: Path) -> None:
    book = make_book(tmp_path, [1, 2])
    assert book.claim_next("api_1", ME) is not None
    queue = book.state.path(CLAIMS_QUEUE)
    queue.unlink()
    other = ClaimBook(book.state, book.store, book.input_dir, check_interval=0.0)
    assert other.claim_next("api_2", ME) is not None  # creates a new queue file
    assert book.claim_next("api_1", ME) is None  # follows it rather than locking the deleted one
    held, named = os.fstat(book._queue._fd or -1), queue.stat()
    assert (held.st_dev, held.st_ino, held.st_nlink) == (named.st_dev, named.st_ino, 1)


def test_an_idle_worker_says_at_least_when_the_notes_settling_are_as_many_as_a_claim_keeps() -> None:
    from types import SimpleNamespace

    from distill.job.releases import IdleLines

    said: list[str] = []
    soon = time.time() + 1.0
    for count in (1, SETTLING_HELD):
        book = SimpleNamespace(settling={n: soon for n in range(count)})
        IdleLines(book, 2.0, set_state=lambda *a, **k: None, say=said.append, wait=lambda s: None).nothing_to_claim(0.1)
    assert said == ["waiting for 1 note to settle (unchanged for SETTLE_S 2 s before a claim)",
                    f"waiting for at least {SETTLING_HELD} notes to settle (unchanged for SETTLE_S 2 s before a claim)"]
