from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from distill.bench.stub_server import STUB_ORGAN, CallInfo, Fault, StubServer, default_answer, parse_call
from distill.extraction.extractor import StepInput
from distill.extraction.schemas import STEP_MODELS, FindingsOutput, OrgansOutput

NOTE = "The patient reports chest pain and shortness of breath.\nNo fever. Exam shows a systolic murmur."


def _messages(step: str, report: int, note: str = NOTE, extra: str = "") -> list[dict[str, str]]:
    user = f"[report: {report}]\n{extra}<<<NOTE\n{note}\nNOTE>>>\nAnswer with the JSON object only."
    return [{"role": "system", "content": f"[diag-distill step: {step}]\nrules"}, {"role": "user", "content": user}]


def _post(server: StubServer, messages: list[dict[str, str]], key: str = "k", model: str = "m") -> requests.Response:
    return requests.post(f"{server.url}/chat/completions", json={"model": model, "messages": messages},
                         headers={"Authorization": f"Bearer {key}"}, timeout=5)


def _wait_until(condition: Callable[[], bool], limit_s: float = 10.0) -> bool:
    """Whether ``condition`` holds within ``limit_s`` (checked every 10 ms)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _content(response: requests.Response) -> tuple[str, str]:
    choice = response.json()["choices"][0]
    return choice["message"]["content"], choice["finish_reason"]


def test_parse_call_reads_every_marker() -> None:
    findings = json.dumps({"findings": [{"quote": "chest pain"}]})
    extra = f"<<<FINDINGS\n{findings}\nFINDINGS>>>\n<<<DIAGNOSES\n{{}}\nDIAGNOSES>>>\n"
    call = parse_call({"model": "m1", "messages": _messages("mapping", 42, extra=extra)}, 3, "key")
    assert (call.step, call.report, call.n, call.model, call.api_key) == ("mapping", 42, 3, "m1", "key")
    assert call.note == NOTE
    assert json.loads(call.findings_json) == {"findings": [{"quote": "chest pain"}]}
    assert call.diagnoses_json == "{}"


def test_parse_call_reads_markers_written_by_the_prompt_builder() -> None:
    from distill.extraction.prompts import build_messages

    data = StepInput(report=SimpleNamespace(number=10001), text=NOTE)  # type: ignore[arg-type]
    call = parse_call({"model": "m", "messages": build_messages("findings", data)}, 0, "")
    assert (call.step, call.report, call.note) == ("findings", 10001, NOTE)


@pytest.mark.parametrize("step", ["findings", "organs", "combined"])
def test_default_answers_are_valid_and_grounded(step: str) -> None:
    with StubServer() as server:
        text, finish = _content(_post(server, _messages(step, 1)))
    output = STEP_MODELS[step].model_validate(json.loads(text))
    assert finish == "stop"
    for finding in getattr(output, "findings", []):
        assert finding.quote in NOTE
    for diagnosis in getattr(output, "diagnoses", []):
        assert diagnosis.organ == STUB_ORGAN and diagnosis.quote in NOTE


def test_default_mapping_maps_each_given_finding_to_the_stub_organ() -> None:
    extra = '<<<FINDINGS\n{"findings": [{"quote": "chest pain"}, {"quote": "murmur"}]}\nFINDINGS>>>\n'
    with StubServer() as server:
        text, _ = _content(_post(server, _messages("mapping", 1, extra=extra)))
    mappings = json.loads(text)["mappings"]
    assert [(m["finding"], m["organ"], m["locations"]) for m in mappings] == [
        ("chest pain", STUB_ORGAN, []), ("murmur", STUB_ORGAN, [])]


def test_counts_calls_per_report_step_and_model() -> None:
    with StubServer() as server:
        for report, step in [(1, "findings"), (1, "findings"), (2, "organs")]:
            _post(server, _messages(step, report), model=f"model-{report}")
        stats = server.stats()
    assert stats["total"] == 3
    assert stats["by_report_step"] == {"1/findings": 2, "2/organs": 1}
    assert stats["by_model"] == {"model-1": 2, "model-2": 1}
    assert stats["faults"] == {"ok": 3}


def test_responder_replaces_the_default_answer() -> None:
    seen: list[CallInfo] = []

    def responder(call: CallInfo) -> dict[str, Any]:
        seen.append(call)
        return {"findings": [{"quote": "custom"}]}

    with StubServer(responder=responder) as server:
        text, _ = _content(_post(server, _messages("findings", 9)))
    assert json.loads(text) == {"findings": [{"quote": "custom"}]}
    assert seen[0].report == 9


def test_require_key_answers_401_to_a_wrong_key() -> None:
    with StubServer(require_key="right") as server:
        assert _post(server, _messages("findings", 1), key="wrong").status_code == 401
        assert _post(server, _messages("findings", 1), key="right").status_code == 200


@pytest.mark.parametrize("kind", ["500", "502", "503"])
def test_server_error_faults(kind: str) -> None:
    with StubServer(fault_plan=lambda call: Fault(kind)) as server:
        assert _post(server, _messages("findings", 1)).status_code == int(kind)
        assert server.faults[kind] == 1


def test_429_fault_sends_retry_after_headers() -> None:
    with StubServer(fault_plan=lambda call: Fault("429", retry_after=7, retry_after_ms=1500)) as server:
        response = _post(server, _messages("findings", 1))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.headers["retry-after-ms"] == "1500"


def test_reset_fault_closes_without_reply() -> None:
    with StubServer(fault_plan=lambda call: Fault("reset")) as server, pytest.raises(requests.ConnectionError):
        _post(server, _messages("findings", 1))


def test_hang_fault_outlasts_client_timeout_and_ends_when_server_stops() -> None:
    server = StubServer(fault_plan=lambda call: Fault("hang", delay_s=60)).start()
    try:
        with pytest.raises(requests.Timeout):
            requests.post(f"{server.url}/chat/completions", json={"messages": _messages("findings", 1)}, timeout=0.3)
        assert _wait_until(lambda: server.active == 1)  # the client gave up; the call still hangs on the server
    finally:
        server.stop()
    assert server.faults["hang"] == 1
    # The hang lasts 60 s unless stopping ends it: it must be over well before that.
    assert _wait_until(lambda: server.active == 0)


def test_bad_body_fault_is_not_json() -> None:
    with StubServer(fault_plan=lambda call: Fault("bad_body")) as server:
        response = _post(server, _messages("findings", 1))
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_not_json_fault_answers_prose() -> None:
    with StubServer(fault_plan=lambda call: Fault("not_json")) as server:
        text, _ = _content(_post(server, _messages("findings", 1)))
    assert "{" not in text


def test_length_fault_cuts_the_json() -> None:
    with StubServer(fault_plan=lambda call: Fault("length")) as server:
        text, finish = _content(_post(server, _messages("findings", 1)))
    assert finish == "length"
    with pytest.raises(ValueError):
        json.loads(text)


def test_bad_schema_fault_is_json_of_the_wrong_shape() -> None:
    with StubServer(fault_plan=lambda call: Fault("bad_schema")) as server:
        text, _ = _content(_post(server, _messages("findings", 1)))
    with pytest.raises(ValueError):
        FindingsOutput.model_validate(json.loads(text))


@pytest.mark.parametrize("step", ["findings", "organs"])
def test_ungrounded_fault_quotes_text_not_in_the_note(step: str) -> None:
    with StubServer(fault_plan=lambda call: Fault("ungrounded")) as server:
        text, _ = _content(_post(server, _messages(step, 1)))
    output = STEP_MODELS[step].model_validate(json.loads(text))
    items = output.findings if isinstance(output, FindingsOutput) else output.diagnoses  # type: ignore[attr-defined]
    assert items and all(item.quote not in NOTE for item in items)
    assert isinstance(output, (FindingsOutput, OrgansOutput))


def test_latency_fault_and_plan_see_call_index() -> None:
    indexes: list[int] = []

    def plan(call: CallInfo) -> Fault:
        indexes.append(call.n)
        return Fault("latency", delay_s=0.01)

    with StubServer(fault_plan=plan) as server:
        for _ in range(3):
            started = time.monotonic()
            assert _post(server, _messages("findings", 1)).status_code == 200
            assert time.monotonic() - started >= 0.01  # the injected latency was waited out
    assert indexes == [0, 1, 2]


def test_record_timeline_keeps_each_call_and_serves_it() -> None:
    with StubServer(record_timeline=True) as server:
        for model, report in (("m1", 7), ("m2", 8)):
            assert _post(server, _messages("findings", report), model=model).status_code == 200
        # A client has its answer a moment before the server has finished the call and recorded it.
        assert _wait_until(lambda: server.active == 0)
        served = requests.get(server.url.rsplit("/v1", 1)[0] + "/timeline", timeout=5).json()["calls"]
    assert sorted(row[:3] for row in served) == [["m1", 7, "findings"], ["m2", 8, "findings"]]
    assert all(len(row) == 5 and row[3] <= row[4] for row in served)
    assert served == server.timeline_rows()


def test_unknown_fault_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")


def test_stop_closes_idle_keep_alive_connections() -> None:
    server = StubServer().start()
    session = requests.Session()
    session.post(f"{server.url}/chat/completions", json={"messages": _messages("findings", 1)}, timeout=5)
    server.stop()
    with pytest.raises((requests.ConnectionError, socket.error)):
        session.post(f"{server.url}/chat/completions", json={"messages": _messages("findings", 1)}, timeout=2)
    session.close()


DEV_NOTES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mtsamples_dev"


def test_default_answers_are_grounded_in_real_notes() -> None:
    if not DEV_NOTES.is_dir():
        pytest.skip(f"dev notes not found at {DEV_NOTES}")
    paths = sorted(DEV_NOTES.glob("report_*.txt"))[:60]
    for path in paths:
        note = path.read_text(encoding="utf-8", errors="replace")
        call = CallInfo(step="combined", report=1, note=note, n=0, model="m", api_key="")
        output = STEP_MODELS["combined"].model_validate(default_answer(call))
        quotes = [f.quote for f in output.findings] + [d.quote for d in output.diagnoses]  # type: ignore[attr-defined]
        assert all(q and q in note for q in quotes), path.name


def test_the_stub_command_documents_its_options() -> None:
    from click.testing import CliRunner

    from distill.cli.main import cli

    result = CliRunner().invoke(cli, ["stub", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--latency-ms", "--timeline"):
        assert option in result.output


@pytest.mark.parametrize("module", ["distill.stub_server", "distill.bench.stub_server"])
def test_the_module_alias_serves_completions_and_stops_on_sigterm(module: str) -> None:
    import signal
    import subprocess
    import sys


    proc = subprocess.Popen([sys.executable, "-m", module, "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        url = banner.split("stub server at ", 1)[1].split(" ", 1)[0]
        assert url.startswith("http://127.0.0.1:")
        body = {"model": "m", "messages": [{"role": "user", "content": "[diag-distill step: findings]\n[report: 1]\nx"}]}
        answer = requests.post(f"{url}/chat/completions", json=body, timeout=10)
        assert answer.status_code == 200 and answer.json()["object"] == "chat.completion"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "stopped after 1 call(s)" in out
