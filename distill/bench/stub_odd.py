"""Answers as real models and servers write them, for the stub endpoint: reasoning before the answer,
content in parts, null content, several JSON values, absurd nesting and usage, bodies too large, a gzip
bomb, a context-length refusal in each server's words."""

from __future__ import annotations

import gzip
import json
import threading
from functools import cache
from typing import Any

#: Kinds answered with a normal HTTP 200 whose message is shaped oddly (see ``odd_message``).
ODD_KINDS = ("think", "reasoning_content", "reasoning_only", "list_content", "null_content", "several_json",
             "deep_nesting", "absurd_usage")
#: Kinds that change the transport: the body's size, its encoding, or its pace.
TRANSPORT_KINDS = ("huge", "gzip_bomb", "gzip", "trickle", "trickle_headers", "deep_body", "no_json_schema",
                   "huge_error")
#: Kinds ``send_odd_body`` answers: the body itself is the fault.
BODY_KINDS = ("huge", "deep_body", "huge_error", "gzip_bomb", "gzip", "trickle", "trickle_headers")
#: A draft that a client must never take for the answer.
DRAFT = {"findings": [{"quote": "zzq draft finding", "status": "present", "kind": "symptom"}]}


def odd_message(kind: str, text: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The assistant message for ``kind`` around the valid answer ``text``, and usage to send instead
    of the counted one (``None``: the counted one)."""
    draft = json.dumps(DRAFT)
    if kind == "think":
        # A draft JSON and a stray brace inside the reasoning: neither may reach the answer.
        content = f"<think>Draft: {draft} hmm, one brace {{ left open</think>\n{text}"
        return {"role": "assistant", "content": content}, None
    if kind == "reasoning_content":
        return {"role": "assistant", "content": text, "reasoning_content": f"Let me draft {draft}"}, None
    if kind == "reasoning_only":
        return {"role": "assistant", "content": None, "reasoning_content": text}, None
    if kind == "list_content":
        half = len(text) // 2
        parts = [{"type": "reasoning", "text": draft}, {"type": "text", "text": text[:half]},
                 {"type": "text", "text": text[half:]}]
        return {"role": "assistant", "content": parts}, None
    if kind == "null_content":
        return {"role": "assistant", "content": None}, None
    if kind == "several_json":
        content = f'Notes: {{"note": "checked"}}\nAnswer: {text}\nStatus: {{"done": true}}'
        return {"role": "assistant", "content": content}, None
    if kind == "deep_nesting":
        return {"role": "assistant", "content": "[" * 200_000 + "]" * 200_000}, None
    if kind == "absurd_usage":
        return {"role": "assistant", "content": text}, {"prompt_tokens": 10**30, "completion_tokens": -5,
                                                         "total_tokens": 1e300}
    raise ValueError(f"not an odd answer kind: {kind!r}")


@cache
def huge_body(size: int = 8_000_000) -> bytes:
    """A well-formed chat completion of about ``size`` bytes."""
    message = {"role": "assistant", "content": "x" * size}
    return json.dumps({"object": "chat.completion", "choices": [{"index": 0, "message": message,
                                                                 "finish_reason": "stop"}]}).encode()


@cache
def gzip_bomb(compressed: int = 1_000_000) -> bytes:
    """About ``compressed`` bytes of gzip that inflate a thousandfold into one chat completion padded with
    spaces (valid JSON whitespace): gzip members one after another, as RFC 1952 allows, so building it
    costs one small compression instead of a gigabyte's."""
    member = gzip.compress(b" " * 4_000_000, compresslevel=9, mtime=0)
    count = max(1, compressed // len(member))
    return (gzip.compress(b'{"choices": [{"message": {"content": "', mtime=0) + member * count
            + gzip.compress(b'"}}]}', mtime=0))


@cache
def deep_body(depth: int = 200_000) -> bytes:
    """A 200 body nested deeper than any JSON parser recurses."""
    return b'{"choices": ' + b"[" * depth + b"]" * depth + b"}"


def context_refusal(style: str, limit: int, prompt: int, max_tokens: int) -> dict[str, Any]:
    """A context-length 400 body as OpenAI, vLLM or llama.cpp write it, or ``bare``: the code and no numbers."""
    if style == "bare":
        return {"error": {"message": "Context length exceeded.", "code": "context_length_exceeded"}}
    if style == "llamacpp":
        return {"error": {"code": 400, "message": f"request ({prompt} tokens) exceeds the available context size "
                          f"({limit} tokens), try increasing it", "type": "exceed_context_size_error",
                          "n_prompt_tokens": prompt, "n_ctx": limit}}
    if style == "vllm":
        return {"object": "error", "type": "BadRequestError", "code": 400,
                "message": f"This model's maximum context length is {limit} tokens. However, you requested "
                           f"{prompt + max_tokens} tokens ({prompt} in the messages, {max_tokens} in the completion). "
                           "Please reduce the length of the messages or completion."}
    return {"error": {"message": f"This model's maximum context length is {limit} tokens. However, your messages "
                                 f"resulted in {prompt} tokens. Please reduce the length of the messages.",
                      "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}


def send_odd_body(handler: Any, fault: Any, completion: bytes, stopping: threading.Event) -> None:
    """Answer with the body fault ``fault.kind`` (one of ``BODY_KINDS``); ``completion`` is the valid answer."""
    kind = fault.kind
    if kind in ("huge", "deep_body"):
        handler.send_bytes(200, huge_body() if kind == "huge" else deep_body(), "application/json")
    elif kind == "huge_error":  # a proxy's login page: a 401 with a megabyte of HTML
        handler.send_bytes(401, b"<html>" + b"sign in " * 125_000 + b"</html>", "text/html")
    elif kind == "gzip_bomb":
        handler.send_bytes(200, gzip_bomb(), "application/json", {"Content-Encoding": "gzip"})
    elif kind == "gzip":
        handler.send_bytes(200, gzip.compress(completion), "application/json", {"Content-Encoding": "gzip"})
    else:
        _trickle(handler, completion, fault.delay_s or 1.0, stopping, headers_too=kind == "trickle_headers")


def _trickle(handler: Any, body: bytes, every_s: float, stopping: threading.Event, *, headers_too: bool) -> None:
    """Send ``body`` (and with ``headers_too`` the status line and headers as well) one byte every
    ``every_s`` seconds, until done, stopped or the client goes away."""
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    if headers_too:
        body = head + body
    else:
        handler.wfile.write(head)
    for i in range(len(body)):
        try:
            handler.wfile.write(body[i:i + 1])
            handler.wfile.flush()
        except OSError:
            return
        if stopping.wait(every_s):
            handler.drop(reset=False)
            return
