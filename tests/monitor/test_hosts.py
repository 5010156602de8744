from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from distill.monitor.hosts import host_rows, hosts_panel, read_hosts
from tests.helpers.redis_server import free_port


def status(*apis: str, silent: bool = False) -> dict[str, object]:
    return {"silent": silent, "apis_status": {api: {"state": "working", "report": 7, "done": 2, "failed": 0}
                                              for api in apis}}


def test_rows_are_grouped_by_host_in_endpoint_order() -> None:
    rows = host_rows({"b": status("api_10", "api_2"), "a": status("api_1")})
    assert [(r["host"], r["api"]) for r in rows] == [("a", "api_1"), ("b", "api_2"), ("b", "api_10")]


def test_the_panel_names_each_host_once_and_counts_every_endpoint() -> None:
    console = Console(width=100, record=True)
    console.print(hosts_panel({"hosts": {"host-a": status("api_1", "api_2"), "host-b": status("api_1", silent=True)},
                               "stop": "graceful"}))
    text = console.export_text()
    assert "Hosts (2, 3 endpoints, stop graceful requested)" in text
    assert text.count("host-a") == 1 and "host-b (silent)" in text


def test_without_a_claims_url_there_is_no_hosts_view(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIAG_CLAIMS_URL", raising=False)
    assert read_hosts() == {}


def test_an_unreachable_redis_is_shown_not_raised() -> None:
    board = read_hosts(f"redis://127.0.0.1:{free_port()}/0")
    assert board["hosts"] == {} and "unreachable" in board["problem"]
    console = Console(width=100, record=True)
    console.print(hosts_panel(board))
    assert "unreachable" in console.export_text()


def test_the_screen_shows_this_host_then_every_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from distill.monitor import hosts as module
    from distill.monitor.hosts import show_with_hosts
    from distill.monitor.snapshot import MonitorConfig, take_snapshot

    monkeypatch.setattr(module, "read_hosts", lambda: {"hosts": {"host-b": status("api_1")}})
    console = Console(width=100, record=True)
    show_with_hosts(lambda: take_snapshot(MonitorConfig(state_dir=Path("/nonexistent-state"))), once=True,
                    interval=1.0, as_json=False, console=console)
    text = console.export_text()
    assert "Endpoints" in text and "Hosts (1, 1 endpoints)" in text and "host-b" in text
