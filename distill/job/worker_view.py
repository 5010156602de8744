"""What the supervisor knows of one worker beyond its heartbeat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class WorkerView:
    """What the supervisor knows of one worker beyond its heartbeat."""

    state: str = "starting"
    reason: str = ""
    restarts: int = 0
    fast_failures: int = 0
    started_at: float = 0.0
    respawn_at: float | None = None
    finished: bool = False

    def as_dict(self) -> dict[str, Any]:
        shown = self.state if self.state in ("failed", "disabled", "exited", "respawning", "stopped") else ""
        return {"state": shown, "reason": self.reason, "restarts": self.restarts}
