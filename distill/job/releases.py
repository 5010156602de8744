"""A worker's releases of its claims when the state directory refuses them, and the claims backend's notices.

A release the state directory's disk refuses (full) is kept and sent before the next claim, so
a report is never left leased by a live worker that no longer works on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from distill.core.errors import OutputWriteError, StateDirError
from distill.job.claims_backend import ClaimsBackend


class Releases:
    """``release`` never raises for a refused write; ``send_kept`` (before each claim) raises until it succeeds."""

    def __init__(self, book: ClaimsBackend, say: Callable[[str], None]) -> None:
        self.book = book
        self.say = say
        self._kept: list[tuple[int, bool]] = []
        self._lock = threading.Lock()  # the committer thread releases too

    def release(self, number: int, *, finished: bool) -> None:
        try:
            self.book.release(number, finished=finished)
        except OutputWriteError as exc:
            with self._lock:
                self._kept.append((number, finished))
            self.say(f"report {number}: its claim could not be released yet: {exc}")
        except StateDirError as exc:  # the claims are gone or unreadable: the next start recomputes them
            self.say(f"report {number}: its claim could not be released: {exc}")

    def send_kept(self) -> None:
        while self._kept:
            number, finished = self._kept[0]
            self.book.release(number, finished=finished)
            with self._lock:
                self._kept.pop(0)

    def say_notices(self) -> None:
        """Say the backend's lines for people (files not used, state files rebuilt), once each."""
        notices, self.book.notices[:] = list(self.book.notices), []
        for line in notices:
            self.say(line)
