"""A worker's releases of its claims when the state directory refuses them, the claims backend's notices,
and what an idle worker says it waits for (one line per wait, not one per look).

A release the state directory's disk refuses (full) is kept and sent before the next claim, so
a report is never left leased by a live worker that no longer works on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from distill.core.errors import OutputWriteError, StateDirError
from distill.core.words import counted
from distill.job.claims import SETTLING_HELD
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
        """Say what the last look at the claims found (``say_notices``), then send the releases kept."""
        self.say_notices()
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


class IdleLines:
    """An idle worker's state and line: why it waits (a note still being written, a state file), said once."""

    def __init__(self, book: ClaimsBackend, settle_s: float, *, set_state: Callable[..., Any],
                 say: Callable[[str], None], wait: Callable[[float], None]) -> None:
        self.book, self.settle_s = book, settle_s
        self.set_state, self.say, self._wait = set_state, say, wait
        self.said = ""  # the last line said

    def nothing_to_claim(self, pause: float) -> None:
        """Wait ``pause``, or until the first note still being written may settle."""
        settling = self.book.settling
        if not settling:
            self.set_state("idle")
            self.said = ""
            return self._wait(pause)
        soonest = min(settling.values()) - time.time()
        many = "at least " if len(settling) >= SETTLING_HELD else ""
        self.wait(f"waiting for {many}{counted(len(settling), 'note')} to settle (unchanged for SETTLE_S "
                  f"{self.settle_s:g} s before a claim)", max(0.05, min(pause, soonest)))

    def wait(self, note: str, pause: float) -> None:
        self.set_state("idle", note=note)
        if note != self.said:
            self.say(note)
            self.said = note
        self._wait(pause)
