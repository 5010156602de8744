"""A loopback OpenAI-compatible chat server for tests, chaos tests and the benchmark.

It reads the step, report number, note and earlier outputs from the markers
``distill.prompts`` writes, answers each step with valid JSON grounded in the
note (or with an injected fault), and counts what it saw. Standalone::

    python -m distill.stub_server --port 8099 --latency-ms 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Kinds whose 200 answer is a valid completion of the step's schema (``ungrounded`` included:
#: its quotes are invented, but its shape is right, so a client accepts it).
ACCEPTED_KINDS = ("ok", "latency", "ungrounded", "no_json_mode")
FAULT_KINDS = ("ok", "latency", "400", "429", "500", "502", "503", "hang", "reset", "not_json", "bad_body", "length",
               "bad_schema", "ungrounded", "no_json_mode")
STUB_ORGAN = "Heart (Cor)"
_STEP = re.compile(r"\[diag-distill step: ([a-z_]+)\]")
_REPORT = re.compile(r"^\[report: (-?\d+)\]$", re.MULTILINE)
_PHRASE = re.compile(r"[^\W\d_]+(?: [^\W\d_]+){1,3}")


@dataclass
class Fault:
    """What the server does with one call.

    ``kind`` is one of ``FAULT_KINDS``: ``not_json`` answers prose instead of
    JSON; ``bad_body`` sends an HTTP 200 whose body is not JSON at all;
    ``hang`` holds the call ``delay_s`` seconds (default 30) then closes;
    ``latency`` adds ``delay_s`` before a normal answer; ``no_json_mode``
    refuses a request that sets ``response_format`` (400) and answers one that
    does not. ``retry_after`` / ``retry_after_ms`` set the 429's headers.
    """

    kind: str = "ok"
    retry_after: float | None = None
    delay_s: float = 0.0
    retry_after_ms: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")


@dataclass
class CallInfo:
    """One call as the server understood it."""

    step: str
    report: int | None
    note: str
    n: int  # 0-based index of this call among all calls the server received
    model: str
    api_key: str
    findings_json: str = ""
    diagnoses_json: str = ""
    json_mode: bool = False  # the request asked for response_format json_object


def _between(text: str, start: str, end: str, *, last: bool = False) -> str:
    i = text.find(start + "\n")
    if i < 0:
        return ""
    i += len(start) + 1
    j = text.rfind("\n" + end) if last else text.find("\n" + end, i)
    return text[i:j] if j >= i else ""


def parse_call(body: dict[str, Any], n: int, api_key: str) -> CallInfo:
    """Read the step, report number, note and earlier outputs from a chat request."""
    messages = body.get("messages") or []
    system = next((m.get("content", "") for m in messages if m.get("role") == "system"), "")
    user = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    step = _STEP.search(system)
    report = _REPORT.search(user)
    return CallInfo(
        step=step.group(1) if step else "",
        report=int(report.group(1)) if report else None,
        note=_between(user, "<<<NOTE", "NOTE>>>", last=True),
        n=n,
        model=str(body.get("model", "")),
        api_key=api_key,
        findings_json=_between(user, "<<<FINDINGS", "FINDINGS>>>"),
        diagnoses_json=_between(user, "<<<DIAGNOSES", "DIAGNOSES>>>"),
        json_mode=bool(body.get("response_format")),
    )


def _phrases(note: str, limit: int = 5) -> list[str]:
    """Up to ``limit`` short word runs copied verbatim from the start of the note."""
    head = note[:800]
    found = [m.group(0)[:60].strip() for m in _PHRASE.finditer(head)]
    if not found:  # scripts without spaces between words (Chinese): take short slices
        found = [w[:12] for w in re.findall(r"[^\W\d_]{2,}", head)]
    seen: list[str] = []
    for phrase in found:
        if phrase and phrase not in seen:
            seen.append(phrase)
        if len(seen) >= limit:
            break
    return seen


def _finding_quotes(call: CallInfo) -> list[str]:
    try:
        data = json.loads(call.findings_json)
        return [str(f["quote"]) for f in data["findings"] if f.get("quote")]
    except (ValueError, KeyError, TypeError, AttributeError):
        return _phrases(call.note)


def default_answer(call: CallInfo) -> dict[str, Any]:
    """A valid, grounded answer for the call's step, built cheaply from the note."""
    phrases = _phrases(call.note)
    findings = [{"quote": p, "status": "present", "kind": "symptom"} for p in phrases]
    diagnoses = [{"organ": STUB_ORGAN, "diagnosis": phrases[0], "quote": phrases[0]}] if phrases else []
    if call.step == "findings":
        return {"findings": findings}
    if call.step == "organs":
        return {"diagnoses": diagnoses}
    quotes = _finding_quotes(call) if call.step == "mapping" else phrases
    mappings = [{"finding": q, "organ": STUB_ORGAN, "diagnosis": phrases[0] if phrases else q, "locations": [],
                 "basis": q, "inference": ""} for q in quotes]
    if call.step == "mapping":
        return {"mappings": mappings}
    return {"findings": findings, "diagnoses": diagnoses, "mappings": mappings}


def _faulty_answer(kind: str, call: CallInfo, answer: dict[str, Any]) -> tuple[str, str]:
    """The answer text and finish_reason for answer-level faults."""
    text = json.dumps(answer)
    if kind == "not_json":
        return "Sorry, I cannot produce JSON for this note.", "stop"
    if kind == "length":
        return text[: max(1, len(text) // 2)], "length"
    if kind == "bad_schema":
        return json.dumps({"result": "done", "items": [{"text": "no quote field"}]}), "stop"
    if kind == "ungrounded":
        fake = "zzq invented finding"
        made_up = {
            "findings": [{"quote": fake, "status": "present", "kind": "symptom"}],
            "diagnoses": [{"organ": STUB_ORGAN, "diagnosis": fake, "quote": fake}],
            "mappings": [{"finding": fake, "organ": STUB_ORGAN, "locations": ["Left ventricle"], "basis": fake}],
        }
        keys = {"findings": ["findings"], "organs": ["diagnoses"], "mapping": ["mappings"]}.get(call.step)
        return json.dumps({k: v for k, v in made_up.items() if keys is None or k in keys}), "stop"
    return text, "stop"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many workers connect at once when a benchmark starts
    stub: StubServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients that time out or go away are part of the tests."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: the benchmark sends hundreds of calls a second."""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.stub._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.stub._track(self.connection, add=False)
        super().finish()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.stub._handle(self, raw)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/timeline":
            self.send_json(200, {"calls": self.server.stub.timeline_rows()})
        else:
            self.send_json(200, self.server.stub.stats())

    def send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def drop(self, *, reset: bool) -> None:
        """Close the connection without an answer; ``reset`` sends a TCP RST."""
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        try:
            if not reset:
                self.connection.shutdown(socket.SHUT_RDWR)
            self.connection.close()
        except OSError:
            pass


class StubServer:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1.

    ``fault_plan(call)`` chooses a ``Fault`` per call (default: always ok);
    ``responder(call)`` returns the answer object a normal call serializes as
    the message content (default: ``default_answer``). With ``require_key``,
    a call without ``Authorization: Bearer <require_key>`` gets 401.
    Counters: ``total``, ``by_model``, ``by_path``, ``by_report_step``,
    ``answered_by_report_step`` (calls answered with a schema-valid completion,
    see ``ACCEPTED_KINDS``), ``faults``, ``max_concurrent``; ``stats()``
    returns them JSON-ready.
    With ``record_timeline``, every answered call is kept as (model, report,
    step, started, ended) in wall-clock seconds; ``GET /timeline`` returns them.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        fault_plan: Callable[[CallInfo], Fault] | None = None,
        responder: Callable[[CallInfo], dict[str, Any]] | None = None,
        require_key: str | None = None,
        record_timeline: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.latency_s = latency_s
        self.fault_plan = fault_plan
        self.responder = responder or default_answer
        self.require_key = require_key
        self.total = 0
        self.by_model: Counter[str] = Counter()
        self.by_path: Counter[str] = Counter()
        self.by_report_step: Counter[tuple[int | None, str]] = Counter()
        self.answered_by_report_step: Counter[tuple[int | None, str]] = Counter()
        self.faults: Counter[str] = Counter()
        self.max_concurrent = 0
        self.record_timeline = record_timeline
        self.timeline: list[tuple[str, int | None, str, float, float]] = []
        self._active = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL to put in an ``Endpoint``: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> StubServer:
        """Bind and serve on a daemon thread; returns self."""
        httpd = _Server((self.host, self.port), _Handler)
        httpd.stub = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._stopping.clear()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"stub-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end hanging calls and close every open connection."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """The counters, with string keys (``"<report>/<step>"``)."""
        with self._lock:
            return {
                "total": self.total,
                "by_model": dict(self.by_model),
                "by_path": dict(self.by_path),
                "by_report_step": {f"{r}/{s}": c for (r, s), c in self.by_report_step.items()},
                "answered_by_report_step": {f"{r}/{s}": c for (r, s), c in self.answered_by_report_step.items()},
                "faults": dict(self.faults),
                "max_concurrent": self.max_concurrent,
            }

    @property
    def active(self) -> int:
        """Calls being handled right now (a hanging call counts until ``stop`` ends it)."""
        with self._lock:
            return self._active

    def timeline_rows(self) -> list[list[Any]]:
        """The recorded calls as ``[model, report, step, started, ended]`` rows, in the order they ended."""
        with self._lock:
            return [list(row) for row in self.timeline]

    # --- request handling (on the handler's thread) --------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _handle(self, handler: _Handler, raw: bytes) -> None:
        started = time.time()
        auth = handler.headers.get("Authorization") or ""
        api_key = auth[7:] if auth.startswith("Bearer ") else ""
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            handler.send_json(400, {"error": {"message": "request body is not a JSON object"}})
            return
        with self._lock:
            n = self.total
            self.total += 1
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
        row: tuple[str, int | None, str, float, float] | None = None
        try:
            call = parse_call(body, n, api_key)
            with self._lock:
                self.by_model[call.model] += 1
                self.by_path[handler.path] += 1
                self.by_report_step[(call.report, call.step)] += 1
            self._answer(handler, call)
            if self.record_timeline:
                row = (call.model, call.report, call.step, started, time.time())
        finally:
            # Recorded with the same lock that ends the call: once ``active`` is 0, the timeline is complete.
            with self._lock:
                if row is not None:
                    self.timeline.append(row)
                self._active -= 1

    def _answer(self, handler: _Handler, call: CallInfo) -> None:
        if handler.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            handler.send_json(404, {"error": {"message": f"no route {handler.path}", "type": "not_found"}})
            return
        if self.require_key is not None and call.api_key != self.require_key:
            # Echoes the key it got, as some real servers do, so clients must scrub error text.
            message = f"invalid api key {call.api_key!r}"
            handler.send_json(401, {"error": {"message": message, "type": "invalid_request_error"}})
            return
        fault = self.fault_plan(call) if self.fault_plan else Fault()
        with self._lock:
            self.faults[fault.kind] += 1
        delay = self.latency_s + (fault.delay_s if fault.kind == "latency" else 0.0)
        if fault.kind == "hang":
            self._stopping.wait(fault.delay_s or 30.0)
            handler.drop(reset=False)
            return
        if delay > 0 and self._stopping.wait(delay):
            handler.drop(reset=False)
            return
        if fault.kind == "reset":
            handler.drop(reset=True)
        elif fault.kind == "429":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
            handler.send_json(429, {"error": {"message": "rate limit reached", "type": "rate_limit"}}, headers)
        elif fault.kind == "400" or (fault.kind == "no_json_mode" and call.json_mode):
            message = "response_format is not supported" if fault.kind == "no_json_mode" else "invalid request"
            handler.send_json(400, {"error": {"message": message, "type": "invalid_request_error"}})
        elif fault.kind in ("500", "502", "503"):
            handler.send_json(int(fault.kind), {"error": {"message": f"stub fault {fault.kind}"}})
        elif fault.kind == "bad_body":
            handler.send_bytes(200, b"<html><body>upstream proxy error</body></html>", "text/html")
        else:
            text, finish = _faulty_answer(fault.kind, call, self.responder(call))
            handler.send_json(200, self._completion(call, text, finish))
            if fault.kind in ACCEPTED_KINDS:
                with self._lock:
                    self.answered_by_report_step[(call.report, call.step)] += 1

    def _completion(self, call: CallInfo, text: str, finish: str) -> dict[str, Any]:
        prompt, completion = len(call.note) // 4 + 50, len(text) // 4 + 1  # about 4 characters a token
        return {
            "id": f"stub-{call.n}", "object": "chat.completion", "created": int(time.time()), "model": call.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }


def main(argv: list[str] | None = None) -> int:
    """Run the stub in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m distill.stub_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    parser.add_argument("--timeline", action="store_true", help="keep every call's timing for GET /timeline")
    args = parser.parse_args(argv)
    server = StubServer(host=args.host, port=args.port, latency_s=args.latency_ms / 1000.0,
                        record_timeline=args.timeline).start()
    print(f"stub server at {server.url} (latency {args.latency_ms:g} ms); Ctrl-C stops it", flush=True)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    server.stop()
    print(f"stopped after {server.total} call(s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
