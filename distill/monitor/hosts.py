"""Every host of a shared (Redis) job: its endpoints, grouped by host, as the hosts publish them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from distill.core.errors import ClaimsUnavailable
from distill.job.claims_backend import open_board
from distill.monitor.snapshot import Snapshot
from distill.monitor.view import render


def read_hosts(url: str | None = None) -> dict[str, Any]:
    """``{"hosts": {host: status}}`` from the job's board, ``{}`` on one host, or the reason Redis is away."""
    board = open_board(url)
    if board is None:
        return {}
    try:
        return {"hosts": board.hosts(), "stop": board.stop_request()}
    except ClaimsUnavailable as exc:
        return {"hosts": {}, "problem": str(exc)}


def host_rows(hosts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per endpoint of every host, hosts in name order, endpoints in number order."""
    rows = []
    for host, status in sorted(hosts.items()):
        apis = status.get("apis_status")
        if not isinstance(apis, dict):
            continue
        for api in sorted(apis, key=lambda name: (len(name), name)):
            row = apis[api] if isinstance(apis[api], dict) else {}
            rows.append({"host": host, "api": api, "state": str(row.get("state") or "-"),
                         "report": row.get("report"), "done": int(row.get("done") or 0),
                         "failed": int(row.get("failed") or 0), "silent": bool(status.get("silent"))})
    return rows


def hosts_panel(board: dict[str, Any]) -> Panel:
    """The endpoints of every host, grouped by host, with each host's job state."""
    hosts: dict[str, dict[str, Any]] = board.get("hosts", {})
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False)
    for name in ("host", "endpoint", "state", "report", "done", "failed"):
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    shown = None
    for row in host_rows(hosts):
        label = "" if row["host"] == shown else row["host"] + (" (silent)" if row["silent"] else "")
        shown = row["host"]
        state = Text("DOWN", style="bold white on red") if row["state"] == "down" else row["state"]
        table.add_row(label, row["api"], state, "-" if row["report"] is None else str(row["report"]),
                      str(row["done"]), Text(str(row["failed"]), style="red" if row["failed"] else ""))
    if board.get("problem"):
        body: Any = Text(board["problem"], style="red")
    elif not hosts:
        body = Text("no host has reported yet", style="dim")
    else:
        body = table
    count = sum(len(s.get("apis_status") or {}) for s in hosts.values())
    stop = f", stop {board['stop']} requested" if board.get("stop") else ""
    return Panel(body, title=f"Hosts ({len(hosts)}, {count} endpoints{stop})", title_align="left")


def render_with_hosts(snap: Snapshot, width: int) -> RenderableType:
    """This host's panels, then the Hosts panel."""
    return Group(render(snap, width), hosts_panel(read_hosts()))


def show_with_hosts(take: Callable[[], Snapshot], *, once: bool, interval: float, as_json: bool,
                    console: Console | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
    """``monitor`` for a job shared by hosts: ``--json`` gains ``"hosts"``; the screen gains the Hosts panel."""
    if as_json:
        print(json.dumps({**take().to_dict(), **read_hosts()}, ensure_ascii=False, indent=2))
        return
    console = console or Console()
    if once:
        console.print(render_with_hosts(take(), console.width))
        return
    try:
        with Live(render_with_hosts(take(), console.width), console=console, screen=False, auto_refresh=False,
                  transient=False) as live:
            while True:
                sleep(interval)
                live.update(render_with_hosts(take(), console.width), refresh=True)
    except KeyboardInterrupt:
        return
