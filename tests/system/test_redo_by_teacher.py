"""Records of one teacher re-run by another: skipped and counted at start, redone with --redo, old outputs
kept under superseded/; a changed note redone with --redo-changed. Real jobs in tmux, against the stub."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from distill.bench.stub_server import CallInfo, Fault, StubServer
from distill.core.errors import StopRequested
from distill.extraction.extractor import StepInput, StepResult
from distill.extraction.pipeline import process_report
from distill.extraction.prompts import PROMPT_VERSION
from distill.extraction.teacher import LocalTeacher
from distill.job.state import StateDir
from distill.results.atomic import read_json
from distill.results.store import OutputStore
from tests.helpers.chaos_tools import kill_worker
from tests.helpers.jobtools import cli, job_ended, wait_until, write_config
from tests.helpers.notes import write_notes
from tests.helpers.redis_server import running_redis

pytestmark = [pytest.mark.tmux, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

OFFLINE = "local/local-rules-2"
LLM = f"openai/stub-model@{PROMPT_VERSION}"
DONE_OFFLINE = [1, 2, 3, 4]
REPAIRED, REJECTED, CHECKPOINTED = 2, 3, 5


class _StopsAtMapping:
    """The offline teacher, stopped before its mapping step: its first steps stay as checkpoints."""

    def __init__(self) -> None:
        self.inner = LocalTeacher("api_1")
        self.info = self.inner.info

    def run(self, step: str, data: StepInput) -> StepResult:
        if step == "mapping":
            raise StopRequested("stopped for the test")
        return self.inner.run(step, data)

    def close(self) -> None:
        pass


def _bad_answers() -> Any:
    """A fault plan: every answer for report 3 is prose, and the first findings answer for report 2."""
    first: dict[int, int] = {}

    def plan(call: CallInfo) -> Fault:
        if call.report == REJECTED:
            return Fault("not_json")
        if call.report == REPAIRED and call.step == "findings" and call.n == first.setdefault(REPAIRED, call.n):
            return Fault("not_json")
        return Fault()

    return plan


def _run_job(*args: str) -> str:
    """``start`` for a bounded range, waited to its end; what ``start`` printed."""
    state = StateDir(Path(os.environ["DIAG_STATE_DIR"]))
    result = cli("start", *args)
    assert result.returncode == 0, result.stderr + result.stdout
    wait_until(lambda: job_ended(state), timeout=90)
    return result.stdout


def _calls_by_report(stub: StubServer) -> Counter[int]:
    counts: Counter[int] = Counter()
    for (report, _step), n in stub.by_report_step.items():
        counts[report] += n
    return counts


def test_an_offline_job_then_an_llm_job_skips_then_redoes_the_offline_reports(
        isolated: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    tmp: Path = isolated["tmp"]
    notes, output = tmp / "in", tmp / "out"
    write_notes(notes, DONE_OFFLINE)
    folders = ("--input-dir", str(notes), "--output-dir", str(output))
    monkeypatch.setenv("DIAG_CONFIG", str(write_config(tmp, endpoints=2)))
    _run_job("1", "--end", "4", *folders)
    store = OutputStore(output)
    assert sorted(store.done_numbers()) == DONE_OFFLINE
    assert {read_json(store.raw_path(n))["teacher_id"] for n in DONE_OFFLINE} == {OFFLINE}
    offline_logs = {n: store.log_path(n).read_text(encoding="utf-8") for n in DONE_OFFLINE}
    # A fifth note the offline teacher left half done: two steps in its checkpoints.
    write_notes(notes, [CHECKPOINTED])
    with pytest.raises(StopRequested):
        process_report(notes / f"report_{CHECKPOINTED}.txt", extractor=_StopsAtMapping(), store=store)
    assert {d["teacher_id"] for d in store.load_checkpoints(CHECKPOINTED).values()} == {OFFLINE}

    with StubServer(latency_s=0.01, fault_plan=_bad_answers()) as stub:
        monkeypatch.setenv("DIAG_CONFIG", str(write_config(tmp, endpoints=1)))
        monkeypatch.setenv("DIAG_API_1_KEY", "sk-redo-test-key-0d9c8b7a")
        monkeypatch.setenv("DIAG_BASE_URL", stub.url)
        monkeypatch.setenv("DIAG_MODEL", "stub-model")

        said = _run_job("1", "--end", "4", *folders)
        first = said.splitlines()[0]
        assert first.startswith("found 4 report(s) numbered 1–4")
        assert f"4 done (4 by {OFFLINE} (not a teacher of this job: skipped; --redo local re-runs them))" in first
        assert f"teachers of this job: {LLM} (api_1)" in said
        assert stub.stats()["total"] == 0  # nothing of the offline teacher's was re-run

        said = _run_job("1", "--end", "5", "--redo", "local", *folders)
        assert "redoing 4 report(s) done by local/local-rules-2 (--redo local)" in said
        calls = _calls_by_report(stub)

    superseded = output / "superseded" / "local" / "local-rules-2"
    for n in (1, 2, 4):
        old = read_json(superseded / "diagnostic_results" / f"diagnostic_{n}.json")
        assert old["teacher_id"] == OFFLINE
        assert (superseded / "diagnostic_results_normalized" / f"diagnostic_{n}.json").is_file()
        assert (superseded / "logs" / f"diagnostic_{n}.log").read_text(encoding="utf-8") == offline_logs[n]
    # The redo of report 3 failed: its offline outputs stay in place, beside the failure record.
    assert not (superseded / "diagnostic_results" / f"diagnostic_{REJECTED}.json").exists()
    assert read_json(store.raw_path(REJECTED))["teacher_id"] == OFFLINE
    assert store.log_path(REJECTED).read_text(encoding="utf-8") == offline_logs[REJECTED]

    # Every report reached the LLM: the offline checkpoints of report 5 were not reused.
    assert set(calls) == {1, 2, 3, 4, 5} and all(calls[n] >= 3 for n in (1, 2, 4, 5))
    steps_of_5 = {step.split("#")[0] for (report, step) in stub.by_report_step if report == CHECKPOINTED}
    assert {"findings", "organs", "mapping"} <= steps_of_5
    assert sorted(store.settled_numbers()) == [1, 2, 4, 5] and store.is_failed(REJECTED)
    for n in (1, 2, 4, 5):
        raw = read_json(store.raw_path(n))
        assert raw["teacher_id"] == LLM and raw["teacher"]["model"] == "stub-model"
        assert raw["calls"] and all(c["answer"] for c in raw["calls"] if c["status"] == "ok")
        log = store.log_path(n).read_text(encoding="utf-8")
        assert "sk-redo-test-key" not in log and f"teacher {LLM}, model stub-model, host 127.0.0.1:" in log
    repaired = [c for c in read_json(store.raw_path(REPAIRED))["calls"] if c["step"] == "findings"]
    assert [c["purpose"] for c in repaired][:2] == ["answer", "repair"] and repaired[0]["rejected"]
    assert repaired[0]["answer"] != repaired[1]["answer"]
    failure = read_json(store.failed_path(REJECTED))
    assert failure["teacher_id"] == LLM
    assert failure["calls"] and all(c["answer"] and c["rejected"] for c in failure["calls"])
    half_done_log = store.log_path(CHECKPOINTED).read_text(encoding="utf-8").splitlines()
    attempts = [line for line in half_done_log if "attempt by endpoint" in line]
    assert len(attempts) == 2 and OFFLINE in attempts[0] and LLM in attempts[1]  # both attempts kept

    # A note changed after it was done: listed by stats, redone with --redo-changed.
    (notes / "report_4.txt").write_text("CHIEF COMPLAINT: Persistent cough and fever for a week.\n"
                                        "ASSESSMENT: Community acquired pneumonia of the right lower lobe.\n",
                                        encoding="utf-8")
    stats = cli("stats", "--output-dir", str(output))
    assert stats.returncode == 0, stats.stderr
    assert "changed since done: 1 report(s) (4); start --redo-changed re-runs them" in stats.stdout
    with StubServer(latency_s=0.01) as stub:
        monkeypatch.setenv("DIAG_BASE_URL", stub.url)
        said = _run_job("1", "--end", "5", *folders)
        assert "changed: 1 done report(s) whose note changed since it was done" in said
        assert stub.stats()["total"] == 0
        said = _run_job("1", "--end", "5", "--redo-changed", *folders)
        assert "redoing them (--redo-changed)" in said
        assert set(_calls_by_report(stub)) == {4}
    old = read_json(output / "superseded" / "openai" / f"stub-model@{PROMPT_VERSION}" / "diagnostic_results"
                    / "diagnostic_4.json")
    new = read_json(store.raw_path(4))
    assert old["report"]["sha256"] != new["report"]["sha256"] and new["teacher_id"] == LLM
    assert "changed since done" not in cli("stats", "--output-dir", str(output)).stdout


def test_the_status_file_and_the_monitor_list_a_changed_note(isolated: dict[str, Any],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    tmp: Path = isolated["tmp"]
    notes, output = tmp / "in", tmp / "out"
    write_notes(notes, [1, 2, 3])
    monkeypatch.setenv("DIAG_CONFIG", str(write_config(tmp, endpoints=1)))
    folders = ("--input-dir", str(notes), "--output-dir", str(output))
    _run_job("1", "--end", "3", *folders)
    (notes / "report_2.txt").write_text("CHIEF COMPLAINT: Headache.\nASSESSMENT: Migraine.\n", encoding="utf-8")
    _run_job("1", "--end", "3", *folders)
    state = StateDir(Path(os.environ["DIAG_STATE_DIR"]))
    status = state.read_status()
    assert status["counts"]["changed"] == 1 and status["changed_reports"] == [2]
    shown = cli("monitor", "--json")
    assert shown.returncode == 0, shown.stderr
    progress = json.loads(shown.stdout)["progress"]
    assert progress["changed"] == 1 and progress["changed_reports"] == [2]
    wide = cli("monitor", "--once", env={**os.environ, "COLUMNS": "120", "LINES": "60"})
    assert "changed 1 (--redo-changed)" in wide.stdout


def test_redo_works_with_claims_in_redis(isolated: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    tmp: Path = isolated["tmp"]
    notes, output = tmp / "in", tmp / "out"
    write_notes(notes, [1, 2, 3])
    servers = running_redis(tmp)
    redis = next(servers)
    try:
        monkeypatch.setenv("DIAG_CLAIMS_URL", redis.url)
        monkeypatch.setenv("DIAG_CONFIG", str(write_config(tmp, endpoints=1)))
        folders = ("--input-dir", str(notes), "--output-dir", str(output))
        _run_job("1", "--end", "3", *folders)
        with StubServer(latency_s=0.01) as stub:
            monkeypatch.setenv("DIAG_API_1_KEY", "sk-redo-redis-key-7e6d5c4b")
            monkeypatch.setenv("DIAG_BASE_URL", stub.url)
            monkeypatch.setenv("DIAG_MODEL", "stub-model")
            said = _run_job("1", "--end", "3", "--redo", "local", *folders)
            assert "redoing 3 report(s) done by local/local-rules-2 (--redo local)" in said
            assert set(_calls_by_report(stub)) == {1, 2, 3}
    finally:
        servers.close()
    store = OutputStore(output)
    assert {read_json(store.raw_path(n))["teacher_id"] for n in (1, 2, 3)} == {LLM}
    assert len(list((output / "superseded" / "local" / "local-rules-2" / "diagnostic_results").iterdir())) == 3


def test_a_worker_killed_mid_report_leaves_a_log_that_the_resumed_attempt_adds_to(
        isolated: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    tmp: Path = isolated["tmp"]
    notes, output = tmp / "in", tmp / "out"
    write_notes(notes, [1])
    state = StateDir(Path(os.environ["DIAG_STATE_DIR"]))
    store = OutputStore(output)
    with StubServer(latency_s=1.0) as stub:
        monkeypatch.setenv("DIAG_CONFIG", str(write_config(tmp, endpoints=1)))
        monkeypatch.setenv("DIAG_API_1_KEY", "sk-redo-kill-key-1a2b3c4d")
        monkeypatch.setenv("DIAG_BASE_URL", stub.url)
        monkeypatch.setenv("DIAG_MODEL", "stub-model")
        result = cli("start", "1", "--end", "1", "--input-dir", str(notes), "--output-dir", str(output))
        assert result.returncode == 0, result.stderr + result.stdout
        wait_until(lambda: "organs" in store.load_checkpoints(1), timeout=90)
        beat = state.read_heartbeats()["api_1"]
        assert kill_worker(state, beat, output) == {1}  # killed during the mapping call
        first = store.log_path(1).read_text(encoding="utf-8")
        wait_until(lambda: job_ended(state), timeout=120)
    assert store.is_done(1)
    log = store.log_path(1).read_text(encoding="utf-8")
    assert log.startswith(first) and "step organs: ok" in first
    attempts = [line for line in log.splitlines() if "attempt by endpoint api_1" in line]
    assert len(attempts) == 2 and "step organs: resumed from checkpoint" in log
    calls = read_json(store.raw_path(1))["calls"]  # the checkpointed steps' calls keep their answers too
    assert {c["step"] for c in calls} >= {"organs", "mapping"} and all(c["answer"] for c in calls)
