"""Whole jobs against loopback stubs whose endpoints die and come back: an outage is never data.

The figures of each run are printed (``pytest -s``).
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distill.bench.stub_server import Fault, StubServer
from distill.job.state import StateDir
from tests.helpers.chaos_tools import copy_notes, read_outputs, stub_counts_by_report, write_endpoint_config
from tests.helpers.jobtools import cli, job_ended, status, stray_files, wait_until

KEY = "sk-health-run-key"
PROBE_MIN_S = 0.5
PROBE_MAX_S = 2.0
HEALTH = {"down_after": 3, "probe_min": PROBE_MIN_S, "probe_max": PROBE_MAX_S}
#: Scheduling slack on top of one probe interval: the probe's own request, a loaded two-core machine.
SLACK_S = 1.5

pytestmark = [pytest.mark.tmux, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


@pytest.fixture
def job(isolated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    stubs: list[StubServer] = []

    def configure(endpoints: int, *, latency_s: float, urls: int = 1) -> list[StubServer]:
        for _ in range(urls):
            stubs.append(StubServer(latency_s=latency_s, require_key=KEY).start())
        monkeypatch.setenv("DIAG_CONFIG", str(write_endpoint_config(tmp_path, endpoints=endpoints, timeout=2.0,
                                                                    max_attempts=3, backoff_base=0.05,
                                                                    backoff_cap=0.2, health=HEALTH)))
        monkeypatch.setenv("DIAG_API_KEY", KEY)
        monkeypatch.setenv("DIAG_BASE_URL", stubs[0].url)
        for i, stub in enumerate(stubs[1:], start=2):
            monkeypatch.setenv(f"DIAG_API_{i}_BASE_URL", stub.url)
        return stubs

    state = StateDir(Path(isolated["state"]))
    yield {"configure": configure, "state": state, "input": tmp_path / "in", "output": tmp_path / "out"}
    if state.running_job() is not None:
        cli("stop", "--now")
        wait_until(lambda: state.running_job() is None, timeout=30)
    for stub in stubs:
        stub.stop()


def start(job: dict[str, Any], first: int, *extra: str) -> None:
    result = cli("start", str(first), "--input-dir", str(job["input"]), "--output-dir", str(job["output"]), *extra)
    assert result.returncode == 0, result.stderr + result.stdout


def beat(state: StateDir, api: str) -> dict[str, Any]:
    return state.read_heartbeat(api) or {}


def teachers(outputs: Any) -> Counter[str]:
    return Counter(raw["teacher"]["endpoint"] for raw in outputs.raw.values())


def test_a_dead_endpoint_beside_a_healthy_one_fails_nothing_and_comes_back_within_one_probe_interval(
        job: dict[str, Any]) -> None:
    healthy, dead = job["configure"](2, latency_s=0.05, urls=2)
    dead.go_down("refuse")
    numbers = copy_notes(job["input"], 60)
    state: StateDir = job["state"]
    start(job, numbers[0])
    # api_2 takes a report, cannot reach its endpoint, gives the report back and goes down.
    down = wait_until(lambda: (b := beat(state, "api_2")).get("state") == "down" and b, timeout=60, interval=0.1)
    assert down["health"] == "down" and "ConnectionRefusedError" in down["down_reason"]
    wait_until(lambda: status(state).get("apis_status", {}).get("api_2", {}).get("state") == "down", timeout=30)
    row = status(state)["apis_status"]["api_2"]
    assert row["down_since"] and "ConnectionRefusedError" in row["down_reason"]
    assert status(state)["endpoints_down"]["waiting"] is False  # api_1 still works
    wait_until(lambda: beat(state, "api_1").get("stats", {}).get("done", 0) >= 10, timeout=90)
    assert beat(state, "api_2").get("stats", {}).get("done", 0) == 0
    assert beat(state, "api_2")["state"] == "down"
    done_while_down = beat(state, "api_1")["stats"]["done"]

    dead.come_back()
    back_at = dead.back_at
    assert back_at is not None
    up = wait_until(lambda: (b := beat(state, "api_2")).get("health") == "up" and b, timeout=30, interval=0.05)
    returned_after = up["health_since"] - back_at
    wait_until(lambda: beat(state, "api_2").get("stats", {}).get("done", 0) >= 1, timeout=60)  # working again
    wait_until(lambda: len(read_outputs(job["output"]).done) == len(numbers), timeout=120, interval=0.25)
    assert cli("stop").returncode == 0
    wait_until(lambda: job_ended(state), timeout=60, interval=0.25)

    outputs = read_outputs(job["output"])
    by_teacher = teachers(outputs)
    print(f"\ndead beside healthy: {len(outputs.done)} done, {len(outputs.failed)} failed; api_1 did "
          f"{done_while_down} while api_2 was down; api_2 up {returned_after:.2f} s after its stub returned "
          f"(probe_max {PROBE_MAX_S} s); by teacher {dict(by_teacher)}")
    assert outputs.failed == {}
    assert outputs.done == set(numbers)
    assert 0 <= returned_after <= PROBE_MAX_S + SLACK_S
    assert by_teacher["api_2"] >= 1 and by_teacher["api_1"] + by_teacher["api_2"] == len(numbers)
    assert set(healthy.stats()["by_model"]) == {"stub-api_1"} and dead.stats()["probes"] >= 1
    assert stray_files(job["output"], state.root) == []


def test_every_endpoint_down_for_sixty_seconds_fails_nothing_and_the_job_finishes_after(job: dict[str, Any]) -> None:
    """A real 60 s outage of all 16 endpoints (HTTP 503 to every call and probe) in the middle of a job."""
    (stub,) = job["configure"](16, latency_s=0.05)
    numbers = copy_notes(job["input"], 300)
    state: StateDir = job["state"]
    start(job, numbers[0], "--until-drained")
    wait_until(lambda: len(read_outputs(job["output"]).done) >= 10, timeout=120, interval=0.2)
    stub.go_down("503")
    outage_began = time.monotonic()
    waiting = wait_until(lambda: (s := status(state)).get("endpoints_down", {}).get("waiting") and s,
                         timeout=50, interval=0.2)
    assert waiting["endpoints_down"]["count"] == 16 and waiting["endpoints_down"]["waiting_since"]
    assert all(row["state"] == "down" and "HTTP 503" in row["down_reason"]
               for row in waiting["apis_status"].values())
    monitor = cli("monitor", "--once")
    assert monitor.returncode == 0 and "every endpoint is down (16)" in " ".join(monitor.stdout.split())
    done_at_outage = len(read_outputs(job["output"]).done)
    time.sleep(max(0.0, 60.0 - (time.monotonic() - outage_began)))
    during = read_outputs(job["output"])
    assert during.failed == {} and state.running_job() is not None  # it waited: nothing failed, nothing drained
    stub.come_back()
    back_at = stub.back_at
    assert back_at is not None

    def all_up() -> dict[str, dict[str, Any]] | None:
        beats = state.read_heartbeats()
        return beats if len(beats) == 16 and all(b.get("health") == "up" for b in beats.values()) else None

    ups = wait_until(all_up, timeout=60, interval=0.05)
    returned = [b["health_since"] - back_at for b in ups.values()]
    wait_until(lambda: job_ended(state), timeout=240, interval=0.25)

    outputs = read_outputs(job["output"])
    print(f"\nall down 60 s: {done_at_outage} done before the outage, {len(outputs.done)} done, "
          f"{len(outputs.failed)} failed; endpoints up again {min(returned):.2f}..{max(returned):.2f} s after "
          f"the stub returned (probe_max {PROBE_MAX_S} s); stub faults {stub.stats()['faults']}")
    assert outputs.failed == {}
    assert outputs.done == set(numbers)
    assert done_at_outage < len(numbers)  # the outage hit reports that were still to do
    assert stray_files(job["output"], state.root) == []


def test_a_report_that_fails_on_two_endpoints_that_answer_otherwise_fails_after_two_and_no_endpoint_goes_down(
        job: dict[str, Any]) -> None:
    (stub,) = job["configure"](3, latency_s=0.02)
    numbers = copy_notes(job["input"], 20)
    poison = numbers[5]
    stub.fault_plan = lambda call: Fault("500") if call.report == poison else Fault()
    state: StateDir = job["state"]
    start(job, numbers[0], "--until-drained")
    wait_until(lambda: job_ended(state), timeout=180, interval=0.25)

    outputs = read_outputs(job["output"])
    calls = stub_counts_by_report(stub.stats()["by_report_step"])
    print(f"\npoison report: {len(outputs.done)} done, failed {sorted(outputs.failed)}, {calls[poison]} calls on "
          f"the poison report, {stub.stats()['probes']} probes")
    assert set(outputs.failed) == {poison} and outputs.done == set(numbers) - {poison}
    record = outputs.failed[poison]
    assert record["error_class"] == "api_unavailable"
    assert "failed on 2 endpoints that answered otherwise" in record["message"]
    # Each of the two endpoints spent its retry budget (3 attempts) once; nobody tried it a third time.
    assert calls[poison] == 2 * 3
    assert stub.stats()["probes"] == 2  # one verdict probe per endpoint, each answered: no endpoint went down
