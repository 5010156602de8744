"""Finishing commits on a thread, so a worker's next call starts while the fsyncs run.

A done report's outputs are already written under temporary names when they
reach the committer (``OutputStore.stage_done``), so a full disk shows at
once, in the worker. The committer makes them durable and visible, one report
at a time, and only then lets the worker release the claim: a crash before
that leaves the report claimed by a dead process, handed out again, and
finished from its checkpoints without a new call.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from distill.core.errors import OutputWriteError
from distill.extraction.pipeline import Outcome, StagedCommit

Done = Callable[[StagedCommit, Outcome], None]
Failed = Callable[[StagedCommit, Outcome, OutputWriteError], None]


class Committer:
    """One background thread; at most one commit in progress and none waiting."""

    def __init__(self, on_done: Done, on_failed: Failed) -> None:
        self._on_done = on_done
        self._on_failed = on_failed
        self._work: queue.Queue[tuple[StagedCommit, Outcome] | None] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="committer", daemon=True)
        self._thread.start()

    def submit(self, pending: StagedCommit, outcome: Outcome) -> None:
        """Queue a commit after the previous one has finished (so a slow disk slows the worker down)."""
        self._idle.wait()
        self._idle.clear()
        self._work.put((pending, outcome))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no commit is in progress; False on timeout."""
        return self._idle.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Finish what was submitted, then end the thread."""
        self._work.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            pending, outcome = item
            try:
                pending.finish()
            except OutputWriteError as exc:
                self._on_failed(pending, outcome, exc)
            else:
                self._on_done(pending, outcome)
            finally:
                self._idle.set()
