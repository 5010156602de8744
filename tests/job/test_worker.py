from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from distill.core.config import Endpoint, Settings
from distill.core.errors import EndpointAuthError
from distill.extraction.extractor import Extractor
from distill.job.claims import ClaimBook
from distill.job.state import StateDir
from distill.job.worker import EXIT_DISABLED, EXIT_OK, Worker
from distill.results.store import OutputStore
from tests.helpers.fakes import FakeExtractor
from tests.helpers.jobtools import begin_claims as begin
from tests.helpers.notes import write_notes


def make_settings(tmp_path: Path) -> Settings:
    endpoints = {f"api_{i}": Endpoint(name=f"api_{i}") for i in (1, 2)}
    return Settings(endpoints=endpoints, input_dir=tmp_path / "in", output_dir=tmp_path / "out",
                    check_interval=0.1, state_dir=tmp_path / "state")


def factory(extractor: Extractor) -> Any:
    return lambda endpoint, **kwargs: extractor


def test_until_drained_processes_everything_and_writes_an_exit_record(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    begin(settings, [1, 2, 5])
    out = io.StringIO()
    worker = Worker("api_1", settings, job_id="j1", until_drained=True, out=out, extractor_factory=factory(FakeExtractor()))
    assert worker.run() == EXIT_OK
    store = OutputStore(settings.output_dir)
    assert all(store.is_done(n) for n in (1, 2, 5))
    beat = StateDir(settings.state_dir).read_heartbeat("api_1")
    assert beat is not None and beat["state"] == "exited" and beat["exit_code"] == 0 and beat["reason"] == "drained"
    assert beat["stats"]["done"] == 3 and len(beat["stats"]["recent"]) == 3
    assert "report 5: saved" in out.getvalue()
    assert beat["teacher_id"] == "openai/fake-model" and "teacher openai/fake-model" in out.getvalue()


def test_a_refused_key_disables_the_endpoint_and_hands_the_report_back(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    begin(settings, [1, 2])
    bad = FakeExtractor({"findings": EndpointAuthError("api_2: 401 Unauthorized: check DIAG_API_2_KEY")})
    worker = Worker("api_2", settings, job_id="j1", until_drained=True, out=io.StringIO(),
                    extractor_factory=factory(bad))
    assert worker.run() == EXIT_DISABLED
    beat = StateDir(settings.state_dir).read_heartbeat("api_2")
    assert beat is not None and "401" in beat["reason"]
    good = Worker("api_1", settings, job_id="j1", until_drained=True, out=io.StringIO(),
                  extractor_factory=factory(FakeExtractor()))
    assert good.run() == EXIT_OK
    assert OutputStore(settings.output_dir).is_done(1) and not OutputStore(settings.output_dir).is_failed(1)


def test_the_stop_flag_ends_the_worker_before_it_claims(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    begin(settings, [1])
    StateDir(settings.state_dir).request_stop()
    extractor = FakeExtractor()
    worker = Worker("api_1", settings, job_id="j1", out=io.StringIO(), extractor_factory=factory(extractor))
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
    thread.start()
    thread.join(timeout=20)  # a worker that ignored the flag would wait for reports for ever
    assert codes == [EXIT_OK]
    assert sum(extractor.calls.values()) == 0
    claims = ClaimBook(StateDir(settings.state_dir), OutputStore(settings.output_dir), settings.input_dir).snapshot()
    assert claims["leases"] == {} and claims["counter"] == 0  # nothing was claimed


def test_counts_carry_over_when_a_worker_restarts_in_the_same_job(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    begin(settings, [1])
    Worker("api_1", settings, job_id="j1", until_drained=True, out=io.StringIO(),
           extractor_factory=factory(FakeExtractor())).run()
    write_notes(settings.input_dir, [2])
    again = Worker("api_1", settings, job_id="j1", until_drained=True, out=io.StringIO(),
                   extractor_factory=factory(FakeExtractor()))
    again.book.check_interval = 0.0
    again.run()
    beat = StateDir(settings.state_dir).read_heartbeat("api_1")
    assert beat is not None and beat["stats"]["done"] == 2


def test_an_unknown_endpoint_is_a_configuration_error(tmp_path: Path) -> None:
    from distill.core.errors import ConfigError

    with pytest.raises(ConfigError, match="api_99"):
        Worker("api_99", make_settings(tmp_path), job_id="j")


def test_an_idle_worker_counts_its_idle_time_from_when_it_became_idle(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    begin(settings, [1])
    worker = Worker("api_1", settings, job_id="j1", extractor_factory=factory(FakeExtractor()))
    worker.set_state("working", report=1)
    worker.set_state("idle")
    became_idle = worker.status["since"]
    time.sleep(0.02)
    worker.set_state("idle")  # it looked again and found nothing
    assert worker.status["since"] == became_idle
    worker.set_state("working", report=2)
    assert worker.status["since"] > became_idle


def test_the_profile_knob_writes_the_workers_cprofile_statistics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pstats

    from distill.job.worker import PROFILE_ENV

    settings = make_settings(tmp_path)
    begin(settings, [1, 2])
    monkeypatch.setenv(PROFILE_ENV, str(tmp_path))
    worker = Worker("api_1", settings, job_id="j1", until_drained=True, out=io.StringIO(),
                    extractor_factory=factory(FakeExtractor()))
    assert worker.run() == EXIT_OK
    [written] = tmp_path.glob("api_1.*.prof")
    functions = {name for _file, _line, name in pstats.Stats(str(written)).stats}  # type: ignore[attr-defined]
    assert "process_report" in functions
