"""A request longer than the endpoint's context window is fitted (a smaller max_tokens, or the note in
smaller parts) instead of failing as api_bad_request; a report that cannot fit fails as too_long."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from distill.bench.stub_server import CallInfo, Fault, StubServer
from distill.core.config import Endpoint, Secret
from distill.core.errors import NoteTooLong
from distill.extraction.extractor import StepInput
from distill.extraction.http_client import ChatClient
from distill.extraction.llm import LLMExtractor
from distill.extraction.pipeline import process_report
from distill.extraction.schemas import FindingsOutput
from distill.results.atomic import read_json
from distill.results.store import OutputStore

SHORT = "The patient reports chest pain and shortness of breath. No fever. Exam shows a systolic murmur."
PARAGRAPH = ("The patient reports intermittent chest pain radiating to the left arm, worse on exertion. "
             "Exam shows a systolic murmur at the apex and mild ankle swelling bilaterally.")
LONG = "\n\n".join(f"{i}. {PARAGRAPH}" for i in range(120))  # about 20,000 characters


@pytest.fixture
def seen() -> list[CallInfo]:
    return []


@pytest.fixture
def stub(seen: list[CallInfo]) -> Iterator[StubServer]:
    server = StubServer(context_tokens=3000, fault_plan=lambda call: (seen.append(call), Fault())[1]).start()
    yield server
    server.stop()


def _extractor(server: StubServer, **settings: Any) -> LLMExtractor:
    endpoint = Endpoint("api_6", base_url=server.url, model="stub-model", api_key=Secret("k"), provider="openai",
                        max_attempts=2, **settings)
    return LLMExtractor(endpoint, client=ChatClient(endpoint, sleep=lambda s: None, rng=random.Random(1)))


def _input(text: str) -> StepInput:
    return StepInput(report=SimpleNamespace(number=31, text=text), text=text)  # type: ignore[arg-type]


@pytest.mark.parametrize("style", ["openai", "vllm", "bare"])
def test_a_refused_max_tokens_is_fitted_to_the_window(stub: StubServer, seen: list[CallInfo], style: str) -> None:
    stub.context_style = style
    result = _extractor(stub).run("findings", _input(SHORT))
    assert isinstance(result.output, FindingsOutput) and result.output.findings
    assert [c.status for c in result.calls][-1] == "ok" and "api_bad_request" not in [c.status for c in result.calls]
    assert result.calls[0].status == "too_long" and stub.refused_context >= 1
    assert seen[-1].max_tokens < 4096  # the answer budget was cut, the note was not


@pytest.mark.parametrize("style", ["llamacpp", "openai"])
def test_a_note_longer_than_the_window_is_asked_in_smaller_parts(stub: StubServer, seen: list[CallInfo],
                                                                  style: str) -> None:
    stub.context_style = style
    extractor = _extractor(stub)
    result = extractor.run("findings", _input(LONG))
    assert isinstance(result.output, FindingsOutput) and result.output.findings
    assert all(f.quote in LONG for f in result.output.findings)
    assert stub.refused_context <= 2  # learnt from the server's numbers, then fitted before sending
    assert len(seen) > 1 and all(0 < len(c.note) <= 6000 for c in seen)  # the calls answered read parts
    # The endpoint's later reports start at the fitted size: no refusal is paid again.
    refused = stub.refused_context
    extractor.run("findings", _input(LONG.replace("1.", "one.")))
    assert stub.refused_context == refused


def test_a_configured_window_is_fitted_before_any_call(stub: StubServer, seen: list[CallInfo]) -> None:
    result = _extractor(stub, context_tokens=3000).run("findings", _input(LONG))
    assert isinstance(result.output, FindingsOutput)
    assert stub.refused_context == 0 and all(c.status == "ok" for c in result.calls)
    assert all(c.max_tokens <= 3000 for c in seen)


def test_a_report_that_cannot_fit_fails_as_too_long_naming_the_window(stub: StubServer) -> None:
    stub.context_tokens = 900  # smaller than the instructions alone
    with pytest.raises(NoteTooLong, match="context window of 900 tokens") as caught:
        _extractor(stub).run("findings", _input(SHORT))
    assert caught.value.failure_class == "too_long"
    assert stub.total == 1  # one refusal taught the window; no call was sent that could not fit


def test_the_pipeline_finishes_a_long_note_on_a_small_window(stub: StubServer, tmp_path: Path) -> None:
    note = tmp_path / "report_31.txt"
    note.write_text("HISTORY OF PRESENT ILLNESS:\n" + LONG + "\n\nASSESSMENT: Aortic stenosis.\n", encoding="utf-8")
    store = OutputStore(tmp_path / "out")
    store.prepare()
    stub.context_style = "llamacpp"
    outcome = process_report(note, extractor=_extractor(stub), store=store)
    assert outcome.status == "done", outcome.message
    assert read_json(store.raw_path(31))["normalized"]
    # The findings of a long note do not fit one mapping request on this window: they are mapped in groups.
    assert stub.by_report_step[(31, "mapping")] > 1


def test_the_pipeline_records_too_long_not_api_bad_request(stub: StubServer, tmp_path: Path) -> None:
    note = tmp_path / "report_32.txt"
    note.write_text(SHORT, encoding="utf-8")
    store = OutputStore(tmp_path / "out")
    store.prepare()
    stub.context_tokens = 900
    outcome = process_report(note, extractor=_extractor(stub), store=store)
    assert (outcome.status, outcome.error_class) == ("failed", "too_long")
    record = read_json(store.failed_path(32))
    assert record["error_class"] == "too_long" and "900 tokens" in record["message"]
