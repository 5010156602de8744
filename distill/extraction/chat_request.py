"""What ``ChatClient`` (``distill.extraction.http_client``) sends: the request body of one chat
completion, with the structured-output form the endpoint is at, and key-free names for what failed."""

from __future__ import annotations

import json
import os
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from distill.core.config import Endpoint
from distill.extraction.schemas import STEP_MODELS

#: The structured-output ladder: what the client asks for, and what it moves down to on a refusal.
FORMS = ("json_schema", "json_object", "none")


def chat_payload(endpoint: Endpoint, messages: list[dict[str, str]], *, step: str, max_tokens: int, form: str,
                 object_schema: bool) -> dict[str, Any]:
    """The body of a ``/chat/completions`` request for ``step`` in structured-output ``form``
    (``json_object`` carries the step's schema while ``object_schema``)."""
    payload: dict[str, Any] = {
        "model": endpoint.model,
        "messages": messages,
        "temperature": endpoint.temperature,
        "max_tokens": max_tokens,
    }
    schema = step_schema(step)
    if form == "json_schema" and schema is not None:
        payload["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": f"{step}_output", "schema": schema, "strict": False}}
    elif form in ("json_schema", "json_object"):
        payload["response_format"] = {"type": "json_object"}
        if object_schema and schema is not None:
            payload["response_format"]["schema"] = schema  # llama.cpp turns it into a grammar
    return payload


_SCHEMAS: dict[str, dict[str, Any]] = {}


def step_schema(step: str) -> dict[str, Any] | None:
    """The JSON schema of ``step``'s answer (``None`` for an unknown step)."""
    model = STEP_MODELS.get(step)
    if model is None:
        return None
    if step not in _SCHEMAS:
        _SCHEMAS[step] = model.model_json_schema()
    return _SCHEMAS[step]


def warm_up() -> None:
    """Build what every request reads, once, before the first report: each step's schema and the shared
    instructions with the organ list (the vocabulary loaded)."""
    from distill.extraction.prompts import common_text

    for step in STEP_MODELS:
        step_schema(step)
    common_text()


def cause_name(exc: BaseException) -> str:
    """The innermost cause's class name ("ConnectionResetError"): descriptive and free of URLs or headers."""
    current = exc
    for _ in range(10):
        nested = [a for a in current.args if isinstance(a, BaseException)]
        nxt = current.__cause__ or getattr(current, "reason", None) or (nested[0] if nested else None)
        if not isinstance(nxt, BaseException) or nxt is current:
            break
        current = nxt
    return type(current).__name__


def settle_environment(session: requests.Session, url: str) -> None:
    """Apply the environment's proxy and CA bundle settings for ``url`` once, instead of on every call:
    requests otherwise reads the whole environment and netrc per request, a large share of a call's CPU."""
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False


class RequestTemplate:
    """The POSTs to one URL, prepared once (the URL parsed and quoted, the session's default headers): each
    call copies the headers, adds its own and its body. The session's per-call merging (cookies, netrc,
    hooks, environment) is skipped too: ``settle_environment`` ran at start."""

    def __init__(self, session: requests.Session, url: str) -> None:
        base = requests.PreparedRequest()
        base.prepare(method="POST", url=url, headers=dict(session.headers))
        self._url = base.url
        self._headers = dict(base.headers)

    def request(self, payload: dict[str, Any], headers: dict[str, str]) -> requests.PreparedRequest:
        """The POST of ``payload`` as JSON with ``headers`` on top of the defaults; ``InvalidHeader`` (a
        ``RequestException``) for a header value requests would refuse, such as a key with a line break."""
        for header in headers.items():
            requests.utils.check_header_validity(header)
        body = json.dumps(payload).encode("utf-8")
        request = requests.PreparedRequest()
        request.method, request.url = "POST", self._url
        request.headers = CaseInsensitiveDict({**self._headers, **headers, "Content-Length": str(len(body))})
        request.body = body
        return request
