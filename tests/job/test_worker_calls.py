"""A worker and its endpoint's calls: a graceful stop never waits out a backoff or a Retry-After (the
report goes back to pending with its finished steps checkpointed, never to failed), and a refused
structured-output form costs one line in the worker's log, not the report."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distill.bench.stub_server import CallInfo, Fault, StubServer
from distill.core.config import Endpoint, Secret, Settings
from distill.job.claims import ClaimBook
from distill.job.state import StateDir
from distill.job.worker import EXIT_OK, Worker
from distill.results.store import OutputStore
from tests.helpers.jobtools import wait_until
from tests.helpers.notes import write_notes


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    yield server
    server.stop()


def _settings(tmp_path: Path, server: StubServer, **endpoint: Any) -> Settings:
    api = Endpoint("api_1", base_url=server.url, model="stub-model", api_key=Secret("k"), provider="openai",
                   **endpoint)
    settings = Settings(endpoints={"api_1": api}, input_dir=tmp_path / "in", output_dir=tmp_path / "out",
                        check_interval=0.1, state_dir=tmp_path / "state")
    write_notes(settings.input_dir, [7])
    state = StateDir(settings.state_dir)
    state.ensure()
    store = OutputStore(settings.output_dir)
    store.prepare()
    ClaimBook(state, store, settings.input_dir).begin(7, None)
    return settings


def _run_until_stopped(settings: Settings, started: Any) -> tuple[list[int], str]:
    out = io.StringIO()
    worker = Worker("api_1", settings, job_id="j1", out=out)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
    thread.start()
    wait_until(started, timeout=60)
    StateDir(settings.state_dir).request_stop()  # graceful: the stop flag, not --now
    thread.join(timeout=120)  # a worker waiting out the Retry-After would still be here
    assert not thread.is_alive()
    return codes, out.getvalue()


def _assert_pending_with_checkpoint(settings: Settings) -> None:
    store = OutputStore(settings.output_dir)
    assert not store.is_done(7) and not store.is_failed(7)
    assert "findings" in store.load_checkpoints(7)  # the finished step is kept, not paid for again
    book = ClaimBook(StateDir(settings.state_dir), store, settings.input_dir)
    assert book.snapshot()["leases"] == {}
    claim = book.claim_next("api_2", "someone-else")
    assert claim is not None and claim.number == 7  # pending: the next worker gets it


def _organs(kind: str, **fault: Any) -> Any:
    def plan(call: CallInfo) -> Fault:
        return Fault(kind, **fault) if call.step == "organs" else Fault()

    return plan


def test_a_graceful_stop_during_a_900_s_retry_after_hands_the_report_back(stub: StubServer,
                                                                            tmp_path: Path) -> None:
    stub.fault_plan = _organs("429", retry_after=900)
    settings = _settings(tmp_path, stub)
    codes, out = _run_until_stopped(settings, lambda: stub.faults["429"] >= 1)
    assert codes == [EXIT_OK] and stub.faults["429"] == 1  # asked once, then stopped instead of waiting
    assert "stop requested while waiting on the endpoint; report handed back" in out
    beat = StateDir(settings.state_dir).read_heartbeat("api_1")
    assert beat is not None and beat["reason"] == "stop requested"
    _assert_pending_with_checkpoint(settings)


def test_a_graceful_stop_during_a_trickling_call_ends_at_the_calls_deadline(stub: StubServer,
                                                                             tmp_path: Path) -> None:
    stub.fault_plan = _organs("trickle", delay_s=1.0)
    settings = _settings(tmp_path, stub, deadline_s=2.0, deadline_per_token_s=0.0001, max_attempts=5)
    codes, out = _run_until_stopped(settings, lambda: stub.faults["trickle"] >= 1)
    assert codes == [EXIT_OK]
    assert stub.faults["trickle"] == 1  # the call ended at its deadline and was not asked again
    assert "report handed back" in out
    _assert_pending_with_checkpoint(settings)


def test_a_refused_json_schema_is_one_line_in_the_log_and_the_report_is_done(stub: StubServer,
                                                                               tmp_path: Path) -> None:
    stub.fault_plan = lambda call: Fault("no_json_schema")
    settings = _settings(tmp_path, stub, response_format="json_schema")
    out = io.StringIO()
    assert Worker("api_1", settings, job_id="j1", until_drained=True, out=out).run() == EXIT_OK
    lines = [line for line in out.getvalue().splitlines() if "refused response_format" in line]
    assert len(lines) == 1 and "json_schema" in lines[0] and "json_object" in lines[0]
    assert OutputStore(settings.output_dir).is_done(7)
