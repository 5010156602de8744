from __future__ import annotations

import json
import random
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from distill.bench.stub_server import CallInfo, Fault, StubServer
from distill.core.config import Endpoint, Secret
from distill.core.errors import (
    EndpointAuthError,
    EndpointBadRequest,
    EndpointError,
    EndpointRateLimited,
    EndpointUnavailable,
    StopRequested,
)
from distill.extraction.chat_request import RequestTemplate
from distill.extraction.extractor import CallRecord
from distill.extraction.http_client import BACKOFF_BASE_S, ChatClient, backoff_delay, parse_retry_after

CANARY = "sk-canary-3f9a1c7e5b"
MESSAGES = [
    {"role": "system", "content": "[diag-distill step: findings]\nrules"},
    {"role": "user", "content": "[report: 5]\n<<<NOTE\nThe patient reports chest pain.\nNOTE>>>"},
]


class FakeTime:
    """A clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _plan(*faults: Fault) -> Any:
    """Faults for the first calls, then ok."""

    def plan(call: CallInfo) -> Fault:
        return faults[call.n] if call.n < len(faults) else Fault()

    return plan


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer(require_key=CANARY).start()
    yield server
    server.stop()


def _client(server: StubServer, fake: FakeTime, *, events: list[tuple[str, dict[str, Any]]] | None = None,
            key: str = CANARY, **endpoint: Any) -> ChatClient:
    settings: dict[str, Any] = {"timeout_s": 5.0, "max_attempts": 4, **endpoint}
    ep = Endpoint("api_3", base_url=server.url, model="stub-model", api_key=Secret(key), provider="openai",
                  **settings)
    sink = (lambda name, details: events.append((name, details))) if events is not None else None
    return ChatClient(ep, sleep=fake.sleep, clock=fake.clock, rng=random.Random(7),
                      **({"events": sink} if sink else {}))


def test_ok_reply_carries_text_usage_and_one_record(stub: StubServer, fake: FakeTime) -> None:
    calls: list[CallRecord] = []
    reply = _client(stub, fake).chat(MESSAGES, step="findings", calls=calls)
    assert '"findings"' in reply.text and reply.finish_reason == "stop" and reply.http_status == 200
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert [(c.step, c.attempt, c.status, c.prompt_tokens) for c in calls] == [
        ("findings", 1, "ok", reply.prompt_tokens)]
    assert fake.sleeps == []


def test_retry_after_seconds_is_honoured(stub: StubServer, fake: FakeTime) -> None:
    stub.fault_plan = _plan(Fault("429", retry_after=7))
    events: list[tuple[str, dict[str, Any]]] = []
    calls: list[CallRecord] = []
    _client(stub, fake, events=events).chat(MESSAGES, step="findings", calls=calls)
    assert sum(fake.sleeps) == pytest.approx(7.0)
    assert [c.status for c in calls] == ["api_rate_limited", "ok"]
    assert [name for name, _ in events] == ["backing_off"]
    assert events[0][1]["attempt"] == 1 and "rate limited" in events[0][1]["reason"]


def test_retry_after_ms_is_honoured(stub: StubServer, fake: FakeTime) -> None:
    stub.fault_plan = _plan(Fault("429", retry_after_ms=1500))
    _client(stub, fake).chat(MESSAGES, step="findings", calls=[])
    assert sum(fake.sleeps) == pytest.approx(1.5)


def test_rate_limit_wait_also_delays_the_next_chat_on_the_same_client(stub: StubServer, fake: FakeTime) -> None:
    stub.fault_plan = _plan(Fault("429", retry_after=4), Fault("429", retry_after=4))
    client = _client(stub, fake, max_attempts=2)
    with pytest.raises(EndpointRateLimited):
        client.chat(MESSAGES, step="findings", calls=[])
    assert sum(fake.sleeps) == pytest.approx(4.0)  # no sleep after the final attempt ...
    client.chat(MESSAGES, step="findings", calls=[])
    assert sum(fake.sleeps) == pytest.approx(8.0)  # ... but the next call still waits out the server's request


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after": "12"}, 12.0, id="seconds"),
        pytest.param({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0, id="http-date"),
        pytest.param({"retry-after-ms": "250", "retry-after": "9"}, 0.25, id="ms-wins"),
        pytest.param({"retry-after": "soon"}, None, id="garbage"),
        pytest.param({}, None, id="absent"),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = 1445412480.0  # 07:28:00 GMT that day
    assert parse_retry_after(headers, now=now) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault("500"), id="500"),
        pytest.param(Fault("502"), id="502"),
        pytest.param(Fault("503"), id="503"),
        pytest.param(Fault("reset"), id="connection-reset"),
        pytest.param(Fault("bad_body"), id="malformed-body"),
    ],
)
def test_retryable_failure_then_ok(stub: StubServer, fake: FakeTime, fault: Fault) -> None:
    stub.fault_plan = _plan(fault)
    calls: list[CallRecord] = []
    reply = _client(stub, fake).chat(MESSAGES, step="findings", calls=calls)
    assert reply.http_status == 200
    assert [c.status for c in calls] == ["api_unavailable", "ok"]
    assert calls[0].error and len(fake.sleeps) >= 1
    assert sum(fake.sleeps) <= BACKOFF_BASE_S


def test_timeout_is_retried(stub: StubServer, fake: FakeTime) -> None:
    stub.fault_plan = _plan(Fault("hang", delay_s=30))
    calls: list[CallRecord] = []
    _client(stub, fake, timeout_s=0.3).chat(MESSAGES, step="findings", calls=calls)
    assert [c.status for c in calls] == ["api_unavailable", "ok"]
    assert "timeout" in calls[0].error


def test_malformed_body_exhausting_attempts_says_so(stub: StubServer, fake: FakeTime) -> None:
    stub.fault_plan = lambda call: Fault("bad_body")
    with pytest.raises(EndpointUnavailable, match="malformed response body"):
        _client(stub, fake, max_attempts=2).chat(MESSAGES, step="findings", calls=[])


def test_401_raises_auth_error_without_retry(stub: StubServer, fake: FakeTime) -> None:
    calls: list[CallRecord] = []
    with pytest.raises(EndpointAuthError) as caught:
        _client(stub, fake, key="sk-wrong").chat(MESSAGES, step="findings", calls=calls)
    assert caught.value.status == 401 and caught.value.endpoint == "api_3"
    assert "check DIAG_API_3_KEY (or DIAG_API_KEY)" in str(caught.value)
    assert [c.status for c in calls] == ["api_auth"]
    assert stub.total == 1 and fake.sleeps == []


def test_other_4xx_raises_bad_request_without_retry(stub: StubServer, fake: FakeTime) -> None:
    stub.fault_plan = _plan(Fault("400"))
    calls: list[CallRecord] = []
    with pytest.raises(EndpointBadRequest, match="invalid request"):
        _client(stub, fake).chat(MESSAGES, step="findings", calls=calls)
    assert [c.status for c in calls] == ["api_bad_request"] and stub.total == 1


def test_unknown_path_is_a_bad_request(fake: FakeTime) -> None:
    with StubServer() as server:
        ep = Endpoint("api_1", base_url=server.url + "/missing", model="m", api_key=Secret("k"), provider="openai")
        with pytest.raises(EndpointBadRequest, match="HTTP 404"):
            ChatClient(ep, sleep=fake.sleep, clock=fake.clock).chat(MESSAGES, step="findings", calls=[])


def test_endpoint_refusing_json_mode_is_asked_again_without_it(stub: StubServer, fake: FakeTime) -> None:
    asked: list[tuple[str, bool]] = []
    stub.fault_plan = lambda call: (asked.append((call.response_format, call.schema)), Fault("no_json_mode"))[1]
    events: list[tuple[str, dict[str, Any]]] = []
    calls: list[CallRecord] = []
    client = _client(stub, fake, max_attempts=1, events=events)
    client.chat(MESSAGES, step="findings", calls=calls)
    client.chat(MESSAGES, step="findings", calls=calls)
    # json_object with the schema, then without it, then no response_format, which it keeps.
    assert asked == [("json_object", True), ("json_object", False), ("", False), ("", False)]
    assert [c.status for c in calls] == ["api_bad_request", "api_bad_request", "ok", "ok"]
    assert [(d["from"], d["to"]) for n, d in events if n == "response_format_down"] == [
        ("json_object", "json_object without a schema"), ("json_object", "none")]
    assert client.form == "none"


def test_a_refused_json_schema_falls_back_one_form_and_answers(stub: StubServer, fake: FakeTime) -> None:
    asked: list[str] = []
    stub.fault_plan = lambda call: (asked.append(call.response_format), Fault("no_json_schema"))[1]
    events: list[tuple[str, dict[str, Any]]] = []
    calls: list[CallRecord] = []
    client = _client(stub, fake, max_attempts=1, events=events, response_format="json_schema")
    reply = client.chat(MESSAGES, step="findings", calls=calls)
    client.chat(MESSAGES, step="findings", calls=calls)
    assert '"findings"' in reply.text and asked == ["json_schema", "json_object", "json_object"]
    assert [n for n, _ in events] == ["response_format_down"] and client.form == "json_object"
    assert fake.sleeps == []  # a refusal of the form is not an outage: no backoff


def test_json_schema_requests_carry_the_steps_schema(fake: FakeTime) -> None:
    bodies: list[dict[str, Any]] = []
    with StubServer(fault_plan=lambda call: Fault()) as server:
        ep = Endpoint("api_2", base_url=server.url, model="m", api_key=Secret("k"), provider="openai",
                      response_format="json_schema")
        client = ChatClient(ep, sleep=fake.sleep, clock=fake.clock)
        bodies.append(client._payload(MESSAGES, "mapping", 100))
        client.chat(MESSAGES, step="findings", calls=[])
    form = bodies[0]["response_format"]
    assert form["type"] == "json_schema" and form["json_schema"]["name"] == "mapping_output"
    assert "mappings" in form["json_schema"]["schema"]["properties"] and bodies[0]["max_tokens"] == 100


@pytest.mark.parametrize(("setting", "json_mode", "sent"), [("none", True, ""), ("", False, ""),
                                                            ("json_object", False, "json_object")])
def test_the_form_setting_wins_over_json_mode(fake: FakeTime, setting: str, json_mode: bool, sent: str) -> None:
    seen: list[CallInfo] = []
    with StubServer(fault_plan=lambda call: (seen.append(call), Fault())[1]) as server:
        ep = Endpoint("api_2", base_url=server.url, model="m", api_key=Secret("k"), provider="openai",
                      response_format=setting, json_mode=json_mode)
        ChatClient(ep, sleep=fake.sleep, clock=fake.clock).chat(MESSAGES, step="findings", calls=[])
    assert seen[0].response_format == sent


def test_length_finish_reason_is_returned_not_retried(stub: StubServer, fake: FakeTime) -> None:
    stub.fault_plan = _plan(Fault("length"))
    calls: list[CallRecord] = []
    reply = _client(stub, fake).chat(MESSAGES, step="findings", calls=calls)
    assert reply.finish_reason == "length" and len(calls) == 1


def test_backoff_is_bounded_by_max_attempts_with_jitter_in_bounds(stub: StubServer, fake: FakeTime) -> None:
    stub.fault_plan = lambda call: Fault("503")
    events: list[tuple[str, dict[str, Any]]] = []
    calls: list[CallRecord] = []
    with pytest.raises(EndpointUnavailable) as caught:
        _client(stub, fake, max_attempts=5, events=events).chat(MESSAGES, step="findings", calls=calls)
    assert not isinstance(caught.value, EndpointRateLimited)
    assert stub.total == 5 and len(calls) == 5
    assert [d["attempt"] for _, d in events] == [1, 2, 3, 4]  # no wait after the last attempt
    assert 0 < sum(fake.sleeps) <= 1 + 2 + 4 + 8  # full jitter under base * 2**(attempt-1)
    assert "5 attempt(s)" in str(caught.value) and "HTTP 503" in str(caught.value)


@pytest.mark.parametrize("attempt", [1, 2, 3, 6, 7, 40])
def test_backoff_delay_is_full_jitter_under_exponential_cap(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(60.0, 2 ** (attempt - 1))
    delays = [backoff_delay(attempt, rng) for _ in range(200)]
    assert all(0.0 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling / 2  # jitter spreads over the whole range


def test_rate_limit_outlasting_attempts_raises_rate_limited(stub: StubServer, fake: FakeTime) -> None:
    stub.fault_plan = lambda call: Fault("429", retry_after=1)
    with pytest.raises(EndpointRateLimited):
        _client(stub, fake, max_attempts=3).chat(MESSAGES, step="findings", calls=[])
    assert stub.total == 3


def test_stop_request_interrupts_backoff(stub: StubServer, fake: FakeTime) -> None:
    stub.fault_plan = lambda call: Fault("429", retry_after=600)
    ep = Endpoint("api_3", base_url=stub.url, model="m", api_key=Secret(CANARY), provider="openai")
    client = ChatClient(ep, sleep=fake.sleep, clock=fake.clock, should_stop=lambda: len(fake.sleeps) >= 3)
    with pytest.raises(StopRequested):
        client.chat(MESSAGES, step="findings", calls=[])
    assert sum(fake.sleeps) < 600 and max(fake.sleeps) <= 1.0


@pytest.mark.parametrize("json_mode", [True, False])
def test_request_carries_model_key_and_json_mode(fake: FakeTime, json_mode: bool) -> None:
    bodies: list[CallInfo] = []
    with StubServer(fault_plan=lambda call: (bodies.append(call), Fault())[1]) as server:
        ep = Endpoint("api_2", base_url=server.url, model="teacher-x", api_key=Secret("k"), provider="openai",
                      json_mode=json_mode)
        ChatClient(ep, sleep=fake.sleep, clock=fake.clock).chat(MESSAGES, step="findings", calls=[])
    assert bodies[0].model == "teacher-x" and bodies[0].api_key == "k"
    assert bodies[0].json_mode is json_mode


@pytest.mark.parametrize(
    ("fault", "key", "error"),
    [
        pytest.param(Fault("503"), CANARY, EndpointUnavailable, id="unavailable"),
        pytest.param(Fault("reset"), CANARY, EndpointUnavailable, id="reset"),
        pytest.param(Fault("hang", delay_s=30), CANARY, EndpointUnavailable, id="timeout"),
        pytest.param(Fault("429", retry_after=0), CANARY, EndpointRateLimited, id="rate-limited"),
        pytest.param(Fault(), CANARY + "-wrong", EndpointAuthError, id="auth"),
    ],
)
def test_canary_key_never_appears_in_errors_or_records(fake: FakeTime, fault: Fault, key: str,
                                                       error: type[EndpointError]) -> None:
    # The server echoes the key in its error text: the client must scrub it.
    with StubServer(fault_plan=lambda call: fault, require_key=CANARY) as server:
        calls: list[CallRecord] = []
        client = _client(server, fake, key=key, max_attempts=2, timeout_s=0.3)
        with pytest.raises(error) as caught:
            client.chat(MESSAGES, step="findings", calls=calls)
    exc: BaseException | None = caught.value
    texts = [repr(client), repr(calls), str(caught.value.args), "".join(traceback.format_exception(caught.value))]
    while exc is not None:
        texts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    assert calls
    for text in texts:
        assert CANARY not in text


def test_the_environments_proxy_and_ca_bundle_apply_once_per_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/bundle.pem")
    ep = Endpoint("api_3", base_url="http://model.invalid/v1", model="m", api_key=Secret(CANARY), provider="openai")
    session = ChatClient(ep)._session
    assert session.proxies.get("http") == "http://proxy.invalid:3128"
    assert session.verify == "/etc/ssl/bundle.pem"
    assert session.trust_env is False  # not read again on every call


def test_no_proxy_keeps_a_loopback_endpoint_off_the_proxy(monkeypatch: pytest.MonkeyPatch, stub: StubServer,
                                                          fake: FakeTime) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    client = _client(stub, fake)
    assert "http" not in client._session.proxies
    assert client.chat(MESSAGES, step="findings", calls=[]).http_status == 200


def test_a_request_from_the_template_carries_the_defaults_its_headers_and_its_exact_body() -> None:
    session = requests.Session()
    template = RequestTemplate(session, "http://127.0.0.1:9/v1/chat/completions")
    payload = {"model": "m", "messages": [{"role": "user", "content": "Pleural effusion, 左肺"}]}
    first = template.request(payload, {"Authorization": "Bearer a", "Content-Type": "application/json"})
    second = template.request({"model": "n"}, {"Authorization": "Bearer b"})
    assert first.method == "POST" and first.url == "http://127.0.0.1:9/v1/chat/completions"
    assert json.loads(first.body) == payload and first.headers["Content-Length"] == str(len(first.body))
    assert first.headers["authorization"] == "Bearer a" and first.headers["User-Agent"] == session.headers["User-Agent"]
    assert second.headers["Authorization"] == "Bearer b" and "Content-Type" not in second.headers  # nothing carried over


def test_a_key_requests_would_refuse_in_a_header_is_a_failed_call_that_names_no_key(stub: StubServer,
                                                                                  fake: FakeTime) -> None:
    key = "sk-broken\nkey-7c1d"
    client = _client(stub, fake, key=key, max_attempts=1)
    calls: list[CallRecord] = []
    with pytest.raises(EndpointError) as raised:
        client.chat(MESSAGES, step="findings", calls=calls)
    assert calls and calls[0].status != "ok" and stub.total == 0  # refused before anything was sent
    assert "sk-broken" not in str(raised.value) and all("sk-broken" not in str(c.error) for c in calls)
