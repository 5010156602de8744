from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distill.core.errors import ClaimsUnavailable
from distill.job.job_board import GRACEFUL, NOW, SILENT_AFTER_S, JobBoard, share_stop
from tests.helpers.redis_server import RedisServer, free_port, running_redis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path)


def test_a_stop_asked_here_reaches_the_board_and_another_host_takes_it(server: RedisServer) -> None:
    board = JobBoard(server.url)
    assert share_stop(board, local_stop=False, local_now=False) == ""
    assert share_stop(board, local_stop=True, local_now=False) == ""  # this host already has it
    assert board.stop_request() == GRACEFUL
    assert share_stop(board, local_stop=False, local_now=False) == GRACEFUL  # the other host
    assert share_stop(board, local_stop=True, local_now=True) == ""
    assert share_stop(board, local_stop=True, local_now=False) == NOW


def test_a_stop_now_is_never_weakened_and_a_new_start_clears_it(server: RedisServer) -> None:
    board = JobBoard(server.url)
    board.request_stop(now=True)
    board.request_stop(now=False)
    assert board.stop_request() == NOW
    board.clear_stop()
    assert board.stop_request() == ""


def test_hosts_are_listed_by_name_and_an_old_status_is_silent(server: RedisServer) -> None:
    board = JobBoard(server.url)
    board.publish("host-b", {"state": "running", "last_update_epoch": time.time()})
    board.publish("host-a", {"state": "running", "last_update_epoch": time.time() - SILENT_AFTER_S - 1})
    shown = board.hosts()
    assert list(shown) == ["host-a", "host-b"]
    assert shown["host-a"]["silent"] and not shown["host-b"]["silent"]
    assert shown["host-b"]["host"] == "host-b"


def test_an_unreachable_board_raises_claims_unavailable() -> None:
    with pytest.raises(ClaimsUnavailable, match="DIAG_CLAIMS_URL"):
        JobBoard(f"redis://127.0.0.1:{free_port()}/0").stop_request()
