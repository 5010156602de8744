"""The monitor in a small terminal: every panel of the boxed layout in ``height`` rows.

Boxes cost two rows each, so here each panel is a titled line; endpoints that
do not fit are summarized in one line (busy and troubled endpoints are shown
first, idle ones are the first to be summarized).
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from distill.monitor.snapshot import EndpointRow, Snapshot
from distill.monitor.view import (
    STATE_LABELS,
    _number,
    _pairs,
    clock_time,
    control_lines,
    duration,
    endpoint_table,
    progress_counts,
    progress_rate,
    size,
    system_head,
    teacher_label,
    token_line,
)

#: The order endpoints are shown in when not all fit: what needs a look first.
SHOW_FIRST = ("down", "died", "failed", "disabled", "respawning", "backing_off", "paused", "working", "exited", "stopped",
              "not_started", "idle")
RECENT_ROWS = 3


def _rule(title: str, width: int) -> Text:
    line = Text(f"── {title} ", style="bold")
    line.append("─" * max(0, width - len(line)), style="dim")
    return line


def _head(snap: Snapshot) -> Text:
    system = snap.system
    head = system_head(snap, with_pid=False)
    if system["last_update"]:
        if system["stale"]:
            head.append(f"  STALE since {clock_time(system['last_update'])}", style="bold red")
        else:
            head.append(f"  updated {duration(system['last_update_age_s'])} ago", style="dim")
    return head


def _shown_endpoints(rows: list[EndpointRow], room: int) -> tuple[list[EndpointRow], list[EndpointRow]]:
    if len(rows) <= room:
        return rows, []
    rank = {state: i for i, state in enumerate(SHOW_FIRST)}
    ordered = sorted(rows, key=lambda r: rank.get(r.state, 0))  # stable: endpoint order within a state
    shown = sorted(ordered[:room], key=rows.index)
    return shown, [r for r in rows if r not in shown]


def _summary(snap: Snapshot, hidden: list[EndpointRow]) -> Text:
    totals = snap.endpoint_totals
    line = _pairs(("active", str(totals["active"])), ("idle", str(totals["idle"])))
    others = ", ".join(f"{STATE_LABELS.get(k, (k, ''))[0]} {v}" for k, v in totals["by_state"].items()
                       if k not in ("working", "backing_off", "idle"))
    if others:
        line.append(f"  {others}", style="dim")
    if hidden:
        names = f"{hidden[0].api} … {hidden[-1].api}" if len(hidden) > 2 else ", ".join(r.api for r in hidden)
        line.append(f"  (+{len(hidden)} not shown: {names})", style="dim")
    return line


def teachers(snap: Snapshot) -> str:
    """How many endpoints each teacher serves: ``offline 13, deepseek-chat 3``."""
    counts: dict[str, int] = {}
    for row in snap.endpoints:
        counts[teacher_label(row)] = counts.get(teacher_label(row), 0) + 1
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda item: -item[1]))


def _recent_line(item: dict[str, object]) -> Text:
    ok = item["status"] == "done"
    result = "done" if ok else str(item["error_class"] or item["status"] or "?")
    line = Text(f"{clock_time(item['at'])}  {_number(item['report'])}  ", style="")  # type: ignore[arg-type]
    line.append(result, style="green" if ok else "red")
    line.append(f"  {_number(item['findings'])} findings  {duration(item['duration_s'])}  {item['api'] or ''}",  # type: ignore[arg-type]
                style="dim")
    return line


def _failures(snap: Snapshot) -> Text:
    line = Text("failures  ", style="bold")
    if not snap.failures_by_class and not any(r.last_error for r in snap.endpoints):
        line.append("none", style="dim")
        return line
    if snap.failures_by_class:
        line.append(", ".join(f"{name} {count}" for name, count in snap.failures_by_class.items()))
    last = next((r for r in snap.endpoints if r.last_error), None)
    if last is not None:
        line.append(f"  {last.api}: {' '.join(last.last_error.split())}", style="dim")
    return line


def render_compact(snap: Snapshot, width: int, height: int, live: bool) -> RenderableType:
    """Every panel in at most ``height - 1`` rows (the last row stays free for the cursor)."""
    o = snap.outputs
    head = [_head(snap), progress_counts(snap), progress_rate(snap), token_line(snap)]
    head += [Text(f"! {problem}", style="yellow") for problem in snap.problems[:1]]
    outputs = Text("outputs   ", style="bold")
    outputs.append(f"raw {o['raw']}  normalized {o['normalized']}  logs {o['logs']}  failed {o['failed']}  "
                   f"{size(o['bytes_this_job'])} this job")
    control = control_lines(snap, live)
    fixed = len(head) + 1 + 1 + 1 + 1 + 1 + 1 + len(control)  # rules, header, summary, outputs, failures
    room = max(2, height - 1 - fixed)
    recent_rows = min(RECENT_ROWS, max(1, len(snap.recent)), max(1, room // 3))
    shown, hidden = _shown_endpoints(snap.endpoints, max(1, room - recent_rows))
    # No box: a one-column gap after each cell instead of the box's separators (one column more in all).
    table: Table = endpoint_table(shown, width - 1)
    table.box, table.padding = None, (0, 1, 0, 0)
    recent = [_recent_line(item) for item in snap.recent[:recent_rows]] or [Text("no report finished yet",
                                                                                  style="dim")]
    parts: list[RenderableType] = [*head, _rule(f"Endpoints ({len(snap.endpoints)}" + (f": {teachers(snap)})" if snap.endpoints else ")"), width), table,
                                   _summary(snap, hidden), outputs, _rule("Recent results", width), *recent,
                                   _failures(snap), *control]
    for part in parts:
        if isinstance(part, Text):
            part.no_wrap, part.overflow = True, "ellipsis"
    return Group(*parts)

