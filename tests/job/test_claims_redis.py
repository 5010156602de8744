from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distill.core.errors import ClaimsUnavailable, ConfigError, JobNotStarted
from distill.job.claims import ClaimBook
from distill.job.claims_backend import claims_url, open_claims
from distill.job.claims_redis import RedisClaimBook
from distill.job.state import StateDir, my_identity
from distill.results.atomic import write_json
from distill.results.store import OutputStore
from tests.helpers.notes import write_notes
from tests.helpers.redis_server import RedisServer, running_redis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path)


def make_book(tmp_path: Path, url: str, numbers: list[int] | None, *, start: int = 1, end: int | None = None,
              lease_ttl: float = 30.0, host: str = "host-a") -> RedisClaimBook:
    inputs = tmp_path / "in"
    if numbers is not None:
        write_notes(inputs, numbers, text="note")
    store = OutputStore(tmp_path / "out")
    store.prepare()
    book = RedisClaimBook(url, store, inputs, check_interval=0.0, lease_ttl=lease_ttl, host=host)
    book.begin(start, end)
    return book


def mark_done(book: RedisClaimBook, number: int) -> None:
    write_json(book.store.normalized_path(number), [])
    write_json(book.store.raw_path(number), {})


def numbers_of(book: RedisClaimBook) -> list[int]:
    return [c.number for c in iter(lambda: book.claim_next("api_1", my_identity()), None)]


def test_claims_come_in_order_from_start_and_skip_gaps(tmp_path: Path, server: RedisServer) -> None:
    book = make_book(tmp_path, server.url, [5, 3, 9, 1000, 1], start=3)
    assert numbers_of(book) == [3, 5, 9, 1000]


def test_done_and_failed_reports_are_not_handed_out(tmp_path: Path, server: RedisServer) -> None:
    inputs = tmp_path / "in"
    write_notes(inputs, [1, 2, 3], text="note")
    store = OutputStore(tmp_path / "out")
    store.prepare()
    write_json(store.normalized_path(2), [])
    write_json(store.raw_path(2), {})
    book = RedisClaimBook(server.url, store, inputs, check_interval=0.0)
    book.begin(1, None)
    assert numbers_of(book) == [1, 3]


def test_a_released_unfinished_report_comes_back_before_new_numbers(tmp_path: Path, server: RedisServer) -> None:
    book = make_book(tmp_path, server.url, [1, 2, 3])
    book.claim_next("api_1", my_identity())
    book.claim_next("api_1", my_identity())
    book.release(1, finished=False)
    again = book.claim_next("api_2", my_identity())
    assert again is not None and again.number == 1 and again.handed_back
    assert numbers_of(book) == [3]


def test_a_finished_report_is_never_handed_out_again(tmp_path: Path, server: RedisServer) -> None:
    book = make_book(tmp_path, server.url, [1, 2])
    book.claim_next("api_1", my_identity())
    mark_done(book, 1)
    book.release(1, finished=True)
    assert numbers_of(book) == [2]
    assert book.snapshot()["leases"].keys() == {"2"}


def test_an_expired_lease_is_handed_out_first_to_another_host(tmp_path: Path, server: RedisServer) -> None:
    dead = make_book(tmp_path, server.url, [1, 2, 3], lease_ttl=0.3, host="host-a")
    assert dead.claim_next("api_1", "1:1") is not None  # host-a dies holding report 1: nobody renews
    other = RedisClaimBook(server.url, dead.store, dead.input_dir, check_interval=0.0, host="host-b")
    other.begin(1, None)
    first = other.claim_next("api_9", my_identity())
    assert first is not None and first.number == 2
    time.sleep(0.5)
    taken = other.claim_next("api_9", my_identity())
    assert taken is not None and taken.number == 1 and taken.handed_back


def test_a_renewed_lease_outlives_its_time_to_live(tmp_path: Path, server: RedisServer) -> None:
    book = make_book(tmp_path, server.url, [1, 2], lease_ttl=0.4)
    book.claim_next("api_1", my_identity())
    for _ in range(4):
        time.sleep(0.2)
        book.renew()
    other = RedisClaimBook(server.url, book.store, book.input_dir, check_interval=0.0, host="host-b")
    got = other.claim_next("api_2", my_identity())
    assert got is not None and got.number == 2
    assert other.claim_next("api_2", my_identity()) is None


def test_files_arriving_above_and_below_the_counter_are_claimed(tmp_path: Path, server: RedisServer) -> None:
    book = make_book(tmp_path, server.url, [10, 20])
    assert [book.claim_next("api_1", my_identity()).number for _ in range(2)] == [10, 20]  # type: ignore[union-attr]
    write_notes(book.input_dir, [5, 30], text="note")
    assert numbers_of(book) == [5, 30]


def test_drained_waits_for_leases_in_flight(tmp_path: Path, server: RedisServer) -> None:
    book = make_book(tmp_path, server.url, [1])
    assert not book.drained()
    book.claim_next("api_1", my_identity())
    assert not book.drained()
    mark_done(book, 1)
    book.release(1, finished=True)
    assert book.drained()


def test_the_end_bounds_the_range(tmp_path: Path, server: RedisServer) -> None:
    book = make_book(tmp_path, server.url, [1, 2, 3, 4], start=2, end=3)
    assert numbers_of(book) == [2, 3]


def test_a_host_with_another_input_folder_or_start_is_refused(tmp_path: Path, server: RedisServer) -> None:
    book = make_book(tmp_path, server.url, [1, 2])
    write_notes(tmp_path / "elsewhere", [1], text="note")
    stranger = RedisClaimBook(server.url, book.store, tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match=r"DIAG_CLAIMS_URL.*input_dir .*in \(this host: .*elsewhere\)"):
        stranger.begin(1, None)
    with pytest.raises(ConfigError, match=r"start 1 \(this host: 2\)"):
        RedisClaimBook(server.url, book.store, book.input_dir).begin(2, None)


def test_a_host_joining_the_same_job_keeps_its_progress(tmp_path: Path, server: RedisServer) -> None:
    book = make_book(tmp_path, server.url, [1, 2, 3])
    book.claim_next("api_1", my_identity())
    joiner = RedisClaimBook(server.url, book.store, book.input_dir, check_interval=0.0, host="host-b")
    joiner.begin(1, None)
    assert joiner.job_id == book.job_id
    assert numbers_of(joiner) == [2, 3]


def test_claiming_before_any_job_says_so(tmp_path: Path, server: RedisServer) -> None:
    write_notes(tmp_path / "in", [1], text="note")
    book = RedisClaimBook(server.url, OutputStore(tmp_path / "out"), tmp_path / "in")
    with pytest.raises(JobNotStarted, match="no job has been started in Redis"):
        book.claim_next("api_1", my_identity())


def test_unreachable_redis_raises_claims_unavailable_and_recovers(tmp_path: Path, server: RedisServer) -> None:
    book = make_book(tmp_path, server.url, [1, 2, 3])
    held = book.claim_next("api_1", my_identity())
    assert held is not None
    server.stop()
    with pytest.raises(ClaimsUnavailable, match=r"unreachable.*DIAG_CLAIMS_URL"):
        book.claim_next("api_1", my_identity())
    mark_done(book, 1)
    book.release(1, finished=True)  # kept while Redis is away: the report is safe in the output folder
    server.start()  # same port, same AOF
    assert numbers_of(book) == [2, 3]
    assert book.snapshot()["leases"].keys() == {"2", "3"}  # the lease of 1 went when Redis came back


def test_ping_names_the_setting_when_redis_is_not_there(tmp_path: Path) -> None:
    from tests.helpers.redis_server import free_port

    book = RedisClaimBook(f"redis://127.0.0.1:{free_port()}/0", OutputStore(tmp_path / "out"), tmp_path)
    with pytest.raises(ConfigError, match="DIAG_CLAIMS_URL / --claims-url: cannot reach Redis"):
        book.ping()


@pytest.mark.parametrize("url", ["http://host:1", "redis://", "redis://h:port/0", "redis://h:1/x"])
def test_a_malformed_claims_url_is_refused_naming_the_setting(url: str) -> None:
    with pytest.raises(ConfigError, match="DIAG_CLAIMS_URL / --claims-url"):
        claims_url(url)


def test_the_factory_picks_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state, store = StateDir(tmp_path / "state"), OutputStore(tmp_path / "out")
    monkeypatch.delenv("DIAG_CLAIMS_URL", raising=False)
    assert isinstance(open_claims(state, store, tmp_path), ClaimBook)
    monkeypatch.setenv("DIAG_CLAIMS_URL", "redis://127.0.0.1:1/2")
    assert isinstance(open_claims(state, store, tmp_path), RedisClaimBook)


def _claim_all(url: str, root: str, host: str, queue: multiprocessing.Queue[list[int]]) -> None:
    book = RedisClaimBook(url, OutputStore(Path(root) / "out"), Path(root) / "in", host=host)
    got = []
    while (claim := book.claim_next("api_1", my_identity())) is not None:
        got.append(claim.number)
        mark_done(book, claim.number)
        book.release(claim.number, finished=True)
    queue.put(got)


def test_claimers_on_several_processes_never_share_a_report(tmp_path: Path, server: RedisServer) -> None:
    make_book(tmp_path, server.url, list(range(1, 301)))
    queue: multiprocessing.Queue[list[int]] = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_claim_all, args=(server.url, str(tmp_path), f"h{i}", queue))
               for i in range(6)]
    for process in workers:
        process.start()
    results = [queue.get(timeout=60) for _ in workers]
    for process in workers:
        process.join(timeout=10)
    claimed = [n for got in results for n in got]
    assert sorted(claimed) == list(range(1, 301))


@pytest.mark.parametrize("raw", ["soon", "2", "-1", "nan"])
def test_a_bad_lease_ttl_is_refused_naming_the_setting(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from distill.job.claims_backend import lease_ttl

    monkeypatch.setenv("DIAG_LEASE_TTL", raw)
    with pytest.raises(ConfigError, match="DIAG_LEASE_TTL"):
        lease_ttl(default=30.0)


def test_the_lease_ttl_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIAG_CLAIMS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("DIAG_LEASE_TTL", "7.5")
    book = open_claims(StateDir(tmp_path / "state"), OutputStore(tmp_path / "out"), tmp_path)
    assert isinstance(book, RedisClaimBook) and book.lease_ttl_ms == 7500
