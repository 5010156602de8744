"""Rendering a monitor snapshot with rich: seven panels that fit an 80-column terminal.

``render`` turns a ``Snapshot`` into one renderable; ``watch`` repaints it in
place every interval (``rich.live.Live`` without auto-refresh, so the screen
is redrawn once per tick and never cleared: no flicker) until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from distill.core.teacher_id import OFFLINE_TEACHER_VERSION, TeacherId
from distill.monitor.snapshot import EndpointRow, Snapshot

DEFAULT_WIDTH = 80
PANEL_CHROME = 4  # two borders and one column of padding on each side

STATE_LABELS = {
    "working": ("working", "green"), "idle": ("idle", "cyan"), "backing_off": ("backing off", "yellow"),
    "disabled": ("disabled", "magenta"), "failed": ("failed", "bold red"), "not_started": ("not started", "dim"),
    "exited": ("exited", "blue"), "died": ("died", "bold red"), "respawning": ("respawning", "yellow"),
    "paused": ("paused", "yellow"), "stopped": ("stopped", "blue"), "down": ("DOWN", "bold white on red"),
}
SYSTEM_LABELS = {
    "running": ("running", "bold green"), "stopping": ("stopping", "bold yellow"),
    "stopped": ("stopped", "bold blue"), "never_started": ("never started", "bold"),
}


def duration(seconds: float | None) -> str:
    """A short human duration: ``42s``, ``3m 05s``, ``2h 03m``, ``4d 07h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def size(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover - the loop returns at GB


def compact(number: int) -> str:
    """``950``, ``12.3k``, ``4.56M``: token counts that fit a narrow column."""
    if number < 10_000:
        return str(number)
    if number < 1_000_000:
        return f"{number / 1000:.1f}k"
    return f"{number / 1_000_000:.2f}M"


def clock_time(iso_text: str | None) -> str:
    """Local ``HH:MM:SS`` of an ISO timestamp, with the date when it is not today."""
    if not iso_text:
        return "-"
    try:
        moment = datetime.fromisoformat(iso_text).astimezone()
    except ValueError:
        return iso_text[:19]
    if moment.date() == datetime.now().astimezone().date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def _panel(body: RenderableType, title: str) -> Panel:
    return Panel(body, title=f"[bold]{title}[/]", title_align="left", box=box.ROUNDED, padding=(0, 1))


def _pairs(*items: tuple[str, str]) -> Text:
    text = Text()
    for index, (label, value) in enumerate(items):
        if index:
            text.append("  ")
        text.append(f"{label} ", style="dim")
        text.append(value, style="bold")
    return text


def system_head(snap: Snapshot, *, with_pid: bool = True) -> Text:
    """``● running  up 1h 02m  job …``: the job's state in one line."""
    system = snap.system
    label, style = SYSTEM_LABELS.get(system["state"], (system["state"], "bold"))
    head = Text.assemble(("● ", style), (label, style))
    if system["state"] != "never_started":
        head.append("  up " if system["state"] in ("running", "stopping") else "  ran ", style="dim")
        head.append(duration(system["uptime_s"]), style="bold")
    if system["job_id"]:
        head.append(f"  job {system['job_id']}", style="dim")
        if system["pid"] and with_pid:
            head.append(f" (pid {system['pid']})", style="dim")
    return head


def system_panel(snap: Snapshot) -> Panel:
    system = snap.system
    lines: list[RenderableType] = [system_head(snap)]
    if system["last_update"]:
        when = f"last update {clock_time(system['last_update'])}, {duration(system['last_update_age_s'])} ago"
        if system["stale"]:
            lines.append(Text(f"STALE: {when}; the status is rewritten every {system['check_interval_s']:g} s, "
                              "is the supervisor hung?", style="bold red"))
        else:
            lines.append(Text(when, style="dim"))
    for problem in snap.problems:
        lines.append(Text(f"! {problem}", style="yellow"))
    return _panel(Group(*lines), "System")


def progress_panel(snap: Snapshot) -> Panel:
    p = snap.progress
    if snap.system["status_read"] != "ok" and not p["start_number"]:
        return _panel(Text("no figures yet (no usable status file)", style="dim"), "Progress")
    return _panel(Group(progress_counts(snap), progress_rate(snap), token_line(snap)), "Progress")


def progress_counts(snap: Snapshot) -> Text:
    """Start and current number, and the range's reports by state."""
    p = snap.progress
    changed = [("changed", f"{p['changed']} (--redo-changed)")] if p.get("changed") else []
    return _pairs(("start", _number(p["start_number"])), ("current", _number(p["current_number"])),
                  ("done", str(p["done"])), ("failed", str(p["failed"])), ("pending", str(p["pending"])),
                  ("in flight", str(p["in_flight"])), *changed)


def progress_rate(snap: Snapshot) -> Text:
    """Throughput and ETA while the job runs; a stopped job has neither."""
    p = snap.progress
    this_job = ("this job", f"{p['done_this_job']} done, {p['failed_this_job']} failed")
    if snap.system["state"] not in ("running", "stopping"):
        return _pairs(this_job)
    eta = duration(p["eta_s"]) if p["eta_s"] is not None else ("done" if not p["pending"] else "-")
    return _pairs(("throughput", f"{p['throughput_per_min']:.1f}/min (5 min)"), ("ETA", eta), this_job)


def token_line(snap: Snapshot) -> Text:
    """Input tokens (and their cached share), output tokens and what they cost."""
    t = snap.tokens
    share = f"{t['cached'] / t['prompt']:.0%} cached" if t.get("prompt") else "none yet"
    return _pairs(("input tokens", f"{compact(int(t.get('prompt', 0)))} ({share})"),
                  ("output tokens", compact(int(t.get("completion", 0)))), ("cost", f"{t.get('cost', 0.0):.4f}"))


ENDPOINT_COLUMNS: tuple[tuple[str, int | None, str], ...] = (
    ("api", 6, "left"), ("state", 11, "left"), ("report step", None, "left"), ("teacher", 10, "left"),
    ("time", 6, "right"), ("done", 5, "right"), ("fail", 4, "right"), ("lat", 5, "right"), ("tokens", 6, "right"),
)
MAX_REPORT_COLUMN = 24  # wider terminals give a little to the teacher column and leave the rest blank
MAX_TEACHER_EXTRA = 22


def teacher_label(row: EndpointRow) -> str:
    """``offline`` for the built-in teacher, else the model's name."""
    with contextlib.suppress(ValueError):
        if row.teacher_id:
            teacher = TeacherId.parse(row.teacher_id)
            return "offline" if teacher.is_local else teacher.model
    if row.teacher == "local" or (not row.teacher and row.model in ("", "local-rules", OFFLINE_TEACHER_VERSION)):
        return "offline"
    return row.model or row.teacher


def _doing(row: EndpointRow) -> str:
    if row.report is not None:
        return f"{row.report} {row.step or '-'}"
    if row.state in ("exited", "died", "disabled", "failed", "respawning", "paused", "down") and row.reason:
        reason = row.reason
        # "disabled: 401 ..." next to the state "disabled" would say it twice.
        return reason[len(row.state) + 1:].strip() if reason.startswith(f"{row.state}:") else reason
    return ""


def endpoints_panel(snap: Snapshot, width: int = DEFAULT_WIDTH) -> Panel:
    # Fixed widths, the report column takes the rest: rich's own fitting squeezes the wrong columns at 80.
    table = endpoint_table(snap.endpoints, width - PANEL_CHROME)
    totals = snap.endpoint_totals
    others = ", ".join(f"{STATE_LABELS.get(k, (k, ''))[0]} {v}" for k, v in totals["by_state"].items()
                       if k not in ("working", "backing_off", "idle"))
    footer = _pairs(("active", str(totals["active"])), ("idle", str(totals["idle"])))
    if others:
        footer.append(f"  {others}", style="dim")
    body: RenderableType = Group(table, footer) if snap.endpoints else Text("no endpoints yet", style="dim")
    return _panel(body, f"Endpoints ({len(snap.endpoints)})")


def endpoint_table(rows: list[EndpointRow], width: int) -> Table:
    """One line per endpoint, exactly ``width`` columns wide at most."""
    fixed = sum(w for _, w, _ in ENDPOINT_COLUMNS if w) + len(ENDPOINT_COLUMNS) - 1
    report_width = min(MAX_REPORT_COLUMN, max(10, width - fixed))
    extra = min(MAX_TEACHER_EXTRA, max(0, width - fixed - report_width))
    table = Table(box=box.SIMPLE_HEAD, padding=0, pad_edge=False, show_edge=False)
    for name, column_width, justify in ENDPOINT_COLUMNS:
        column_width = column_width or report_width
        if name == "teacher":
            column_width += extra
        table.add_column(name, no_wrap=True, overflow="ellipsis", width=column_width,
                         justify=justify)  # type: ignore[arg-type]
    for row in rows:
        label, style = STATE_LABELS.get(row.state, (row.state.replace("_", " "), ""))
        latency = f"{row.mean_latency_s:.1f}s" if row.mean_latency_s is not None else "-"
        table.add_row(row.api, Text(label, style=style), " ".join(_doing(row).split()), teacher_label(row),
                      duration(row.elapsed_s), str(row.done), Text(str(row.failed), style="red" if row.failed else ""),
                      latency, compact(row.tokens))
    return table


def outputs_panel(snap: Snapshot) -> Panel:
    o = snap.outputs
    counts = _pairs(("raw", str(o["raw"])), ("normalized", str(o["normalized"])), ("logs", str(o["logs"])),
                    ("failed", str(o["failed"])))
    written = _pairs(("written this job", size(o["bytes_this_job"])))
    if snap.system["output_dir"]:
        written.append(f"  in {snap.system['output_dir']}", style="dim")
    return _panel(Group(counts, written), "Outputs")


def recent_panel(snap: Snapshot) -> Panel:
    if not snap.recent:
        return _panel(Text("no report finished yet", style="dim"), "Recent results")
    table = Table(box=None, padding=(0, 1), pad_edge=False, show_header=True, header_style="dim")
    for name, justify in (("time", "left"), ("report", "right"), ("result", "left"), ("findings", "right"),
                          ("size", "right"), ("took", "right"), ("endpoint", "left")):
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")  # type: ignore[arg-type]
    for item in snap.recent:
        ok = item["status"] == "done"
        result = Text("done" if ok else (item["error_class"] or item["status"] or "?"), style="green" if ok else "red")
        table.add_row(clock_time(item["at"]), _number(item["report"]), result, _number(item["findings"]),
                      size(item["bytes"]) if ok else "-", duration(item["duration_s"]), item["api"] or "")
    return _panel(table, "Recent results")


def failures_panel(snap: Snapshot) -> Panel:
    lines: list[RenderableType] = []
    if snap.failures_by_class:
        lines.append(Text.assemble(("by class: ", "dim"),
                                   ", ".join(f"{name} {count}" for name, count in snap.failures_by_class.items())))
    errors = [(row.api, row.last_error) for row in snap.endpoints if row.last_error]
    if errors:
        table = Table(box=None, padding=(0, 1), pad_edge=False, show_header=False, expand=True)
        table.add_column("endpoint", no_wrap=True, style="bold")
        table.add_column("last error", no_wrap=True, overflow="ellipsis", ratio=1)
        for api, error in errors:
            table.add_row(api, " ".join(error.split()))
        lines.append(table)
    if not lines:
        lines.append(Text("no failures", style="dim"))
    return _panel(Group(*lines), "Failures")


def control_lines(snap: Snapshot, live: bool) -> list[Text]:
    c = snap.control
    lines = [
        Text.assemble(("stop:   ", "dim"), (c["stop_script"], "bold"), ("  (workers finish their report)", "dim")),
        Text.assemble(("attach: ", "dim"), (c["attach_template"], "bold"), (f"  (detach: {c['detach']})", "dim")),
    ]
    if live:  # a one-off snapshot has nothing to quit
        lines.append(Text.assemble(("quit:   ", "dim"), (c["quit"], "bold"), ("  (the job keeps running)", "dim")))
    if c.get("stop_reason"):
        lines.insert(0, Text.assemble(("stopped: ", "dim"), (c["stop_reason"], "bold yellow")))
    if c["stop_requested"]:
        lines.insert(1, Text.assemble(("cancel: ", "dim"), (c["cancel_stop"], "bold"),
                                      ("  (stop requested; cancel before workers exit)", "dim")))
    return lines


def control_panel(snap: Snapshot, live: bool = False) -> Panel:
    return _panel(Group(*control_lines(snap, live)), "Control")


def full_height(snap: Snapshot) -> int:
    """Rows the boxed layout needs (an estimate that errs high)."""
    errors = sum(1 for row in snap.endpoints if row.last_error)
    return (4 + len(snap.problems) + 5 + len(snap.endpoints) + 5 + 4 + max(1, len(snap.recent) + 1) + 2
            + max(1, errors + bool(snap.failures_by_class)) + 2 + 5)


def render(snap: Snapshot, width: int = DEFAULT_WIDTH, height: int | None = None,
           live: bool = False) -> RenderableType:
    """Every panel, top to bottom, for a terminal ``width`` columns wide (lines never exceed it).

    Order: system, progress, endpoints, outputs, recent results, failures, control. When a ``height``
    is given and the boxed layout would not fit it, the compact layout shows every panel in that many
    rows, summarizing the endpoints that do not fit.
    """
    if height is not None and full_height(snap) > height:
        from distill.monitor.compact import render_compact

        return render_compact(snap, width, height, live)
    return Group(system_panel(snap), progress_panel(snap), endpoints_panel(snap, width), outputs_panel(snap),
                 recent_panel(snap), failures_panel(snap), control_panel(snap, live))


def watch(take: Callable[[], Snapshot], *, interval: float, console: Console,
          sleep: Callable[[float], None] = time.sleep) -> int:
    """Repaint a fresh snapshot every ``interval`` seconds until Ctrl-C; returns the exit code (0)."""
    try:
        with Live(render(take(), console.width, console.height, live=True), console=console, screen=False,
                  auto_refresh=False, transient=False) as screen:
            while True:
                sleep(interval)
                screen.update(render(take(), console.width, console.height, live=True), refresh=True)
    except KeyboardInterrupt:
        return 0
