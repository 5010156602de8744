"""A loopback OpenAI-compatible chat server for tests, chaos tests and the benchmark.

It reads the step, report number, note and earlier outputs from the markers
``distill.extraction.prompts`` writes, answers each step with valid JSON grounded in the
note (or with an injected fault), and counts what it saw. Standalone::

    diag-distill stub --port 8099 --latency-ms 200     (or: python -m distill.stub_server ...)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from distill.bench.stub_answers import (
    ACCEPTED_KINDS,
    CHARS_PER_TOKEN,
    FAULT_KINDS,
    STUB_ORGAN,
    CallInfo,
    Fault,
    PrefixCache,
    default_answer,
    faulty_answer,
    parse_call,
)
from distill.extraction.http_client import PROBE_MESSAGE

__all__ = ["FAULT_KINDS", "STUB_ORGAN", "CallInfo", "Fault", "StubServer", "default_answer", "parse_call", "serve"]

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
    see ``ACCEPTED_KINDS``), ``faults``, ``max_concurrent``, ``probes`` (health probes, which the
    per-report counters leave out); ``stats()``
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
        usage: Callable[[CallInfo], dict[str, Any]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.latency_s = latency_s
        self.fault_plan = fault_plan
        self.responder = responder or default_answer
        self.require_key = require_key
        self.usage = usage  # replaces the counted usage: how other providers shape it
        self.total = 0
        self.by_model: Counter[str] = Counter()
        self.by_path: Counter[str] = Counter()
        self.by_report_step: Counter[tuple[int | None, str]] = Counter()
        self.answered_by_report_step: Counter[tuple[int | None, str]] = Counter()
        self.faults: Counter[str] = Counter()
        self.probes = 0
        self.max_concurrent = 0
        self.record_timeline = record_timeline
        self.timeline: list[tuple[str, int | None, str, float, float]] = []
        self.caches: dict[str, PrefixCache] = {}  # one prefix cache per model
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self._active = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._outage: Fault | None = None  # set by go_down: every call gets this fault
        self.outages: list[list[float | None]] = []  # [went down, came back] in wall-clock seconds
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

    def go_down(self, how: str = "refuse") -> None:
        """Be a dead endpoint until ``come_back``: ``refuse`` closes the port, so connections are refused;
        a fault kind (``500``, ``503``, ``reset``, ``hang``, ``bad_body`` ...) answers every call with it."""
        fault = None if how == "refuse" else Fault(how, delay_s=30.0 if how == "hang" else 0.0)
        self.outages.append([time.time(), None])
        if fault is None:
            self.stop()
        else:
            with self._lock:
                self._outage = fault

    def come_back(self) -> None:
        """Serve normally again, on the same port."""
        with self._lock:
            self._outage = None
        if self._httpd is None:
            self.start()
        if self.outages and self.outages[-1][1] is None:
            self.outages[-1][1] = time.time()

    @property
    def back_at(self) -> float | None:
        """When the last outage ended (wall clock), ``None`` when there was none or it lasts."""
        return self.outages[-1][1] if self.outages else None

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
                "probes": self.probes,
                "max_concurrent": self.max_concurrent,
                "prompt_tokens": self.prompt_tokens,
                "cached_tokens": self.cached_tokens,
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
            probe = call.report is None and PROBE_MESSAGE in call.prompt
            with self._lock:
                self.by_model[call.model] += 1
                self.by_path[handler.path] += 1
                if probe:
                    self.probes += 1
                else:
                    self.by_report_step[(call.report, call.counted_step)] += 1
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
        with self._lock:
            outage = self._outage
        fault = outage or (self.fault_plan(call) if self.fault_plan else Fault())
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
            text, finish = faulty_answer(fault.kind, call, self.responder(call))
            handler.send_json(200, self._completion(call, text, finish))
            if fault.kind in ACCEPTED_KINDS and not (call.report is None and PROBE_MESSAGE in call.prompt):
                with self._lock:
                    self.answered_by_report_step[(call.report, call.counted_step)] += 1

    def _completion(self, call: CallInfo, text: str, finish: str) -> dict[str, Any]:
        prompt_text = call.prompt or call.note
        with self._lock:
            cached_chars = self.caches.setdefault(call.model, PrefixCache()).lookup(prompt_text)
            prompt = len(prompt_text) // CHARS_PER_TOKEN + 1
            cached = cached_chars // CHARS_PER_TOKEN
            self.prompt_tokens += prompt
            self.cached_tokens += cached
        completion = len(text) // CHARS_PER_TOKEN + 1
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                 "prompt_tokens_details": {"cached_tokens": cached}}  # the OpenAI shape, which vLLM sends too
        return {
            "id": f"stub-{call.n}", "object": "chat.completion", "created": int(time.time()), "model": call.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": self.usage(call) if self.usage else usage,
        }


def serve(host: str = "127.0.0.1", port: int = 8099, latency_ms: float = 0.0, timeline: bool = False) -> int:
    """Run the stub in the foreground until Ctrl-C or SIGTERM; the number of calls it answered."""
    server = StubServer(host=host, port=port, latency_s=latency_ms / 1000.0, record_timeline=timeline).start()
    print(f"stub server at {server.url} (latency {latency_ms:g} ms); Ctrl-C stops it", flush=True)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    server.stop()
    print(f"stopped after {server.total} call(s)", flush=True)
    return server.total


def main(argv: list[str] | None = None) -> int:
    """``python -m distill.stub_server`` (and ``python -m distill.bench.stub_server``)."""
    parser = argparse.ArgumentParser(prog="python -m distill.stub_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    parser.add_argument("--timeline", action="store_true", help="keep every call's timing for GET /timeline")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.latency_ms, args.timeline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
