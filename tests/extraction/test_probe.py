"""The health probe: one minimal chat completion against a loopback stub."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from distill.bench.stub_server import CallInfo, Fault, StubServer
from distill.core.config import Endpoint, Secret
from distill.core.errors import EndpointAuthError
from distill.extraction.http_client import ChatClient

KEY = "sk-probe-canary-77e1"


def endpoint(url: str, **changes: Any) -> Endpoint:
    fields: dict[str, Any] = {"timeout_s": 2.0, **changes}
    return Endpoint(name="api_4", base_url=url, model="stub-model", api_key=Secret(KEY), provider="openai", **fields)


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(require_key=KEY) as server:
        yield server


def test_a_probe_of_a_serving_endpoint_is_one_call_asking_for_one_token(stub: StubServer) -> None:
    seen: list[CallInfo] = []

    def plan(call: CallInfo) -> Fault:
        seen.append(call)
        return Fault()

    stub.fault_plan = plan
    client = ChatClient(endpoint(stub.url))
    assert client.probe() == ""
    assert stub.total == 1 and len(seen) == 1
    assert stub.stats()["probes"] == 1 and stub.stats()["by_report_step"] == {}  # not counted as a report's call
    assert stub.stats()["answered_by_report_step"] == {}
    assert seen[0].report is None and not seen[0].json_mode  # no report text, no JSON mode: cheap


def test_the_probe_body_asks_for_max_tokens_one(stub: StubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    client = ChatClient(endpoint(stub.url))
    sent: list[dict[str, Any]] = []
    real_post = client._session.post

    def spy(url: str, **kwargs: Any) -> Any:
        sent.append(json.loads(kwargs["data"]))
        return real_post(url, **kwargs)

    monkeypatch.setattr(client._session, "post", spy)
    assert client.probe() == ""
    assert sent[0]["max_tokens"] == 1 and "response_format" not in sent[0]


@pytest.mark.parametrize(("how", "says"), [
    ("refuse", "probe: connection failed"),
    ("503", "probe: HTTP 503"),
    ("500", "probe: HTTP 500"),
    ("reset", "probe: connection failed"),
    ("bad_body", "probe: malformed response body"),
])
def test_a_probe_of_a_dead_endpoint_says_why_in_one_line_and_a_returned_one_is_up(stub: StubServer, how: str,
                                                                                 says: str) -> None:
    client = ChatClient(endpoint(stub.url))
    stub.go_down(how)
    reason = client.probe()
    assert reason.startswith(says) and "\n" not in reason and KEY not in reason
    stub.come_back()
    assert client.probe() == ""
    assert stub.back_at is not None


def test_a_probe_that_gets_no_answer_in_time_is_a_timeout(stub: StubServer) -> None:
    stub.go_down("hang")
    try:
        assert ChatClient(endpoint(stub.url, timeout_s=0.3)).probe() == "probe: no answer within 0.3 s (timeout)"
    finally:
        stub.come_back()


def test_a_probe_with_a_refused_key_raises_the_auth_error_without_the_key(stub: StubServer) -> None:
    wrong = Endpoint(name="api_4", base_url=stub.url, model="m", api_key=Secret("sk-wrong-key-0001"),
                     provider="openai")
    with pytest.raises(EndpointAuthError) as caught:
        ChatClient(wrong).probe()
    assert "sk-wrong-key-0001" not in str(caught.value) and "DIAG_API_4_KEY" in str(caught.value)


def test_a_probe_refused_for_its_form_only_counts_as_up(stub: StubServer) -> None:
    stub.fault_plan = lambda call: Fault("400")
    assert ChatClient(endpoint(stub.url)).probe() == ""
