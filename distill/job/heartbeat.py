"""A worker's heartbeat: what it has done (``WorkerStats``) and the file that says so (``Heartbeat``).

The heartbeat file is rewritten from a thread of its own: at most once per
``COALESCE_S`` after a state change, and every ``EVERY_S`` regardless, so no
file write sits between a report's calls and a hung worker shows as stale.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distill.core.clock import utc_now
from distill.core.errors import OutputWriteError
from distill.core.prices import Price
from distill.extraction.pipeline import Outcome
from distill.job.state import StateDir

EVERY_S = 5.0
COALESCE_S = 1.0
RECENT_KEPT = 5


@dataclass
class WorkerStats:
    """What a worker has done in this job; carried across its restarts."""

    done: int = 0
    failed: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost: float = 0.0  # what this worker's calls cost, when its model has a price
    latency_s: float = 0.0
    bytes_written: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_KEPT))

    def add(self, outcome: Outcome, size: int, price: Price | None = None) -> None:
        if outcome.status == "done":
            self.done += 1
        else:
            self.failed += 1
            self.failures[outcome.error_class] = self.failures.get(outcome.error_class, 0) + 1
        self.calls += len(outcome.calls)
        self.bytes_written += size
        self.prompt_tokens += sum(c.prompt_tokens for c in outcome.calls)
        self.completion_tokens += sum(c.completion_tokens for c in outcome.calls)
        self.cached_tokens += sum(c.cached_tokens for c in outcome.calls)
        if price is not None:
            self.cost += price.cost(sum(c.prompt_tokens for c in outcome.calls),
                                    sum(c.cached_tokens for c in outcome.calls),
                                    sum(c.completion_tokens for c in outcome.calls))
        self.latency_s += sum(c.latency_s for c in outcome.calls)
        self.recent.append({"report": outcome.number, "status": outcome.status, "at": utc_now(),
                            "findings": outcome.findings, "units": outcome.units, "bytes": size,
                            "error_class": outcome.error_class, "duration_s": round(outcome.duration_s, 3)})

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "failed": self.failed, "calls": self.calls,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cached_tokens": self.cached_tokens, "cost": round(self.cost, 8), "latency_s": round(self.latency_s, 3), "bytes_written": self.bytes_written,
                "failures": dict(self.failures), "recent": list(self.recent)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerStats:
        stats = cls()
        for name in ("done", "failed", "calls", "prompt_tokens", "completion_tokens", "cached_tokens",
                     "bytes_written"):
            setattr(stats, name, int(data.get(name, 0)))
        stats.latency_s = float(data.get("latency_s", 0.0))
        stats.cost = float(data.get("cost", 0.0))
        stats.failures = dict(data.get("failures", {}))
        stats.recent.extend(data.get("recent", []))
        return stats


class Heartbeat:
    """Writes ``record()`` to the worker's heartbeat file; ``soon()`` asks for a write without waiting for it."""

    def __init__(self, state: StateDir, api: str, record: Callable[[], dict[str, Any]],
                 say: Callable[[str], None]) -> None:
        self._state = state
        self._api = api
        self._record = record
        self._say = say
        self._due = threading.Event()
        self._stopped = threading.Event()
        self._write_lock = threading.Lock()  # the thread and a final write from the worker never interleave
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def soon(self) -> None:
        """Write within ``COALESCE_S``; at once when the thread is not running."""
        if self._thread is None:
            self.write()
        else:
            self._due.set()

    def write(self) -> None:
        try:
            with self._write_lock:
                self._state.write_heartbeat(self._api, self._record())
        except OutputWriteError as exc:
            if not self._failing:  # one line while it fails, not one every few seconds
                self._say(f"cannot write heartbeat: {exc}")
            self._failing = True
        else:
            if self._failing:
                self._say("heartbeat written again")
            self._failing = False

    def stop(self) -> None:
        """End the thread; later ``soon()`` calls write at once (the exit record)."""
        self._stopped.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._due.wait(EVERY_S)
            self._due.clear()
            if self._stopped.is_set():
                return
            self.write()
            self._stopped.wait(COALESCE_S)
