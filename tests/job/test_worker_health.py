"""A worker whose endpoint gives up: an outage hands the report back and probes; a report's own failure
is struck for the endpoint and fails only on a second endpoint."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

from distill.core.config import Endpoint, Settings
from distill.core.errors import EndpointUnavailable
from distill.extraction.extractor import CallRecord, StepInput, StepResult
from distill.job.state import CLAIMS_FILE, StateDir
from distill.job.worker import EXIT_OK, Worker
from distill.results.atomic import read_json
from distill.results.store import OutputStore
from tests.helpers.fakes import FakeExtractor
from tests.helpers.jobtools import begin_claims, wait_until


def settings_for(tmp_path: Path, numbers: list[int]) -> Settings:
    endpoints = {f"api_{i}": Endpoint(name=f"api_{i}", probe_min_s=0.01, probe_max_s=0.05) for i in (1, 2)}
    settings = Settings(endpoints=endpoints, input_dir=tmp_path / "in", output_dir=tmp_path / "out",
                        check_interval=0.05, state_dir=tmp_path / "state")
    begin_claims(settings, numbers)
    return settings


def gave_up(api: str) -> EndpointUnavailable:
    exc = EndpointUnavailable(f"endpoint {api} (stub) failed 5 attempt(s); last: connection failed", endpoint=api)
    exc.calls = [CallRecord(step="findings", attempt=i, latency_s=0.0, status="api_unavailable")  # type: ignore[attr-defined]
                 for i in range(1, 6)]
    return exc


class Flaky(FakeExtractor):
    """Gives up (``EndpointUnavailable``) on its first ``first`` calls, and on every call for ``reports``."""

    def __init__(self, api: str, *, first: int = 0, reports: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.api, self.first, self.reports, self.seen = api, first, reports, 0

    def run(self, step: str, data: StepInput) -> StepResult:
        self.seen += 1
        if self.seen <= self.first or data.report.number in self.reports:
            raise gave_up(self.api)
        return super().run(step, data)


def make_worker(api: str, settings: Settings, extractor: FakeExtractor, probes: list[str]) -> tuple[Worker, list[str]]:
    """A worker whose probe answers from ``probes`` (the last one repeats); the states it went through."""
    worker = Worker(api, settings, job_id="j1", until_drained=True, out=io.StringIO(),
                    extractor_factory=lambda endpoint, **kwargs: extractor)
    script = list(probes)
    worker.watch.probe = lambda: script.pop(0) if len(script) > 1 else script[0]  # type: ignore[method-assign]
    states: list[str] = []
    real = worker.set_state

    def recording(state: str, **details: Any) -> None:
        states.append(state)
        real(state, **details)

    worker.set_state = recording  # type: ignore[method-assign]
    worker.watch._set_state = recording
    return worker, states


def test_an_outage_hands_the_report_back_goes_down_and_resumes_when_a_probe_is_answered(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, [1, 2, 3])
    refused = "probe: connection failed (ConnectionRefusedError)"
    worker, states = make_worker("api_1", settings, Flaky("api_1", first=1), [refused, refused, refused, ""])
    assert worker.run() == EXIT_OK
    store = OutputStore(settings.output_dir)
    assert all(store.is_done(n) for n in (1, 2, 3)) and store.failed_numbers() == set()
    assert "down" in states and states.index("down") < len(states) - 1
    log = worker.out.getvalue()  # type: ignore[attr-defined]
    assert "report 1: endpoint api_1 (stub) failed 5 attempt(s)" in log and "handed back with its checkpoints" in log
    assert "endpoint down since" in log and "endpoint up again after" in log
    beat = StateDir(settings.state_dir).read_heartbeat("api_1")
    assert beat is not None and beat["health"] == "up" and beat["stats"]["failed"] == 0
    claims = read_json(StateDir(settings.state_dir).path(CLAIMS_FILE))
    assert not claims.get("strikes")  # an outage marks no report


def test_the_heartbeat_of_a_down_endpoint_says_down_since_when_and_why(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, [1])
    worker, _states = make_worker("api_1", settings, Flaky("api_1", first=1), ["probe: HTTP 503: overloaded"])
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    state = StateDir(settings.state_dir)
    beat = wait_until(lambda: (b := state.read_heartbeat("api_1")) and b.get("state") == "down" and b, timeout=20)
    assert beat["health"] == "down" and beat["health_since"] <= beat["updated"]
    # The latest error: the report's give-up, or the probe that failed after it.
    assert (beat["down_reason"].startswith("endpoint api_1 (stub) failed 5 attempt(s)")
            or beat["down_reason"] == "probe: HTTP 503: overloaded")
    assert beat["reason"].startswith("down since ") and beat.get("report") is None
    assert beat["failures_in_a_row"] >= 3
    worker.stop_after_current = True
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert OutputStore(settings.output_dir).failed_numbers() == set()


def test_a_report_failing_on_an_endpoint_that_answers_probes_goes_elsewhere_and_fails_on_the_second(
        tmp_path: Path) -> None:
    settings = settings_for(tmp_path, [1, 2, 3])
    first, _ = make_worker("api_1", settings, Flaky("api_1", reports=(2,)), [""])
    thread = threading.Thread(target=first.run, daemon=True)
    thread.start()
    store = OutputStore(settings.output_dir)
    claims_path = StateDir(settings.state_dir).path(CLAIMS_FILE)
    wait_until(lambda: store.is_done(1) and store.is_done(3) and (read_json(claims_path) or {}).get("strikes"),
               timeout=20)
    assert not store.is_failed(2) and not store.is_done(2)  # struck once: not failed, and api_1 leaves it alone
    first.stop_after_current = True
    thread.join(timeout=10)
    assert read_json(claims_path)["strikes"] == {"2": ["api_1"]}

    second, _ = make_worker("api_2", settings, Flaky("api_2", reports=(2,)), [""])
    assert second.run() == EXIT_OK
    assert store.is_failed(2)
    failed = next((settings.output_dir / "failed").glob("diagnostic_2.json"))
    record = read_json(failed)
    assert record["error_class"] == "api_unavailable" and record["endpoint"] == "api_9"
    assert "failed on 2 endpoints that answered otherwise (api_1, api_2)" in record["message"]
