"""Every call is bounded: a wall-clock deadline, a size cap on the decompressed answer, odd bodies refused."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from distill.bench.stub_odd import deep_body, gzip_bomb, huge_body
from distill.bench.stub_server import CallInfo, Fault, StubServer
from distill.core.config import Endpoint, Secret
from distill.core.errors import EndpointAuthError, EndpointUnavailable, InvalidOutput
from distill.extraction.extractor import CallRecord
from distill.extraction.http_body import CallWatch
from distill.extraction.http_client import ChatClient

MESSAGES = [
    {"role": "system", "content": "[diag-distill step: findings]\nrules"},
    {"role": "user", "content": "[report: 5]\n<<<NOTE\nThe patient reports chest pain.\nNOTE>>>"},
]
CAP = 256_000


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    yield server
    server.stop()


def _client(server: StubServer, **settings: Any) -> ChatClient:
    values: dict[str, Any] = {"deadline_s": 1.0, "deadline_per_token_s": 0.0001, "max_answer_bytes": CAP,
                              "max_attempts": 1, "timeout_s": 30.0, **settings}
    endpoint = Endpoint("api_4", base_url=server.url, model="stub-model", api_key=Secret("k"), provider="openai",
                        **values)
    return ChatClient(endpoint, sleep=lambda s: None)


def _first(kind: str, **fault: Any) -> Any:
    def plan(call: CallInfo) -> Fault:
        return Fault(kind, **fault) if call.n == 0 else Fault()

    return plan


def test_a_trickling_endpoint_ends_at_the_calls_deadline(stub: StubServer) -> None:
    # About 300 bytes at one a second would take five minutes; the call's deadline is 1.4 s.
    stub.fault_plan = _first("trickle", delay_s=1.0)
    calls: list[CallRecord] = []
    started = time.monotonic()
    with pytest.raises(EndpointUnavailable, match=r"deadline of 1\.4096 s"):
        _client(stub).chat(MESSAGES, step="findings", calls=calls)
    assert time.monotonic() - started < 60  # ended by the deadline, not by the answer's end
    assert [c.status for c in calls] == ["api_unavailable"] and "deadline" in calls[0].error


def test_headers_trickling_in_end_at_the_calls_deadline_too(stub: StubServer) -> None:
    stub.fault_plan = _first("trickle_headers", delay_s=1.0)
    calls: list[CallRecord] = []
    with pytest.raises(EndpointUnavailable, match="deadline"):
        _client(stub).chat(MESSAGES, step="findings", calls=calls)
    assert [c.status for c in calls] == ["api_unavailable"] and "deadline" in calls[0].error


def test_the_deadline_grows_with_max_tokens(stub: StubServer) -> None:
    stub.fault_plan = _first("trickle", delay_s=1.0)
    calls: list[CallRecord] = []
    with pytest.raises(EndpointUnavailable, match=r"deadline of 1\.2 s"):
        _client(stub, deadline_per_token_s=0.001).chat(MESSAGES, step="findings", calls=calls, max_tokens=200)


def test_a_trickle_is_retried_like_any_timeout_and_the_retry_answers(stub: StubServer) -> None:
    stub.fault_plan = _first("trickle", delay_s=1.0)
    calls: list[CallRecord] = []
    reply = _client(stub, max_attempts=2, backoff_base_s=0.01).chat(MESSAGES, step="findings", calls=calls)
    assert '"findings"' in reply.text and [c.status for c in calls] == ["api_unavailable", "ok"]


@pytest.mark.parametrize("kind", ["huge", "gzip_bomb"])
def test_an_oversized_answer_is_one_bounded_failure(stub: StubServer, kind: str) -> None:
    huge_body(), gzip_bomb()  # built before measuring: the server's copy is not the client's memory
    stub.fault_plan = lambda call: Fault(kind)
    calls: list[CallRecord] = []
    tracemalloc.start()
    try:
        with pytest.raises(InvalidOutput, match="larger than max_answer_bytes"):
            _client(stub, max_attempts=3).chat(MESSAGES, step="findings", calls=calls)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [c.status for c in calls] == ["invalid_output"] and stub.total == 1
    # The bomb inflates to about 1 GB and the huge answer is 8 MB; the client held about the cap at most.
    assert peak < 4 * CAP


def test_a_gzip_answer_within_the_cap_is_decoded(stub: StubServer) -> None:
    stub.fault_plan = lambda call: Fault("gzip")
    reply = _client(stub).chat(MESSAGES, step="findings", calls=[])
    assert reply.text.startswith('{"findings"') and reply.prompt_tokens > 0


def test_an_answer_body_nested_too_deeply_is_invalid_output_not_a_crash(stub: StubServer) -> None:
    deep_body()
    stub.fault_plan = lambda call: Fault("deep_body")
    calls: list[CallRecord] = []
    with pytest.raises(InvalidOutput, match="nested too deeply"):
        _client(stub, max_answer_bytes=4_000_000).chat(MESSAGES, step="findings", calls=calls)
    assert [c.status for c in calls] == ["invalid_output"]


def test_absurd_token_counts_in_usage_are_invalid_output(stub: StubServer) -> None:
    stub.fault_plan = lambda call: Fault("absurd_usage")
    calls: list[CallRecord] = []
    with pytest.raises(InvalidOutput, match="impossible token count"):
        _client(stub).chat(MESSAGES, step="findings", calls=calls)
    assert [(c.status, c.prompt_tokens) for c in calls] == [("invalid_output", 0)]


def test_the_connection_is_kept_alive_after_a_bounded_read(stub: StubServer) -> None:
    client = _client(stub)
    for _ in range(3):
        client.chat(MESSAGES, step="findings", calls=[])
    assert stub.total == 3 and stub.connections_opened == 1


def test_a_huge_error_page_is_cut_and_still_classified_by_its_status(stub: StubServer) -> None:
    stub.fault_plan = lambda call: Fault("huge_error")
    calls: list[CallRecord] = []
    with pytest.raises(EndpointAuthError, match="HTTP 401: <html>sign in"):
        _client(stub).chat(MESSAGES, step="findings", calls=calls)
    assert [c.status for c in calls] == ["api_auth"]


def test_one_watchdog_fires_each_unfinished_watch_at_its_own_deadline_and_never_a_finished_one() -> None:
    fired: list[tuple[str, float]] = []
    started = time.monotonic()

    class Recorded(CallWatch):
        def __init__(self, name: str, seconds: float) -> None:
            self.name = name
            super().__init__(seconds)

        def fire(self) -> None:
            if not self.finished:
                fired.append((self.name, time.monotonic() - started))
                self.finished = True

    late = Recorded("late", 1.5)
    finished = Recorded("finished", 0.2)
    soon = Recorded("soon", 0.1)  # sooner than what the watchdog already waits for
    finished.finish()
    deadline = time.monotonic() + 5
    while len(fired) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    assert [name for name, _ in fired] == ["soon", "late"]
    assert fired[0][1] >= 0.1 and fired[1][1] >= 1.5  # never before its deadline
    assert fired[0][1] < 1.0  # the sooner watch did not wait for the later one
    assert late.finished and soon.finished and not finished.fired
