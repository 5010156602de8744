"""The one module that talks HTTP: chat completions against one endpoint.

``ChatClient.chat`` sends one OpenAI-compatible ``POST {base_url}/chat/completions``
over a keep-alive ``requests.Session`` and retries on its own (urllib3's
``Retry`` leaves POST alone):

- 401/403 raise ``EndpointAuthError`` at once;
- 429 waits as long as ``Retry-After`` / ``retry-after-ms`` asks, then retries;
  the wait belongs to this client (one endpoint), other endpoints keep going;
- 5xx, timeouts, connection errors and a 200 whose body is not a chat
  completion ("malformed response body") back off exponentially with full
  jitter (base 1 s, cap 60 s; the endpoint's ``backoff_base`` / ``backoff_cap``);
- after ``endpoint.max_attempts`` attempts: ``EndpointRateLimited`` when the
  last failure was a 429, else ``EndpointUnavailable``;
- a 400 saying the request exceeds the model's context window raises
  ``ContextLengthExceeded`` at once (the LLM extractor fits the request);
- an answer over the endpoint's size cap (decompressed), nested too deeply or
  with impossible usage counts raises ``InvalidOutput`` at once;
- other 4xx raise ``EndpointBadRequest``, except a refusal of the
  structured-output form: the client then asks again one form down
  (``json_schema`` -> ``json_object`` -> ``none``; a ``json_object`` request
  carries the step's schema until the endpoint refuses it) and keeps the
  lower form for the rest of its life.

Every call is bounded: a connect timeout, a read timeout (``timeout``: silence
allowed between bytes) and a wall-clock deadline per call that grows with the
call's ``max_tokens`` (``Endpoint.call_deadline_s``), enforced while the body
streams in (``distill.extraction.http_body``).

Every attempt appends a ``CallRecord``. No message, record or repr built here
holds the API key: errors are described from their type and status, never from
``str()`` of a requests exception, and server text is scrubbed of the key.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from distill.core.config import Endpoint, key_variable
from distill.core.errors import (
    ContextLengthExceeded,
    EndpointAuthError,
    EndpointBadRequest,
    EndpointError,
    EndpointRateLimited,
    EndpointUnavailable,
    InvalidOutput,
    StopRequested,
)
from distill.extraction.chat_reply import (  # parse_retry_after and cached_tokens are used from here too
    ReplyProblem,
    as_count,
    cached_tokens,
    context_exceeded,
    parse_completion,
    parse_retry_after,
    refuses_format,
)
from distill.extraction.chat_request import FORMS, RequestTemplate, cause_name, chat_payload, settle_environment
from distill.extraction.extractor import CallRecord, EventSink, ignore_event
from distill.extraction.http_body import ACCEPT_ENCODING, BodyError, BoundedAdapter, CallWatch, read_body

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
#: A Retry-After longer than this is treated as this long: a misbehaving proxy
#: must not park an endpoint for hours; a later 429 simply asks again.
RETRY_AFTER_CAP_S = 900.0
CONNECT_TIMEOUT_S = 10.0  # the probe's; calls use the endpoint's connect_timeout
PROBE_TIMEOUT_S = 15.0  # a probe asks for one token: an endpoint that cannot give it this fast is not up
PROBE_MESSAGE = "Health check: reply with one word."
SLEEP_SLICE_S = 0.5
_ERROR_BODY_CHARS = 200
_ERROR_BODY_CAP = 65_536  # an error page longer than this is cut: only its first words are shown


@dataclass
class ChatReply:
    """One successful completion."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    http_status: int
    cached_tokens: int = 0  # prompt tokens the endpoint served from its prefix cache


class _AttemptError(Exception):
    """One failed attempt, described without secrets."""

    def __init__(self, status: str, error: str, http_status: int | None = None, wait_s: float | None = None,
                 *, format_refused: bool = False, context: tuple[int | None, int | None] | None = None) -> None:
        super().__init__(error)
        self.format_refused = format_refused
        self.status = status  # the CallRecord status: a failure class
        self.error = error
        self.http_status = http_status
        self.wait_s = wait_s  # the server's Retry-After, when it gave one
        self.context = context  # (context_tokens, prompt_tokens) of a context-length refusal


def backoff_delay(attempt: int, rng: random.Random, *, base: float = BACKOFF_BASE_S,
                  cap: float = BACKOFF_CAP_S) -> float:
    """Full-jitter backoff before retry ``attempt`` (1-based): uniform in [0, min(cap, base * 2**(attempt-1))]."""
    ceiling = min(cap, base * (2 ** min(attempt - 1, 30)))
    return rng.uniform(0.0, ceiling)


class ChatClient:
    """Chat completions for one endpoint; one instance per worker.

    ``sleep``, ``clock`` and ``rng`` are injected so tests replay backoff
    without waiting. ``should_stop`` is polled during every wait; when it
    returns true the wait ends with ``StopRequested``.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        events: EventSink = ignore_event,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.endpoint = endpoint
        self._session = session or requests.Session()
        self._owns_session = session is None
        for scheme in ("http://", "https://"):
            self._session.mount(scheme, BoundedAdapter())
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._events = events
        self._should_stop = should_stop
        self._url = endpoint.base_url.rstrip("/") + "/chat/completions"
        if self._owns_session:
            settle_environment(self._session, self._url)
        self._template = RequestTemplate(self._session, self._url)
        self._secret = endpoint.api_key  # revealed only into the Authorization header
        self._form = endpoint.output_form if endpoint.output_form in FORMS else "json_object"
        self._object_schema = True  # json_object carries the step's schema until refused
        self._not_before = 0.0  # clock() value before which this endpoint must not be called (429)

    def __repr__(self) -> str:
        return f"ChatClient({self.endpoint.name!r}, model={self.endpoint.model!r})"

    def close(self) -> None:
        """Close the session's pooled connections (when this client created the session)."""
        if self._owns_session:
            self._session.close()

    # --- public ----------------------------------------------------------------

    @property
    def form(self) -> str:
        """The structured-output form the next request asks for (``json_schema``, ``json_object``, ``none``)."""
        return self._form

    def chat(self, messages: list[dict[str, str]], *, step: str, calls: list[CallRecord],
             max_tokens: int | None = None) -> ChatReply:
        """Send ``messages`` until one attempt succeeds; append a ``CallRecord`` per attempt to ``calls``.

        ``max_tokens`` replaces the endpoint's for this call (a request fitted to a context window).
        Raises ``EndpointAuthError``, ``EndpointBadRequest``, ``ContextLengthExceeded``, ``InvalidOutput``,
        ``EndpointRateLimited``, ``EndpointUnavailable`` or ``StopRequested``; messages name the endpoint,
        never its key.
        """
        tokens = max_tokens or self.endpoint.max_tokens
        attempts = max(1, self.endpoint.max_attempts)
        attempt = 0
        while True:
            attempt += 1
            self._wait_until(self._not_before, reason="rate limited (Retry-After)", attempt=attempt)
            started = self._clock()
            failure: _AttemptError | None = None
            try:
                reply = self._attempt(self._payload(messages, step, tokens), started, tokens)
            except _AttemptError as exc:
                failure = exc
            # Handled outside the except block, so no error raised here chains to a requests exception.
            if failure is None:
                calls.append(CallRecord(step=step, attempt=attempt, latency_s=reply.latency_s, status="ok",
                                        prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                                        cached_tokens=reply.cached_tokens, http_status=reply.http_status))
                return reply
            calls.append(CallRecord(step=step, attempt=attempt, latency_s=self._clock() - started,
                                    status=failure.status, http_status=failure.http_status, error=failure.error))
            if failure.format_refused:
                # The endpoint refused the structured-output form: one form down, for good; this attempt is free.
                self._move_form_down()
                attempts += 1
                continue
            if failure.wait_s is not None:
                # Kept even when this was the last attempt: the next call to this endpoint waits too.
                self._not_before = self._clock() + min(failure.wait_s, RETRY_AFTER_CAP_S)
            self._raise_if_final(failure, attempt, attempts)
            self._back_off(failure, attempt)

    def probe(self) -> str:
        """One minimal chat completion (``max_tokens`` 1, no JSON mode): ``""`` when the endpoint answers,
        else why not, in one key-free line. Raises ``EndpointAuthError`` when the key is refused.

        A probe asks the route real work asks, not ``GET /models``: a gateway lists its models while the
        model behind it is down, and some OpenAI-compatible servers have no ``/models`` at all. Any other
        4xx counts as up: the server is serving, it refused only the probe's form.
        """
        timeout = (min(CONNECT_TIMEOUT_S, self.endpoint.timeout_s), min(PROBE_TIMEOUT_S, self.endpoint.timeout_s))
        key = self._secret.reveal() if self._secret else ""
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        payload = {"model": self.endpoint.model, "messages": [{"role": "user", "content": PROBE_MESSAGE}],
                   "max_tokens": 1, "temperature": 0}
        failure = ""
        try:
            response = self._session.post(self._url, data=json.dumps(payload), headers=headers, timeout=timeout)
            body = response.content
        except requests.Timeout:
            failure = f"probe: no answer within {timeout[1]:g} s (timeout)"
        except requests.ConnectionError as exc:
            failure = f"probe: connection failed ({cause_name(exc)})"
        except requests.RequestException as exc:
            failure = f"probe: request failed ({type(exc).__name__})"
        if failure:
            return failure
        status = response.status_code
        if status in (401, 403):
            self._raise_if_final(_AttemptError("api_auth", f"HTTP {status}{self._error_detail(body)}", status), 1, 1)
        if status == 200:
            try:
                choices = json.loads(body)["choices"]
                answered = isinstance(choices, list) and bool(choices)
            except (ValueError, KeyError, TypeError):
                answered = False
            return "" if answered else "probe: malformed response body (not a chat completion)"
        if status >= 500 or status in (408, 409, 429):
            return f"probe: HTTP {status}{self._error_detail(body)}"
        return ""

    # --- one attempt -------------------------------------------------------------

    def _payload(self, messages: list[dict[str, str]], step: str, max_tokens: int) -> dict[str, Any]:
        return chat_payload(self.endpoint, messages, step=step, max_tokens=max_tokens, form=self._form,
                            object_schema=self._object_schema)

    def _move_form_down(self) -> None:
        before = self._form
        if self._form == "json_object" and self._object_schema:
            self._object_schema = False
            after = "json_object without a schema"
        else:
            self._form = FORMS[min(len(FORMS) - 1, FORMS.index(self._form) + 1)]
            after = self._form
        self._events("response_format_down", {"endpoint": self.endpoint.name, "from": before, "to": after})

    def _attempt(self, payload: dict[str, Any], started: float, max_tokens: int) -> ChatReply:
        ep = self.endpoint
        deadline_s = ep.call_deadline_s(max_tokens)
        deadline = time.monotonic() + deadline_s
        timeout = (min(ep.connect_timeout_s, deadline_s), min(ep.timeout_s, deadline_s))
        key = self._secret.reveal() if self._secret else ""
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                   "Accept-Encoding": ACCEPT_ENCODING}
        failure: _AttemptError | None = None
        status, body, watch = 0, b"", CallWatch(deadline_s)
        try:
            with watch:
                response = self._session.send(self._template.request(payload, headers), timeout=timeout, stream=True)
                status = response.status_code
                body = read_body(response, cap=ep.max_answer_bytes if status == 200 else _ERROR_BODY_CAP,
                                 deadline=deadline, watch=watch, keep_head=status != 200)
        except BodyError as exc:
            failure = self._body_failure(exc, status, deadline_s)
        except requests.RequestException as exc:
            failure = self._request_failure(exc, watch.fired, deadline_s)
        if failure is not None:
            # Raised outside the except block: requests exceptions carry the request, headers included.
            raise failure
        latency = self._clock() - started
        if status == 200:
            return self._parse(body, latency)
        detail = self._error_detail(body)
        if status in (401, 403):
            raise _AttemptError("api_auth", f"HTTP {status}{detail}", status)
        if status == 429:
            raise _AttemptError("api_rate_limited", f"HTTP 429{detail}", status, parse_retry_after(response.headers))
        context = context_exceeded(status, body)
        if context is not None:
            raise _AttemptError("too_long", f"HTTP {status}{detail}", status, context=context)
        if "response_format" in payload and refuses_format(status, body):
            raise _AttemptError("api_bad_request", f"HTTP {status}: response_format {self._form} refused", status,
                                format_refused=True)
        if status >= 500 or status in (408, 409):
            raise _AttemptError("api_unavailable", f"HTTP {status}{detail}", status)
        raise _AttemptError("api_bad_request", f"HTTP {status}{detail}", status)

    def _request_failure(self, exc: requests.RequestException, cut: bool, deadline_s: float) -> _AttemptError:
        if cut:  # the watch shut the socket: whatever requests says, the deadline ended it
            return self._body_failure(BodyError("deadline", ""), 0, deadline_s)
        if isinstance(exc, requests.Timeout):
            return _AttemptError("api_unavailable", f"no answer within {self.endpoint.timeout_s:g} s (timeout)")
        if isinstance(exc, requests.ConnectionError):
            return _AttemptError("api_unavailable", f"connection failed ({cause_name(exc)})")
        return _AttemptError("api_unavailable", f"request failed ({type(exc).__name__})")

    def _body_failure(self, exc: BodyError, status: int, deadline_s: float) -> _AttemptError:
        if exc.kind == "deadline":
            return _AttemptError("api_unavailable", f"no complete answer within the call's deadline of {deadline_s:g} s",
                                 status or None)
        if exc.kind == "too_large":
            return _AttemptError("invalid_output", f"the answer is larger than max_answer_bytes "
                                 f"({self.endpoint.max_answer_bytes} bytes, decompressed)", status)
        return _AttemptError("api_unavailable", str(exc), status or None)

    def _parse(self, body: bytes, latency: float) -> ChatReply:
        try:
            completion = parse_completion(body)
        except ReplyProblem as exc:
            status = "invalid_output" if exc.kind == "invalid" else "api_unavailable"
            raise _AttemptError(status, str(exc), 200) from None
        usage = completion.usage
        return ChatReply(
            text=completion.text,
            finish_reason=completion.finish_reason,
            prompt_tokens=as_count(usage.get("prompt_tokens"))
            or as_count(usage.get("prompt_cache_hit_tokens")) + as_count(usage.get("prompt_cache_miss_tokens")),
            completion_tokens=as_count(usage.get("completion_tokens")),
            latency_s=latency,
            http_status=200,
            cached_tokens=cached_tokens(usage),
        )

    def _error_detail(self, body: bytes) -> str:
        """A short, key-free excerpt of the server's error message."""
        try:
            data = json.loads(body)
            error = data.get("error", data) if isinstance(data, dict) else data
            message = error.get("message", "") if isinstance(error, dict) else str(error)
        except ValueError:
            message = body[:_ERROR_BODY_CHARS].decode("utf-8", "replace")
        message = " ".join(self._scrub(str(message)).split())[:_ERROR_BODY_CHARS]
        return f": {message}" if message else ""

    def _scrub(self, text: str) -> str:
        key = self._secret.reveal() if self._secret else ""
        return text.replace(key, "***") if key else text

    # --- failure handling ----------------------------------------------------------

    def _raise_if_final(self, failure: _AttemptError, attempt: int, attempts: int) -> None:
        name = self.endpoint.name
        where = f"endpoint {name} ({self.endpoint.model})"
        error: EndpointError | None = None
        if failure.status == "too_long":
            limit, prompt = failure.context or (None, None)
            error = ContextLengthExceeded(f"{where} said the request exceeds its context window ({failure.error})",
                                          endpoint=name, status=failure.http_status, context_tokens=limit,
                                          prompt_tokens=prompt)
        elif failure.status == "invalid_output":
            raise InvalidOutput(f"{where}: {failure.error}")
        elif failure.status == "api_auth":
            error = EndpointAuthError(
                f"{where} refused the API key ({failure.error}); check {key_variable(name)}",
                endpoint=name, status=failure.http_status)
        elif failure.status == "api_bad_request":
            error = EndpointBadRequest(
                f"{where} rejected the request ({failure.error}); check its model name and max_tokens",
                endpoint=name, status=failure.http_status)
        elif attempt >= attempts:
            summary = f"{where} failed {attempt} attempt(s); last: {failure.error}"
            if failure.status == "api_rate_limited":
                error = EndpointRateLimited(f"{summary}; the endpoint keeps rate limiting",
                                            endpoint=name, status=failure.http_status)
            else:
                error = EndpointUnavailable(summary, endpoint=name, status=failure.http_status)
        if error is not None:
            raise error

    def _back_off(self, failure: _AttemptError, attempt: int) -> None:
        if failure.wait_s is not None:
            self._wait_until(self._not_before, reason=f"rate limited: {failure.error}", attempt=attempt)
            return
        delay = backoff_delay(attempt, self._rng, base=self.endpoint.backoff_base_s, cap=self.endpoint.backoff_cap_s)
        self._wait_until(self._clock() + delay, reason=failure.error, attempt=attempt, announce_zero=True)

    def _wait_until(self, deadline: float, *, reason: str, attempt: int, announce_zero: bool = False) -> None:
        """Sleep until ``clock() >= deadline`` in slices, so a stop request ends the wait early."""
        remaining = deadline - self._clock()
        if remaining <= 0 and not announce_zero:
            return
        self._events("backing_off", {"endpoint": self.endpoint.name, "until": time.time() + max(0.0, remaining),
                                     "reason": reason, "attempt": attempt})
        while True:
            if self._should_stop():
                raise StopRequested(f"stop requested while endpoint {self.endpoint.name} was backing off")
            if remaining <= 0:
                return
            self._sleep(min(SLEEP_SLICE_S, remaining))
            remaining = deadline - self._clock()

