"""One HTTP attempt within bounds, for ``distill.extraction.http_client``.

``CallWatch`` is an attempt's wall-clock bound: a watchdog that shuts the attempt's socket at the
deadline, so an endpoint that trickles a byte a second (in its headers or its body) cannot hold a
call past it. ``BoundedAdapter`` tells the watch which pooled connection the attempt took.
``read_body`` reads a streamed ``requests`` response in chunks and decodes gzip or deflate itself,
so the cap counts decompressed bytes and no single step inflates more than the room left under it:
a small gzip bomb fails at the cap, never in memory.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

CHUNK_BYTES = 16_384
#: Content encodings this client decodes (and asks for, in Accept-Encoding).
ACCEPT_ENCODING = "gzip, deflate"


class BodyError(Exception):
    """The body could not be read within bounds; ``kind`` is ``"deadline"``, ``"too_large"`` or ``"broken"``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Inflater:
    """Decompresses gzip or zlib data (several gzip members too), never more than ``room`` bytes per step."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 32)  # 32: gzip or zlib header, told apart by itself

    def feed(self, data: bytes, out: bytearray, cap: int) -> None:
        while data:
            try:
                out += self._z.decompress(data, cap - len(out) + 1)
            except zlib.error:
                raise BodyError("broken", "the answer body could not be decompressed") from None
            if len(out) > cap:
                raise BodyError("too_large", "")
            data = self._z.unconsumed_tail
            if self._z.eof:
                data = self._z.unused_data
                self._z = zlib.decompressobj(zlib.MAX_WBITS | 32)


_current = threading.local()  # the CallWatch of the attempt this thread is making


class _Watchdog:
    """One thread per process that fires every armed watch at its deadline (a thread per call costs more
    CPU than the rest of the call's bookkeeping)."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, CallWatch]] = []  # (monotonic deadline, sequence, watch), a heap
        self._wake = threading.Condition()
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, watch: CallWatch, seconds: float) -> None:
        with self._wake:
            entry = (time.monotonic() + seconds, next(self._sequence), watch)
            heapq.heappush(self._due, entry)
            if self._thread is None or not self._thread.is_alive():  # first use, or after a fork
                self._thread = threading.Thread(target=self._run, name="call-watchdog", daemon=True)
                self._thread.start()
            elif self._due[0] is entry:
                self._wake.notify()  # sooner than what the thread waits for

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._due and self._due[0][2].finished:
                    heapq.heappop(self._due)  # finished in time: dropped unfired
                wait = self._due[0][0] - time.monotonic() if self._due else None
                if wait is None or wait > 0:
                    self._wake.wait(wait)
                    continue
                watch = heapq.heappop(self._due)[2]
            watch.fire()


_WATCHDOG = _Watchdog()


class CallWatch:
    """Shuts the attempt's connection ``seconds`` from now, unless ``finish`` came first.

    Used as a context manager around one attempt on the thread that makes it.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self.connection: Any = None  # set by the pool when the attempt takes a connection
        self._lock = threading.Lock()
        self.finished = False
        _WATCHDOG.arm(self, max(0.0, seconds))

    def fire(self) -> None:
        with self._lock:
            if self.finished:
                return
            self.fired = True
            sock = getattr(self.connection, "sock", None)
            if not isinstance(sock, socket.socket):
                _WATCHDOG.arm(self, 0.2)  # still connecting (bounded by the connect timeout): look again
                return
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        with self._lock:
            self.finished = True
            self.connection = None  # the watch waits in the heap until its deadline: it holds nothing

    def __enter__(self) -> CallWatch:
        _current.watch = self
        return self

    def __exit__(self, *exc: object) -> None:
        _current.watch = None
        self.finish()


def _noted(conn: Any) -> Any:
    watch = getattr(_current, "watch", None)
    if watch is not None:
        watch.connection = conn
    return conn


class _WatchedHTTPPool(HTTPConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        return _noted(super()._get_conn(timeout))


class _WatchedHTTPSPool(HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        return _noted(super()._get_conn(timeout))


class BoundedAdapter(HTTPAdapter):
    """A ``requests`` adapter whose pools tell the current ``CallWatch`` which connection an attempt uses."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def read_body(response: requests.Response, *, cap: int, deadline: float, watch: CallWatch,
              keep_head: bool = False, clock: Callable[[], float] = time.monotonic) -> bytes:
    """The whole (decoded) body of ``response``, at most ``cap`` bytes, read before ``clock() >= deadline``
    (``watch`` shuts the socket then). With ``keep_head`` a longer body is cut to its first ``cap`` bytes
    instead (an error page: only its first words matter).

    Raises ``BodyError``. On success the connection goes back to the pool; on failure it is closed.
    """
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        response.close()
        raise BodyError("broken", f"the answer body uses an unknown content encoding ({encoding[:30]})")
    declared = _declared_length(response.headers)
    if encoding == "identity" and declared is not None and declared > cap and not keep_head:
        response.close()
        raise BodyError("too_large", "")
    inflater = _Inflater() if encoding != "identity" else None
    out = bytearray()
    raw_read = 0
    ok = False
    try:
        while True:
            if clock() >= deadline:
                raise BodyError("deadline", "")
            try:
                chunk = response.raw.read(CHUNK_BYTES, decode_content=False)
            except Exception as exc:  # urllib3, http.client and socket errors all mean the same here
                if watch.fired or clock() >= deadline:
                    raise BodyError("deadline", "") from None
                raise BodyError("broken", f"the answer body broke off ({type(exc).__name__})") from None
            if not chunk:
                if watch.fired:
                    raise BodyError("deadline", "")
                break
            raw_read += len(chunk)
            if raw_read > cap:
                raise BodyError("too_large", "")
            if inflater is None:
                out += chunk
                if len(out) > cap:
                    raise BodyError("too_large", "")
            else:
                inflater.feed(chunk, out, cap)
        ok = True
        return bytes(out)
    except BodyError as exc:
        if exc.kind == "too_large" and keep_head:
            return bytes(out[:cap])  # the rest stays unread: the connection is closed below
        raise
    finally:
        watch.finish()
        if ok and not watch.fired:
            response.raw.release_conn()
        else:
            response.close()


def _declared_length(headers: Any) -> int | None:
    try:
        return int(headers.get("Content-Length"))
    except (TypeError, ValueError):
        return None
