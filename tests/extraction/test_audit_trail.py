"""Every call's answer text in the records, checkpoints bound to their teacher, a log kept across attempts."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from distill.bench.stub_server import Fault, StubServer
from distill.core.config import Endpoint, Secret
from distill.core.errors import StopRequested
from distill.core.redact import KNOWN_MASK, register_secrets
from distill.extraction.extractor import CallRecord, StepInput, TeacherInfo
from distill.extraction.http_client import ChatClient
from distill.extraction.llm import LLMExtractor
from distill.extraction.pipeline import process_report
from distill.extraction.prompts import PROMPT_VERSION
from distill.extraction.report import read_report
from distill.results.atomic import read_json
from distill.results.store import OutputStore
from tests.helpers.fakes import RecordingExtractor

NOTE = (
    "CHIEF COMPLAINT: Shortness of breath.\n"
    "HISTORY OF PRESENT ILLNESS: The patient reports shortness of breath on exertion and ankle swelling.\n"
    "ASSESSMENT: Congestive heart failure with left ventricular dysfunction.\n"
)
CANARY = "sk-audit-canary-5c1e9d2b7a"


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    yield server
    server.stop()


@pytest.fixture
def note(tmp_path: Path) -> Path:
    path = tmp_path / "report_7.txt"
    path.write_text(NOTE, encoding="utf-8")
    return path


def _store(tmp_path: Path) -> OutputStore:
    store = OutputStore(tmp_path / "out")
    store.prepare()
    return store


def _llm(server: StubServer, *, cap: int = 20_000) -> LLMExtractor:
    endpoint = Endpoint("api_4", base_url=server.url, model="stub-model", api_key=Secret(CANARY),
                        provider="openai", max_attempts=2, answer_record_chars=cap)
    return LLMExtractor(endpoint, client=ChatClient(endpoint, sleep=lambda s: None, rng=random.Random(1)))


def test_every_call_of_a_done_report_keeps_its_answer_text(stub: StubServer, note: Path, tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert process_report(note, extractor=_llm(stub), store=store).status == "done"
    raw = read_json(store.raw_path(7))
    assert raw["teacher_id"] == f"openai/stub-model@{PROMPT_VERSION}"
    assert [c["step"] for c in raw["calls"]] == ["findings", "organs", "mapping"]
    for call in raw["calls"]:
        assert call["purpose"] == "answer" and call["answer"].startswith("{") and not call["answer_cut"]
        assert call["answer_chars"] == len(call["answer"]) and call["rejected"] == ""


def test_a_repaired_step_keeps_the_rejected_answer_and_the_repair(stub: StubServer, note: Path,
                                                                  tmp_path: Path) -> None:
    stub.fault_plan = lambda call: Fault("not_json") if call.n == 0 else Fault()
    store = _store(tmp_path)
    assert process_report(note, extractor=_llm(stub), store=store).status == "done"
    findings = [c for c in read_json(store.raw_path(7))["calls"] if c["step"] == "findings"]
    assert [c["purpose"] for c in findings] == ["answer", "repair"]
    assert "no JSON" in findings[0]["rejected"] and findings[0]["answer"] and "{" not in findings[0]["answer"][:1]
    assert findings[1]["rejected"] == "" and findings[1]["answer"].startswith('{"findings"')


def test_a_failure_record_keeps_every_rejected_answer(stub: StubServer, note: Path, tmp_path: Path) -> None:
    stub.fault_plan = lambda call: Fault("not_json")
    store = _store(tmp_path)
    assert process_report(note, extractor=_llm(stub), store=store).status == "failed"
    record = read_json(store.failed_path(7))
    assert record["teacher_id"] == f"openai/stub-model@{PROMPT_VERSION}"
    steps = [(c["step"], c["purpose"]) for c in record["calls"]]
    assert steps == [("findings", "answer"), ("findings", "repair"), ("combined", "answer"), ("combined", "repair")]
    assert all(c["answer"] and c["rejected"] for c in record["calls"])


def test_answers_are_masked_and_cut_at_the_configured_size(stub: StubServer, note: Path, tmp_path: Path) -> None:
    register_secrets([CANARY])
    stub.responder = lambda call: {"findings": [{"quote": "ankle swelling"}], "note": f"echo {CANARY} " + "x" * 400}
    result = _llm(stub, cap=120).run("findings", _step_input(note))
    call = result.calls[0]
    assert call.answer is not None and CANARY not in call.answer and KNOWN_MASK in call.answer
    assert call.answer_cut and call.answer_chars > 400 and call.answer.endswith("more characters]")
    assert len(call.answer) < 200


def _step_input(note: Path) -> StepInput:
    report = read_report(note)
    return StepInput(report, report.text)


def test_offline_steps_carry_no_audit_fields() -> None:
    record = CallRecord(step="findings", attempt=1, latency_s=0.001, status="ok").to_dict()
    assert not {"answer", "answer_chars", "answer_cut", "rejected", "purpose"} & set(record)


def _other_teacher() -> RecordingExtractor:
    extractor = RecordingExtractor()
    extractor.info = TeacherInfo(kind="llm", name="api_9", model="other-model", prompt_version="diag-prompts-2")
    return extractor


def test_a_checkpoint_is_reused_only_by_the_teacher_that_made_it(note: Path, tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(StopRequested):
        process_report(note, extractor=RecordingExtractor(fail_on={"mapping": (1, StopRequested("stop"))}),
                       store=store)
    saved = store.load_checkpoints(7)
    assert {data["teacher_id"] for data in saved.values()} == {"openai/fake-model"}
    other = _other_teacher()
    with pytest.raises(StopRequested):
        process_report(note, extractor=_failing(other), store=store)
    assert other.calls["findings"] == 1 and other.calls["organs"] == 1  # nothing of the first teacher reused
    same_as_other = _other_teacher()
    assert process_report(note, extractor=same_as_other, store=store).status == "done"
    assert same_as_other.calls["findings"] == 0 and same_as_other.calls["organs"] == 0
    assert same_as_other.calls["mapping"] == 1
    raw = read_json(store.raw_path(7))
    assert raw["teacher_id"] == "openai/other-model@diag-prompts-2"


def _failing(extractor: RecordingExtractor) -> RecordingExtractor:
    extractor.fail_on = {"mapping": (1, StopRequested("stop"))}
    return extractor


def test_a_resumed_report_keeps_the_log_of_every_attempt(note: Path, tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(StopRequested):
        process_report(note, extractor=RecordingExtractor(fail_on={"mapping": (1, StopRequested("stop"))}),
                       store=store)
    first = store.log_path(7).read_text(encoding="utf-8")
    assert "step findings: ok" in first  # on disk while the attempt runs, before any commit
    assert process_report(note, extractor=RecordingExtractor(), store=store).status == "done"
    log = store.log_path(7).read_text(encoding="utf-8")
    assert log.startswith(first)
    attempts = [line for line in log.splitlines() if "attempt by endpoint" in line]
    assert len(attempts) == 2 and all("teacher openai/fake-model, model fake-model" in a for a in attempts)
    assert "step findings: resumed from checkpoint" in log


def test_the_attempt_line_names_the_host_but_never_the_key_path_or_query(stub: StubServer, note: Path,
                                                                         tmp_path: Path) -> None:
    store = _store(tmp_path)
    process_report(note, extractor=_llm(stub), store=store)
    first = store.log_path(7).read_text(encoding="utf-8").splitlines()[0]
    assert f"endpoint api_4: teacher openai/stub-model@{PROMPT_VERSION}, model stub-model, host 127.0.0.1:{stub.port}" \
        in first
    assert stub.url.endswith("/v1") and "/v1" not in first and CANARY not in first




def test_a_key_shaped_string_in_an_answer_is_masked_too() -> None:
    call = CallRecord(step="findings", attempt=1, latency_s=0.1, status="ok")
    call.keep_answer('{"findings": [], "echo": "Authorization: Bearer abc123def456ghi789"}', 1000)
    assert call.answer is not None and "abc123def456ghi789" not in call.answer and "[redacted]" in call.answer
    plain = '{"findings": [{"quote": "ankle swelling"}]}'
    call.keep_answer(plain, 1000)
    assert call.answer == plain and call.answer_chars == len(plain) and not call.answer_cut
