"""The job's line about down endpoints: when every running endpoint is down, the job waits, and says
since when and why."""

from __future__ import annotations

from datetime import datetime
from typing import Any

#: Endpoint states of a worker that still runs (a down endpoint's worker runs: it probes).
RUNNING_STATES = ("working", "backing_off", "idle", "paused", "down")


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S")


def waiting_line(endpoints: list[Any], now: float) -> str | None:
    """One line when every running endpoint is down (``None`` otherwise): since when the job waits, and why."""
    running = [row for row in endpoints if row.state in RUNNING_STATES]
    down = [row for row in running if row.state == "down"]
    if not down or len(down) < len(running):
        return None
    # The job waits since the last endpoint went down; its reason is that endpoint's.
    last = min(down, key=lambda row: row.elapsed_s if row.elapsed_s is not None else 0.0)
    since = now - (last.elapsed_s or 0.0)
    reason = last.reason.split(": ", 1)[1] if last.reason.startswith("down since ") else last.reason
    return (f"every endpoint is down ({len(down)}), waiting since {_clock(since)}: {last.api}: {reason}; "
            "reports wait in the pool and nothing is failed for an outage; each endpoint is probed until it answers")


def status_lines(snap: Any) -> list[str]:
    """Plain lines for ``diag-distill status``: the job, each endpoint (a down one with since when and why),
    and the job's problems (among them the line saying the job waits for its endpoints)."""
    from distill.monitor.view import duration

    system, progress = snap.system, snap.progress
    lines = [f"job {system['job_id'] or '-'}: {system['state']}; done {progress['done']}, failed "
             f"{progress['failed']}, pending {progress['pending']}, in flight {progress['in_flight']}"]
    for row in snap.endpoints:
        doing = f"report {row.report} {row.step or ''}".strip() if row.report is not None else row.reason
        state = "DOWN" if row.state == "down" else row.state
        lines.append(f"{row.api:<7} {state:<11} {duration(row.elapsed_s):>7}  {' '.join(doing.split())}".rstrip())
    lines.extend(f"! {problem}" for problem in snap.problems)
    return lines
