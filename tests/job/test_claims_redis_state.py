"""The Redis backend with notes still being written, report-like names that are not reports, and lost claims."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distill.job.claims_redis import RedisClaimBook
from distill.job.state import my_identity
from distill.results.store import OutputStore
from tests.helpers.redis_server import RedisServer, running_redis

ME = my_identity()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def book_on(tmp_path: Path, url: str, clock: Clock, *, settle_s: float = 5.0, host: str = "host-a") -> RedisClaimBook:
    store = OutputStore(tmp_path / "out")
    store.prepare()
    return RedisClaimBook(url, store, tmp_path / "in", check_interval=0.0, settle_s=settle_s, clock=clock, host=host)


def note(folder: Path, number: int, *, old: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"report_{number}.txt"
    path.write_text(f"note {number}", encoding="utf-8")
    if old:
        os.utime(path, (time.time() - 60, time.time() - 60))


def test_a_note_still_changing_waits_in_redis_for_a_later_claim_by_any_host(tmp_path: Path,
                                                                           server: RedisServer) -> None:
    clock = Clock()
    note(tmp_path / "in", 1, old=True)
    note(tmp_path / "in", 2, old=False)
    note(tmp_path / "in", 3, old=True)
    book = book_on(tmp_path, server.url, clock)
    book.begin(1, None)
    got = [book.claim_next("api_1", ME) for _ in range(3)]
    assert [c.number if c else None for c in got] == [1, 3, None]
    assert set(book.settling) == {2}
    assert not book.drained()  # waiting to settle is pending
    other = book_on(tmp_path, server.url, clock, host="host-b")
    other.begin(1, None)
    assert other.claim_next("api_2", ME) is None  # not due yet, on any host
    clock.now += 6
    claim = other.claim_next("api_2", ME)
    assert claim is not None and claim.number == 2 and claim.handed_back
    assert book.client.zcard(book.prefix + "settling") == 0


def test_names_not_used_are_told_once_per_job_across_hosts(tmp_path: Path, server: RedisServer) -> None:
    clock = Clock()
    note(tmp_path / "in", 1, old=True)
    (tmp_path / "in" / "report_007.txt").write_text("note", encoding="utf-8")
    (tmp_path / "in" / "report_٤.txt").write_text("note", encoding="utf-8")
    book = book_on(tmp_path, server.url, clock)
    book.begin(1, None)
    assert sorted(line.split(":")[0] for line in book.notices) == ["report_007.txt", "report_٤.txt"]
    other = book_on(tmp_path, server.url, clock, host="host-b")
    other.begin(1, None)
    assert other.notices == []


def test_claims_deleted_from_redis_are_reported_by_the_check(tmp_path: Path, server: RedisServer) -> None:
    clock = Clock()
    note(tmp_path / "in", 1, old=True)
    book = book_on(tmp_path, server.url, clock)
    book.begin(1, None)
    assert book.check() is None
    book.forget()
    problem = book.check()
    assert problem is not None and "deleted while the job ran" in problem and server.url.split("//")[1] in problem
