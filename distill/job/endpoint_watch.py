"""A worker's watch over its endpoint's health: the verdict when the endpoint gives up on a report,
and probing while the endpoint is down.

When the endpoint gives up on a report (``EndpointUnavailable``), the endpoint
is probed at once. A probe answered means the endpoint is up and the report
failed here for its own sake: the report is struck for this endpoint and left to
another, and it fails once two endpoints have struck it. A probe not answered
means an outage: nothing is written, the report goes back with its checkpoints,
and the endpoint counts the failures toward going ``down``. A down endpoint is
probed, each wait longer (``distill.job.health``), until a probe is answered.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from distill.core.config import Endpoint
from distill.core.errors import ClaimsUnavailable, DistillError, EndpointAuthError, EndpointUnavailable
from distill.job.claims_backend import ClaimsBackend
from distill.job.health import EndpointHealth

#: A report fails as ``api_unavailable`` only after this many endpoints, each up otherwise, failed on it.
STRIKES_TO_FAIL = 2


def failures_in_a_row(calls: list[Any]) -> int:
    """How many of the last calls failed, back to the last one that succeeded."""
    return next((i for i, call in enumerate(reversed(calls)) if call.status == "ok"), len(calls))


class EndpointWatch:
    """Health, verdicts and probes for one worker's endpoint."""

    def __init__(self, endpoint: Endpoint, book: ClaimsBackend, *, say: Callable[[str], None],
                 set_state: Callable[..., None], wait: Callable[[float], None], stop_wanted: Callable[[], bool],
                 health: EndpointHealth | None = None) -> None:
        self.endpoint = endpoint
        self.book = book
        self.health = health or EndpointHealth.for_endpoint(endpoint)
        self._say = say
        self._set_state = set_state
        self._wait = wait
        self._stop_wanted = stop_wanted
        self._client: Any = None  # a ChatClient of its own, made at the first probe

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def probe(self) -> str:
        """``""`` when the endpoint answers a minimal request, else why not; raises ``EndpointAuthError``."""
        if self.endpoint.is_local:
            return ""
        if self._client is None:
            from distill.extraction.http_client import ChatClient

            self._client = ChatClient(self.endpoint)
        reason: str = self._client.probe()
        return reason

    def judge(self, number: int, exc: EndpointUnavailable) -> str | None:
        """The endpoint gave up on report ``number``: ``None`` hands the report back, a string fails it
        (it failed on two endpoints that were up otherwise) and says why."""
        try:
            reason = self.probe()
        except EndpointAuthError:
            reason = "the probe's key was refused"
        if reason:  # the endpoint itself is failing: an outage, not the report's doing
            self.health.failed(str(exc), count=failures_in_a_row(getattr(exc, "calls", [])) + 1)
            return None
        self.health.succeeded()
        try:
            struck = self.book.strike(number, self.endpoint.name)
        except DistillError:  # the claims store is away: handed back without the mark
            return None
        if len(struck) >= STRIKES_TO_FAIL:
            return f"it failed on {len(struck)} endpoints that answered otherwise ({', '.join(struck)})"
        self._say(f"report {number}: failed here although {self.endpoint.name} answers a probe; "
                  "left to another endpoint")
        return None

    def wait_until_up(self, *, until_drained: bool) -> str | None:
        """Probe the down endpoint until a probe is answered (``None``), or say why the worker should exit
        instead: ``"disabled: ..."`` (the key was refused), ``"drained"`` (until drained, nothing is left)."""
        since = datetime.fromtimestamp(self.health.since).strftime("%H:%M:%S")
        self._say(f"endpoint down since {since}: {self.health.last_error}; probing it while other endpoints "
                  "take the reports")
        while not self._stop_wanted():
            delay = self.health.next_probe_delay()
            self._set_state("down", reason=f"down since {since}: {self.health.last_error}",
                            next_probe_at=time.time() + delay, probes=self.health.probes)
            self._wait(delay)
            if self._stop_wanted():
                break
            try:
                reason = self.probe()
            except EndpointAuthError as exc:
                self._set_state("disabled", reason=str(exc))
                return f"disabled: {exc}"
            if not reason:
                down_for = self.health.succeeded() or 0.0
                self._say(f"endpoint up again after {down_for:.0f} s down; claiming resumes")
                self._set_state("idle")
                return None
            self.health.probe_failed(reason)
            with contextlib.suppress(ClaimsUnavailable):
                if until_drained and self.book.drained():
                    return "drained"
        return None
