"""Reading one answer body within bounds, for ``distill.extraction.http_client``.

``read_body`` reads a streamed ``requests`` response in chunks and decodes gzip or deflate itself,
so the cap counts decompressed bytes and no single step inflates more than the room left under it:
a small gzip bomb fails at the cap, never in memory. A watchdog shuts the socket at the call's
wall-clock deadline, so an endpoint that trickles a byte a second cannot hold a call past it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import requests

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


def _socket_of(response: requests.Response) -> socket.socket | None:
    connection = getattr(response.raw, "connection", None) or getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


class _Watchdog:
    """Shuts ``sock`` at the deadline unless ``finish`` came first."""

    def __init__(self, sock: socket.socket | None, seconds: float) -> None:
        self.fired = False
        self._sock = sock
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        if sock is not None:
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done or self._sock is None:
                return
            self.fired = True
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def read_body(response: requests.Response, *, cap: int, deadline: float,
              clock: Callable[[], float] = time.monotonic) -> bytes:
    """The whole (decoded) body of ``response``, at most ``cap`` bytes, read before ``clock() >= deadline``.

    Raises ``BodyError``. On success the connection goes back to the pool; on failure it is closed.
    """
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        response.close()
        raise BodyError("broken", f"the answer body uses an unknown content encoding ({encoding[:30]})")
    declared = _declared_length(response.headers)
    if encoding == "identity" and declared is not None and declared > cap:
        response.close()
        raise BodyError("too_large", "")
    inflater = _Inflater() if encoding != "identity" else None
    watchdog = _Watchdog(_socket_of(response), deadline - clock())
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
                if watchdog.fired or clock() >= deadline:
                    raise BodyError("deadline", "") from None
                raise BodyError("broken", f"the answer body broke off ({type(exc).__name__})") from None
            if not chunk:
                if watchdog.fired:
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
    finally:
        watchdog.finish()
        if ok and not watchdog.fired:
            response.raw.release_conn()
        else:
            response.close()


def _declared_length(headers: Any) -> int | None:
    try:
        return int(headers.get("Content-Length"))
    except (TypeError, ValueError):
        return None
