"""Which endpoints a report failed on, shared by every worker, in both claims backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distill.job.claims import ClaimBook
from distill.job.claims_backend import ClaimsBackend
from distill.job.claims_redis import RedisClaimBook
from distill.job.state import StateDir, my_identity
from distill.results.atomic import write_json
from distill.results.store import OutputStore
from tests.helpers.notes import write_notes
from tests.helpers.redis_server import running_redis


@pytest.fixture(params=["file", "redis"])
def books(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ClaimsBackend, ClaimsBackend]]:
    """Two books on one job, as two workers (or two hosts) hold them."""
    write_notes(tmp_path / "in", [1, 2, 3], text="note")
    store = OutputStore(tmp_path / "out")
    store.prepare()
    if request.param == "file":
        state = StateDir(tmp_path / "state")
        state.ensure()
        first: Any = ClaimBook(state, store, tmp_path / "in", check_interval=0.0)
        first.begin(1, None)
        yield first, ClaimBook(state, store, tmp_path / "in", check_interval=0.0)
        return
    for server in running_redis(tmp_path):
        first = RedisClaimBook(server.url, store, tmp_path / "in", check_interval=0.0, host="host-a")
        first.begin(1, None)
        second = RedisClaimBook(server.url, store, tmp_path / "in", check_interval=0.0, host="host-b")
        second.begin(1, None)
        yield first, second


def test_strikes_from_two_workers_add_up_and_name_each_endpoint_once(books: tuple[ClaimsBackend, ClaimsBackend]) -> None:
    one, two = books
    assert one.strike(2, "api_1") == ["api_1"]
    assert one.strike(2, "api_1") == ["api_1"]
    assert sorted(two.strike(2, "api_7")) == ["api_1", "api_7"]
    assert two.strike(3, "api_7") == ["api_7"]


def test_a_report_that_failed_on_an_endpoint_goes_to_another_endpoint(books: tuple[ClaimsBackend, ClaimsBackend]) -> None:
    one, two = books
    me = my_identity()
    claim = one.claim_next("api_1", me)
    assert claim is not None and claim.number == 1
    one.strike(1, "api_1")
    one.release(1, finished=False)
    again = one.claim_next("api_1", me)
    assert again is not None and again.number == 2  # not 1: it failed on api_1
    other = two.claim_next("api_2", me)
    assert other is not None and other.number == 1 and other.handed_back
    assert not one.drained()


def test_a_struck_report_keeps_the_job_from_draining_until_another_endpoint_finishes_it(
        books: tuple[ClaimsBackend, ClaimsBackend], tmp_path: Path) -> None:
    one, two = books
    me = my_identity()
    numbers = [c.number for c in iter(lambda: one.claim_next("api_1", me), None)]
    assert numbers == [1, 2, 3]
    one.strike(3, "api_1")
    one.release(3, finished=False)
    for number in (1, 2):
        one.release(number, finished=True)
    assert one.claim_next("api_1", me) is None
    assert not one.drained()  # 3 waits for an endpoint it did not fail on
    claim = two.claim_next("api_2", me)
    assert claim is not None and claim.number == 3
    store = OutputStore(tmp_path / "out")
    write_json(store.normalized_path(3), [])
    write_json(store.raw_path(3), {})
    two.release(3, finished=True)
    assert two.drained()
    assert two.strike(3, "api_2") == ["api_2"]  # a finished release forgot the earlier strike


def test_strikes_survive_a_restart_of_the_file_backend(tmp_path: Path) -> None:
    write_notes(tmp_path / "in", [1, 2], text="note")
    store = OutputStore(tmp_path / "out")
    store.prepare()
    state = StateDir(tmp_path / "state")
    state.ensure()
    book = ClaimBook(state, store, tmp_path / "in")
    book.begin(1, None)
    book.strike(1, "api_3")
    ClaimBook(state, store, tmp_path / "in").begin(1, None)  # start again on the same state directory
    assert sorted(book.strike(1, "api_4")) == ["api_3", "api_4"]
