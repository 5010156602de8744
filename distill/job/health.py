"""Endpoint health: ``up`` or ``down``, and when a down endpoint is probed again.

An endpoint is ``up`` until ``down_after`` calls in a row fail for a reason the
endpoint is to blame for: refused, reset, timed out, 5xx, a body that is not a
chat completion. Then it is ``down``: its worker gives its report back and
probes the endpoint instead of taking work. One successful call or probe makes
it ``up`` again.

Probe waits grow: after the n-th failed probe since going down the ceiling is
``min(probe_max, probe_min * 2**n)``, and the wait is drawn uniformly from the
upper half of it, never below ``probe_min``. The jitter keeps sixteen workers
of one outage from probing in step; the cap bounds how long a recovered
endpoint stays unused (at most ``probe_max``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from distill.core.config import Endpoint

UP = "up"
DOWN = "down"


class EndpointHealth:
    """The health of one endpoint, kept by its worker. ``clock`` and ``rng`` are injected for tests."""

    def __init__(self, *, down_after: int = 3, probe_min_s: float = 2.0, probe_max_s: float = 60.0,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        if down_after < 1 or probe_min_s <= 0 or probe_max_s < probe_min_s:
            raise ValueError("down_after >= 1 and 0 < probe_min_s <= probe_max_s are required")
        self.down_after = down_after
        self.probe_min_s = probe_min_s
        self.probe_max_s = probe_max_s
        self._clock = clock
        self._rng = rng or random.Random()
        self.state = UP
        self.since = clock()
        self.failures = 0  # calls failed in a row, for the endpoint's sake
        self.probes = 0  # probes failed since the endpoint went down
        self.last_error = ""

    @classmethod
    def for_endpoint(cls, endpoint: Endpoint, **injected: Any) -> EndpointHealth:
        """Health with the endpoint's own ``down_after``, ``probe_min`` and ``probe_max``."""
        return cls(down_after=endpoint.down_after, probe_min_s=endpoint.probe_min_s,
                   probe_max_s=endpoint.probe_max_s, **injected)

    @property
    def up(self) -> bool:
        return self.state == UP

    def failed(self, reason: str, count: int = 1) -> bool:
        """``count`` more calls failed in a row; True when that made the endpoint go down now."""
        self.failures += max(1, count)
        self.last_error = reason
        if self.state == UP and self.failures >= self.down_after:
            self.state, self.since, self.probes = DOWN, self._clock(), 0
            return True
        return False

    def probe_failed(self, reason: str) -> None:
        """A probe of the down endpoint failed: the next wait grows."""
        self.probes += 1
        self.failed(reason)

    def succeeded(self) -> float | None:
        """A call or probe succeeded; the seconds it had been down when that made it up, else ``None``."""
        self.failures = 0
        if self.state == UP:
            return None
        down_for = self._clock() - self.since
        self.state, self.since, self.probes = UP, self._clock(), 0
        return down_for

    def probe_ceiling(self) -> float:
        """The longest the next probe waits: ``probe_min`` doubled per failed probe, capped at ``probe_max``."""
        return min(self.probe_max_s, self.probe_min_s * 2.0 ** min(self.probes, 60))

    def next_probe_delay(self) -> float:
        """Seconds to wait before the next probe, in ``[max(probe_min, ceiling / 2), ceiling]``."""
        ceiling = self.probe_ceiling()
        return max(self.probe_min_s, self._rng.uniform(ceiling / 2.0, ceiling))

    def to_dict(self) -> dict[str, Any]:
        """For the heartbeat: ``health``, since when, why (the last error) and the failures in a row."""
        return {"health": self.state, "health_since": self.since, "failures_in_a_row": self.failures,
                "down_reason": self.last_error if self.state == DOWN else ""}
