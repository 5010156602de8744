"""The status file: one atomic snapshot of the job, rewritten every ``CHECK_INTERVAL``.

Built from the claim book and the workers' heartbeats only, so a refresh
costs the same with a million output files. The monitor reads nothing else
(plus the heartbeats, for live detail between two snapshots).
"""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime, timezone
from typing import Any

STATUS_FORMAT = "diag-distill/status-v1"
THROUGHPUT_WINDOW_S = 300.0


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


class Throughput:
    """Reports per minute over the last five minutes, from (time, processed) samples."""

    def __init__(self, window_s: float = THROUGHPUT_WINDOW_S) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, processed: int) -> None:
        self.samples.append((now, processed))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()

    def per_minute(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return 0.0 if t1 <= t0 else (n1 - n0) * 60.0 / (t1 - t0)


def endpoint_row(api: str, beat: dict[str, Any] | None, supervisor_view: dict[str, Any]) -> dict[str, Any]:
    """One endpoint's line in ``apis_status``: the heartbeat, overlaid by what the supervisor knows."""
    beat = beat or {}
    stats = beat.get("stats", {})
    calls = int(stats.get("calls", 0))
    state = supervisor_view.get("state") or beat.get("state") or "not_started"
    row: dict[str, Any] = {
        "state": state,
        "report": beat.get("report") if state == "working" else None,
        "step": beat.get("step") if state == "working" else None,
        "since": iso(beat.get("step_since") or beat.get("since")),
        "endpoint": beat.get("endpoint", ""),
        "model": beat.get("model", ""),
        "teacher": beat.get("teacher", ""),
        "teacher_id": beat.get("teacher_id", ""),
        "done": int(stats.get("done", 0)),
        "failed": int(stats.get("failed", 0)),
        "calls": calls,
        "prompt_tokens": int(stats.get("prompt_tokens", 0)),
        "completion_tokens": int(stats.get("completion_tokens", 0)),
        "cached_tokens": int(stats.get("cached_tokens", 0)),
        "cost": round(float(stats.get("cost", 0.0)), 6),
        "mean_latency_s": round(float(stats.get("latency_s", 0.0)) / calls, 3) if calls else None,
        "failures": stats.get("failures", {}),
        "last_error": beat.get("last_error", ""),
        "health": beat.get("health", "up") if beat else None,
        "down_since": iso(beat.get("health_since")) if beat.get("health") == "down" else None,
        "down_reason": beat.get("down_reason", "") if beat.get("health") == "down" else "",
        "backing_off_until": iso(beat.get("backing_off_until")) if state == "working" else None,
        "reason": supervisor_view.get("reason") or beat.get("reason", ""),
        "exit_code": beat.get("exit_code"),
        "restarts": supervisor_view.get("restarts", 0),
        "pid": beat.get("pid"),
        "heartbeat": iso(beat.get("updated")),
    }
    if state == "working" and beat.get("backing_off_until") and beat["backing_off_until"] > time.time():
        row["state"] = "backing_off"
    return row


def endpoints_down(apis: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The down endpoints, each since when and why; ``waiting`` when every running endpoint is down
    (the job waits for one to answer a probe), since the last one went down."""
    down = {api: {"since": row["down_since"], "reason": row["down_reason"]}
            for api, row in apis.items() if row["state"] == "down"}
    running = [api for api, row in apis.items()
               if row["state"] in ("working", "backing_off", "idle", "paused", "down")]
    waiting = bool(down) and len(down) == len(running)
    since = max((d["since"] or "" for d in down.values()), default="") if waiting else ""
    return {"count": len(down), "waiting": waiting, "waiting_since": since or None, "endpoints": down}


def build_status(*, job: dict[str, Any], state: str, claims: dict[str, Any], begin_scan: dict[str, Any],
                 begin_outputs: dict[str, int], beats: dict[str, dict[str, Any]],
                 views: dict[str, dict[str, Any]], throughput: Throughput, now: float) -> dict[str, Any]:
    """The whole status document (the keys users' scripts read first)."""
    apis = {api: endpoint_row(api, beats.get(api), views.get(api, {})) for api in job["apis"]}
    done_job = sum(row["done"] for row in apis.values())
    failed_job = sum(row["failed"] for row in apis.values())
    scan = claims.get("scan", {})
    done = int(begin_scan.get("done", 0)) + done_job
    failed = int(begin_scan.get("failed", 0)) + failed_job
    in_flight = len(claims.get("leases", {}))
    existing = int(scan.get("existing", begin_scan.get("existing", 0)))
    pending = max(0, existing - done - failed - in_flight)
    throughput.add(now, done_job + failed_job)
    rate = throughput.per_minute()
    recent = sorted((r for b in beats.values() for r in b.get("stats", {}).get("recent", [])),
                    key=lambda r: r.get("at", ""), reverse=True)[:5]
    failures: dict[str, int] = {}
    for row in apis.values():
        for name, count in row["failures"].items():
            failures[name] = failures.get(name, 0) + int(count)
    states = [row["state"] for row in apis.values()]
    return {
        "format": STATUS_FORMAT,
        "state": state,
        "start_time": job["started_at"],
        "start_number": job["start"],
        "end_number": job.get("end"),
        "current_number": claims.get("counter", job["start"] - 1),
        "total_processed": done_job + failed_job,
        "apis_status": apis,
        "last_update": iso(now),
        "last_update_epoch": now,
        "check_interval": job["check_interval"],
        "job_id": job["job_id"],
        "pid": job["pid"],
        "input_dir": job["input_dir"],
        "output_dir": job["output_dir"],
        "until_drained": job["until_drained"],
        "counts": {"done": done, "failed": failed, "pending": pending, "in_flight": in_flight,
                   "existing": existing, "done_this_job": done_job, "failed_this_job": failed_job},
        "throughput_per_min": round(rate, 2),
        "eta_s": round(pending / rate * 60.0) if rate > 0 and pending else None,
        "active": states.count("working") + states.count("backing_off"),
        "endpoints_down": endpoints_down(apis),
        "idle": states.count("idle"),
        "outputs": {
            "raw": begin_outputs.get("raw", 0) + done_job,
            "normalized": begin_outputs.get("normalized", 0) + done_job,
            "logs": begin_outputs.get("logs", 0) + done_job + failed_job,
            "failed": begin_outputs.get("failed", 0) + failed_job,
            "bytes_this_job": sum(int(b.get("stats", {}).get("bytes_written", 0)) for b in beats.values()),
        },
        "recent": recent,
        "failures_by_class": failures,
        "tokens": {"prompt": sum(r["prompt_tokens"] for r in apis.values()),
                   "completion": sum(r["completion_tokens"] for r in apis.values()),
                   "cached": sum(r["cached_tokens"] for r in apis.values())},
        "cost": round(sum(r["cost"] for r in apis.values()), 6),
    }
