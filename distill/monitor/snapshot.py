"""The monitor's view of a job: one snapshot built from the state directory's files.

A snapshot reads the job record, the status file the supervisor rewrites
every ``CHECK_INTERVAL``, the stop flag and the workers' heartbeats; nothing
else. It never lists the output folder (counts come from the status file), so
a refresh costs the same with a million results, and it never asks tmux what
a pane shows. Every field is read defensively: a missing, corrupt or foreign
status file becomes a ``problem`` line, never an exception.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from distill.core.redact import scrub_secrets
from distill.job.state import JOB_FILE, STATUS_FILE, StateDir, identity_alive
from distill.job.status import STATUS_FORMAT, iso
from distill.monitor.outage import waiting_line
from distill.results.atomic import read_json

SNAPSHOT_FORMAT = "diag-distill/monitor-v1"
STALE_AFTER_INTERVALS = 3
RECENT_SHOWN = 5

# States the supervisor decides; a heartbeat never overrides them.
SUPERVISOR_STATES = ("failed", "disabled", "respawning", "stopped")
ACTIVE_STATES = ("working", "backing_off")



@dataclass(frozen=True)
class MonitorConfig:
    """Where to look. ``output_dir`` and ``check_interval`` are fallbacks for what the status file says."""

    state_dir: Path
    output_dir: Path | None = None
    check_interval: float = 5.0
    tmux_socket: str | None = None
    session_prefix: str = "continuous_diag"


@dataclass
class EndpointRow:
    """One endpoint, as the freshest file knows it."""

    api: str
    state: str
    report: int | None = None
    step: str | None = None
    elapsed_s: float | None = None
    done: int = 0
    failed: int = 0
    calls: int = 0
    mean_latency_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost: float = 0.0
    tokens: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    reason: str = ""
    exit_code: int | None = None
    restarts: int = 0
    model: str = ""
    teacher: str = ""
    teacher_id: str = ""  # the teacher's one spelling (distill.core.teacher_id)
    heartbeat_age_s: float | None = None
    session: str = ""
    source: str = "status"


@dataclass
class Snapshot:
    """Everything one monitor refresh shows; ``to_dict()`` is the ``--json`` document."""

    taken_at: str
    taken_at_epoch: float
    state_dir: str
    status_file: str
    system: dict[str, Any]
    progress: dict[str, Any]
    endpoints: list[EndpointRow]
    endpoint_totals: dict[str, Any]
    outputs: dict[str, Any]
    recent: list[dict[str, Any]]
    failures_by_class: dict[str, int]
    tokens: dict[str, float]  # prompt, completion, cached (counts) and cost
    control: dict[str, Any]
    problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"format": SNAPSHOT_FORMAT, **asdict(self)}


# --- defensive readers: a status file from another program must not crash the monitor ---------------------


def _int(value: Any, default: int | None = 0) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return default


def _count(value: Any) -> int:
    return _int(value, 0) or 0


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return scrub_secrets(value) if isinstance(value, str) else ""


def _epoch(value: Any) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 string."""
    number = _float(value)
    if number is not None:
        return number
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.astimezone()
        return parsed.timestamp()
    return None


def _api_order(name: str) -> tuple[str, int, str]:
    head, _, tail = name.rpartition("_")
    return (head, int(tail), name) if tail.isdigit() else (name, 0, name)


# --- reading the files -----------------------------------------------------------------------------------------


def read_status_file(state: StateDir) -> tuple[dict[str, Any] | None, str | None]:
    """The status document and, when it cannot be used, one line saying why."""
    path = state.status_path
    if path.is_symlink():
        return None, f"status file {path} is a symbolic link; ignoring it (remove it)"
    if not path.exists():
        return None, None
    data = read_json(path)
    if not isinstance(data, dict):
        return None, (f"status file {path} is corrupt (not a JSON object); "
                      "it is rewritten on the next status update of a running job")
    return data, None


def _job_record(state: StateDir) -> tuple[dict[str, Any] | None, bool]:
    """The job record (possibly of a dead job) and whether its supervisor is alive."""
    path = state.path(JOB_FILE)
    job = None if path.is_symlink() else read_json(path)
    if not isinstance(job, dict):
        return None, False
    return job, identity_alive(job.get("identity"))


# --- building the snapshot ---------------------------------------------------------------------------------------


def _row_from_status(api: str, row: dict[str, Any], now: float) -> EndpointRow:
    since = _epoch(row.get("since"))
    calls = _count(row.get("calls"))
    prompt, completion = _count(row.get("prompt_tokens")), _count(row.get("completion_tokens"))
    state = _text(row.get("state")) or "not_started"
    return EndpointRow(
        api=api, state=state, report=_int(row.get("report"), None),
        step=row.get("step") if isinstance(row.get("step"), str) else None,
        elapsed_s=max(0.0, now - since) if since is not None else None,
        done=_count(row.get("done")), failed=_count(row.get("failed")), calls=calls,
        mean_latency_s=_float(row.get("mean_latency_s")), prompt_tokens=prompt, completion_tokens=completion,
        cached_tokens=_count(row.get("cached_tokens")), cost=_float(row.get("cost")) or 0.0,
        tokens=prompt + completion, failures={str(k): _count(v) for k, v in _dict(row.get("failures")).items()},
        last_error=_text(row.get("last_error")), reason=_text(row.get("reason")),
        exit_code=_int(row.get("exit_code"), None), restarts=_count(row.get("restarts")),
        model=_text(row.get("model")), teacher=_text(row.get("teacher")), teacher_id=_text(row.get("teacher_id")),
        heartbeat_age_s=None, source="status",
    )


def _row_from_beat(api: str, beat: dict[str, Any], alive: bool, status_row: dict[str, Any],
                   now: float) -> EndpointRow:
    """The heartbeat (its process ``alive`` or not) is fresher than the status row, except for what only
    the supervisor decides."""
    stats = _dict(beat.get("stats"))
    calls = _count(stats.get("calls"))
    latency = _float(stats.get("latency_s")) or 0.0
    prompt, completion = _count(stats.get("prompt_tokens")), _count(stats.get("completion_tokens"))
    beat_state = _text(beat.get("state")) or "idle"
    supervisor_state = _text(status_row.get("state"))
    reason = _text(beat.get("reason")) or _text(beat.get("note"))
    state = beat_state
    if beat_state != "exited" and not alive:
        state, reason = "died", "the worker process ended without writing an exit record"
    elif beat_state == "working":
        until = _float(beat.get("backing_off_until"))
        if until is not None and until > now:
            state = "backing_off"
            reason = _text(beat.get("backoff_reason")) or f"retrying in {until - now:.0f} s"
    if supervisor_state in SUPERVISOR_STATES and state in ("exited", "died", "disabled"):
        state, reason = supervisor_state, _text(status_row.get("reason")) or reason
    elif not reason and _count(status_row.get("restarts")):
        reason = _text(status_row.get("reason"))  # why the supervisor last restarted this worker
    working = state in ACTIVE_STATES
    since = _float(beat.get("step_since")) if working else None
    since = since if since is not None else _float(beat.get("since"))
    updated = _float(beat.get("updated"))
    return EndpointRow(
        api=api, state=state, report=_int(beat.get("report"), None) if working else None,
        step=beat.get("step") if working and isinstance(beat.get("step"), str) else None,
        elapsed_s=max(0.0, now - since) if since is not None else None,
        done=_count(stats.get("done")), failed=_count(stats.get("failed")), calls=calls,
        mean_latency_s=round(latency / calls, 3) if calls else None, prompt_tokens=prompt,
        completion_tokens=completion, cached_tokens=_count(stats.get("cached_tokens")),
        cost=_float(stats.get("cost")) or 0.0, tokens=prompt + completion,
        failures={str(k): _count(v) for k, v in _dict(stats.get("failures")).items()},
        last_error=_text(beat.get("last_error")), reason=reason, exit_code=_int(beat.get("exit_code"), None),
        restarts=_count(status_row.get("restarts")), model=_text(beat.get("model")),
        teacher=_text(beat.get("teacher")), teacher_id=_text(beat.get("teacher_id")),
        heartbeat_age_s=round(max(0.0, now - updated), 1) if updated is not None else None, source="heartbeat",
    )


def _recent(status: dict[str, Any], beats: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The last results, from the heartbeats (fresher, and they name the endpoint) then the status file."""
    sources: list[tuple[str, Any]] = []
    for api, beat in beats.items():
        recent = _dict(beat.get("stats")).get("recent")
        sources.extend((api, item) for item in (recent if isinstance(recent, list) else []))
    recent = status.get("recent")
    sources.extend(("", item) for item in (recent if isinstance(recent, list) else []))
    seen: dict[tuple[Any, Any], dict[str, Any]] = {}
    for api, item in sources:
        key = (item.get("report"), item.get("at")) if isinstance(item, dict) else None
        if key is None or key in seen:
            continue
        seen[key] = {
            "report": _int(item.get("report"), None), "status": _text(item.get("status")),
            "at": item.get("at") if isinstance(item.get("at"), str) else "",
            "findings": _int(item.get("findings"), None), "units": _int(item.get("units"), None),
            "bytes": _int(item.get("bytes"), None), "duration_s": _float(item.get("duration_s")),
            "error_class": _text(item.get("error_class")) or None, "api": api or None,
        }
    return sorted(seen.values(), key=lambda e: e["at"], reverse=True)[:RECENT_SHOWN]


def _system(job: dict[str, Any] | None, alive: bool, status: dict[str, Any] | None, status_kind: str,
            state: StateDir, config: MonitorConfig, live_workers: int, stop_requested: bool, now: float,
            problems: list[str]) -> dict[str, Any]:
    source = status or {}
    record = job if alive and job else {}
    interval = _float(source.get("check_interval")) or _float(record.get("check_interval")) or config.check_interval
    if alive:
        stopping = stop_requested or source.get("state") == "stopping"
        run_state = "stopping" if stopping else "running"
    elif status_kind != "missing":
        run_state = "stopped"
        if source.get("state") in ("running", "stopping"):
            problems.append("the supervisor is not running, but its last status said "
                            f"{source.get('state')!r}: it was killed or the machine restarted; "
                            "start the job again to resume where it stopped")
    else:
        run_state = "never_started"
    if not alive and live_workers:
        problems.append(f"{live_workers} worker(s) still running without a supervisor")
    started = _epoch(record.get("started_at")) or _epoch(source.get("start_time"))
    updated = _epoch(source.get("last_update_epoch")) or _epoch(source.get("last_update"))
    end = now if alive else (updated or now)
    age = max(0.0, now - updated) if updated is not None else None
    stale = bool(alive and age is not None and age > STALE_AFTER_INTERVALS * interval)
    if alive and status is None and not problems:
        problems.append("the job has just started: its first status is not written yet")
    if status_kind == "foreign":
        problems.append(f"status file {state.status_path} was not written by diag-distill "
                        f"(format {source.get('format')!r}); showing what can be read from it")
    output_dir = source.get("output_dir") or record.get("output_dir") or (config.output_dir and str(config.output_dir))
    return {
        "state": run_state, "job_id": _text(record.get("job_id")) or _text(source.get("job_id")) or None,
        "pid": _int(record.get("pid") or source.get("pid"), None),
        "started_at": iso(started), "uptime_s": round(max(0.0, end - started)) if started is not None else None,
        "last_update": iso(updated), "last_update_age_s": round(age, 1) if age is not None else None,
        "stale": stale, "stale_after_s": STALE_AFTER_INTERVALS * interval, "check_interval_s": interval,
        "input_dir": _text(source.get("input_dir") or record.get("input_dir")) or None,
        "output_dir": _text(output_dir) or None,
        "until_drained": bool(source.get("until_drained") or record.get("until_drained")),
    }


def _progress(status: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    counts = _dict(status.get("counts"))
    start = _int(status.get("start_number"), None)
    start = start if start is not None else _int(job.get("start"), None)
    return {
        "start_number": start, "end_number": _int(status.get("end_number", job.get("end")), None),
        "current_number": _int(status.get("current_number"), None),
        "done": _count(counts.get("done")), "failed": _count(counts.get("failed")),
        "pending": _count(counts.get("pending")), "in_flight": _count(counts.get("in_flight")),
        "existing": _count(counts.get("existing")), "done_this_job": _count(counts.get("done_this_job")),
        "failed_this_job": _count(counts.get("failed_this_job")),
        "changed": _count(counts.get("changed")),
        "changed_reports": [n for n in status.get("changed_reports") or [] if isinstance(n, int)]
        if isinstance(status.get("changed_reports"), list) else [],
        "total_processed": _count(status.get("total_processed")),
        "throughput_per_min": _float(status.get("throughput_per_min")) or 0.0,
        "eta_s": _int(status.get("eta_s"), None),
    }


def _control(state: StateDir, job: dict[str, Any], config: MonitorConfig, apis: list[str],
             stop_requested: bool) -> dict[str, Any]:
    socket = job.get("tmux_socket") if isinstance(job.get("tmux_socket"), str) else config.tmux_socket
    prefix = job.get("session_prefix") if isinstance(job.get("session_prefix"), str) else config.session_prefix
    tmux = "tmux" if not socket or socket == "default" else f"tmux -L {socket}"
    example = apis[0] if apis else "api_1"
    return {
        "stop_script": str(state.stop_script), "stop_flag": str(state.stop_flag),
        "stop_requested": stop_requested, "cancel_stop": "diag-distill stop --cancel",
        "attach": f"{tmux} attach -t {prefix}_{example}", "attach_template": f"{tmux} attach -t {prefix}_api_<N>",
        "detach": "Ctrl-b d", "quit": "Ctrl-C", "session_prefix": prefix, "tmux_socket": socket,
    }


def take_snapshot(config: MonitorConfig, *, now: float | None = None) -> Snapshot:
    """Read the state directory once and describe the job; never raises for bad or missing files."""
    now = time.time() if now is None else now
    state = StateDir(config.state_dir)
    problems: list[str] = []
    if not config.state_dir.is_dir():
        problems.append(f"state directory {config.state_dir} does not exist (DIAG_STATE_DIR); no job has run here")
    job, alive = _job_record(state)
    status, status_problem = read_status_file(state)
    if status_problem:
        problems.append(status_problem)
    status_kind = "ok" if status is not None else ("unusable" if status_problem else "missing")
    if status is not None and status.get("format") != STATUS_FORMAT:
        status_kind = "foreign"
    if alive and job and status is not None and status.get("job_id") not in (None, job.get("job_id")):
        status, status_kind = None, "previous_job"  # until the new job writes its first status
    job_id = (job or {}).get("job_id") if alive else (status or {}).get("job_id")
    beats = {api: b for api, b in state.read_heartbeats().items() if job_id is None or b.get("job_id") == job_id}
    beat_alive = {api: identity_alive(b.get("identity")) for api, b in beats.items()}
    live_workers = sum(1 for api, b in beats.items() if b.get("state") != "exited" and beat_alive[api])
    stop_requested = state.stop_requested()
    system = {"status_read": status_kind, **_system(job, alive, status, status_kind, state, config, live_workers,
                                                    stop_requested, now, problems)}
    if system["state"] == "never_started" and not problems:
        problems.append(f"no job has run on state directory {config.state_dir} yet (no {STATUS_FILE}); "
                        "start one with: make start START=<first report number>")
    source = status or {}
    rows = _dict(source.get("apis_status"))
    names = set(rows) | set(beats)
    if alive and job and isinstance(job.get("apis"), list):
        names |= {a for a in job["apis"] if isinstance(a, str)}
    apis = sorted(names, key=_api_order)
    control = _control(state, job or {}, config, apis, stop_requested)
    control["stop_reason"] = _text(source.get("stop_reason"))  # e.g. the --max-cost budget was reached
    endpoints: list[EndpointRow] = []
    for api in apis:
        row = _dict(rows.get(api))
        endpoint = (_row_from_beat(api, beats[api], beat_alive[api], row, now) if api in beats
                    else _row_from_status(api, row, now))
        if api not in beats and endpoint.state not in SUPERVISOR_STATES:
            if alive:
                endpoint.state, endpoint.report, endpoint.step = "not_started", None, None
            elif endpoint.state in (*ACTIVE_STATES, "idle", "paused"):
                # The job is over and its heartbeats are gone: the last status's "working" is history.
                endpoint.state, endpoint.report, endpoint.step = "exited", None, None
                endpoint.reason = endpoint.reason or "the job is not running"
        endpoint.session = f"{control['session_prefix']}_{api}"
        endpoints.append(endpoint)
    waiting = waiting_line(endpoints, now) if system["state"] in ("running", "stopping") else None
    problems.extend([waiting] if waiting else [])
    by_state = dict(Counter(endpoint.state for endpoint in endpoints))
    failures: Counter[str] = Counter()
    for endpoint in endpoints:
        failures.update(endpoint.failures)
    outputs = _dict(source.get("outputs"))
    return Snapshot(
        taken_at=iso(now) or "", taken_at_epoch=now, state_dir=str(config.state_dir),
        status_file=str(state.status_path), system=system, progress=_progress(source, job or {}),
        endpoints=endpoints,
        endpoint_totals={"endpoints": len(endpoints), "active": sum(by_state.get(s, 0) for s in ACTIVE_STATES),
                         "idle": by_state.get("idle", 0), "by_state": by_state},
        outputs={key: _count(outputs.get(key)) for key in ("raw", "normalized", "logs", "failed", "bytes_this_job")},
        recent=_recent(source, beats), failures_by_class=dict(sorted(failures.items(), key=lambda kv: -kv[1])),
        tokens={"prompt": sum(e.prompt_tokens for e in endpoints),
                "completion": sum(e.completion_tokens for e in endpoints),
                "cached": sum(e.cached_tokens for e in endpoints),
                "cost": round(sum(e.cost for e in endpoints), 6)},
        control=control, problems=problems,
    )
