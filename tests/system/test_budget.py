"""``start --max-cost``: a job against the stub stops claiming once its calls cost the budget."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distill.bench.stub_server import StubServer
from distill.core.prices import Price
from distill.job.state import StateDir
from tests.helpers.jobtools import cli, done_numbers, job_ended, status, wait_until
from tests.helpers.notes import write_notes

pytestmark = [pytest.mark.tmux, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

KEY = "sk-test-budget-key"
# Dear on purpose: a stub report (about 4,000 prompt tokens) costs about 2 to 4, so a budget of 6 ends early.
PRICE = {"input": 1000.0, "cached_input": 100.0, "output": 2000.0}


@pytest.fixture
def job(isolated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    config = tmp_path / "system_config.py"
    config.write_text("from distill.core.config import endpoint_table\n"
                      "MULTI_API_CONFIG = endpoint_table(2)\nCHECK_INTERVAL = 0.5\n"
                      f"MODEL_PRICES = {{'stub-model': {PRICE!r}}}\n")
    monkeypatch.setenv("DIAG_CONFIG", str(config))
    stub = StubServer(latency_s=0.1, require_key=KEY).start()
    monkeypatch.setenv("DIAG_API_KEY", KEY)
    monkeypatch.setenv("DIAG_BASE_URL", stub.url)
    monkeypatch.setenv("DIAG_MODEL", "stub-model")
    state = StateDir(Path(isolated["state"]))
    yield {"stub": stub, "state": state, "input": tmp_path / "in", "output": tmp_path / "out"}
    if state.running_job() is not None:
        cli("stop", "--now")
        wait_until(lambda: state.running_job() is None, timeout=30)
    stub.stop()


def test_max_cost_stops_claiming_at_the_budget_counted_from_the_stubs_tokens(job: dict[str, Any]) -> None:
    write_notes(job["input"], list(range(1, 41)))
    result = cli("start", "1", "--until-drained", "--max-cost", "6", "--input-dir", str(job["input"]),
                 "--output-dir", str(job["output"]))
    assert result.returncode == 0, result.stderr + result.stdout
    wait_until(lambda: job_ended(job["state"]), timeout=120)
    done = done_numbers(job["output"])
    assert 0 < len(done) < 40  # stopped early, gracefully: every claimed report finished
    final = status(job["state"])
    assert final["stop_reason"].startswith("budget reached: spent ") and "--max-cost 6" in final["stop_reason"]
    raws = [json.loads(p.read_text()) for p in (job["output"] / "diagnostic_results").glob("diagnostic_*.json")]
    price = Price(**PRICE)
    expected = sum(price.cost(r["usage"]["prompt_tokens"], r["usage"]["cached_tokens"],
                              r["usage"]["completion_tokens"]) for r in raws)
    assert all(r["usage"]["cost"] > 0 for r in raws)
    assert sum(r["usage"]["cost"] for r in raws) == pytest.approx(expected, rel=1e-6)
    assert final["cost"] == pytest.approx(expected, rel=1e-4) and final["cost"] >= 6
    # The stub's own counts are what the job billed.
    stub = job["stub"].stats()
    assert stub["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in raws)
    assert stub["cached_tokens"] == sum(r["usage"]["cached_tokens"] for r in raws) > 0
    snapshot = json.loads(cli("monitor", "--json").stdout)
    assert snapshot["control"]["stop_reason"] == final["stop_reason"]
    assert snapshot["tokens"]["cost"] == pytest.approx(expected, rel=1e-4)
