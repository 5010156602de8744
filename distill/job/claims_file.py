"""The file backend's claims file and index, as read from disk: their shape is checked, never trusted.

A claims file someone edited, truncated or wrote from another version gives one
``StateDirError`` naming the file and what is wrong, never an ``AttributeError`` deep in a claim.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import sys
import threading
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill.core.errors import JobNotStarted, StateDirError
from distill.results.atomic import refuse_symlink

#: Waiters queue here with a blocking flock before taking the claims filelock, which waits by
#: polling (every 50 ms): sleeping in the kernel, the next waiter enters as soon as the holder leaves.
CLAIMS_QUEUE = "continuous_diag_claims.queue"

_MISSING = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shape_problem(doc: Any) -> str | None:
    """What is wrong with a parsed claims document, or ``None`` when it has the shape claims need."""
    if not isinstance(doc, dict):
        return f"it holds {type(doc).__name__}, not an object"
    checks: list[tuple[str, bool]] = [
        ("start", _is_int(doc.get("start"))),
        ("end", doc.get("end") is None or _is_int(doc.get("end"))),
        ("counter", _is_int(doc.get("counter"))),
        ("leases", isinstance(doc.get("leases"), dict)
         and all(isinstance(k, str) and k.isascii() and k.isdigit() and isinstance(v, dict)
                 for k, v in doc["leases"].items())),
        ("returned", isinstance(doc.get("returned"), list) and all(_is_int(n) for n in doc["returned"])),
        ("scan", isinstance(doc.get("scan"), dict) and _is_int(doc["scan"].get("generation"))
         and _is_int(doc["scan"].get("mtime_ns")) and _is_number(doc["scan"].get("at"))),
        ("strikes", isinstance(doc.get("strikes", {}), dict)),
        ("settling", isinstance(doc.get("settling", {}), dict)
         and all(isinstance(k, str) and k.isascii() and k.isdigit() and _is_number(v)
                 for k, v in doc.get("settling", {}).items())),
    ]
    wrong = [name for name, ok in checks if not ok]
    if wrong:
        return f"malformed {', '.join(repr(name) for name in wrong)}"
    return None


def malformed(path: Path, why: str) -> StateDirError:
    return StateDirError(f"claims file {path} is malformed ({why}); the job cannot claim from it: stop the job "
                         f"and start it again (claims are recomputed from the output folder)")


def read_claims(path: Path, state_root: Path) -> dict[str, Any]:
    """The claims document at ``path``; ``JobNotStarted`` when there is none, ``StateDirError`` when malformed."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise JobNotStarted(f"no job has been started on state directory {state_root} (run start first; "
                            f"{path.name} is missing)") from None
    except OSError as exc:
        raise StateDirError(f"cannot read claims file {path}: {exc.strerror}") from None
    try:
        doc = json.loads(data)
    except ValueError:
        raise malformed(path, "not valid JSON" if data.strip() else "empty") from None
    problem = shape_problem(doc)
    if problem is not None:
        raise malformed(path, problem)
    return doc


def leftover_problem(path: Path) -> str | None:
    """One line about a claims file left by an earlier job that ``start`` cannot use, or ``None``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"claims file {path} cannot be read ({exc.strerror}); claims are recomputed from the output folder"
    try:
        doc = json.loads(data)
    except ValueError:
        doc = _MISSING
    problem = "not valid JSON" if doc is _MISSING else _leftover_shape(doc)
    if problem is None:
        return None
    return f"claims file {path} left by an earlier job is malformed ({problem}); replacing it (claims are " \
           f"recomputed from the output folder)"


def _leftover_shape(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return f"it holds {type(doc).__name__}, not an object"
    leases = doc.get("leases", {})
    if not isinstance(leases, dict) or not all(isinstance(v, dict) for v in leases.values()):
        return "malformed 'leases'"
    return None


def live_leases(doc: Any) -> dict[str, Any]:
    """The leases of a leftover claims document whose shape is usable; ``{}`` otherwise."""
    if _leftover_shape(doc) is not None:
        return {}
    return {str(n): lease for n, lease in doc.get("leases", {}).items()}


def counter_problem(path: Path, counter: int) -> str | None:
    """One line when the counter file is missing, malformed or edited (it is rewritten then), else ``None``."""
    try:
        text: str | None = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError):
        text = "?"
    if text == str(counter):
        return None
    why = ("missing" if text is None else "malformed" if not (text.isascii() and text.isdigit())
           else f"showing {text} (editing it changes nothing)")
    return f"counter file {path} was {why}; rewrote it: {counter}"


def index_bytes(numbers: array[int]) -> bytes:
    """The index file's content: ``numbers`` as little-endian int64 on every machine."""
    if sys.byteorder == "little":
        return numbers.tobytes()
    swapped = array("q", numbers)
    swapped.byteswap()
    return swapped.tobytes()


def parse_index(data: bytes) -> array[int] | None:
    """The index file's numbers (little-endian int64, strictly increasing); ``None`` when malformed."""
    if len(data) % 8:
        return None
    index = array("q")
    index.frombytes(data)
    if sys.byteorder != "little":
        index.byteswap()
    if any(a >= b for a, b in itertools.pairwise(index)):
        return None
    return index


class ClaimsQueue:
    """An flock on the queue file, held around every claims transaction.

    When the name no longer leads to the file this process holds (deleted or replaced), the file is
    opened again: a newcomer would lock the new file and never wait for us.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._thread_lock = threading.Lock()  # a worker claims on one thread and releases on another

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _open(self) -> int:
        refuse_symlink(self.path)
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateDirError(f"cannot open {self.path}: {exc.strerror}") from None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            fd = self._lock_current()
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock_current(self) -> int:
        while True:
            if self._fd is None:
                self._fd = self._open()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            held = os.fstat(self._fd)
            try:
                named = os.stat(self.path, follow_symlinks=False)
                if (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
                    return self._fd
            except FileNotFoundError:
                pass
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
