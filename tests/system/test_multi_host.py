"""Whole jobs with claims on a real redis-server: one host, two hosts sharing one output folder, Redis faults."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distill.bench.stub_server import StubServer
from distill.job.claims_redis import RedisClaimBook
from distill.job.state import StateDir, identity_alive
from distill.job.tmux import TmuxSessions
from distill.results.atomic import read_json
from distill.results.store import RAW_DIR, OutputStore
from tests.helpers.jobtools import cli, done_numbers, job_ended, wait_until, write_config
from tests.helpers.notes import write_notes
from tests.helpers.redis_server import RedisServer, running_redis

pytestmark = [pytest.mark.tmux, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

KEY = "sk-test-multi-host-key"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path)


class Host:
    """One "host": its own state directory, tmux socket, session prefix and DIAG_HOST."""

    def __init__(self, name: str, base: dict[str, str], root: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.name = name
        self.state = StateDir(root / f"state_{name}")
        self.state.root.mkdir(mode=0o700)
        self.env = {**base, "DIAG_STATE_DIR": str(self.state.root), "DIAG_TMUX_SOCKET": f"diagtest_{tag}",
                    "DIAG_SESSION_PREFIX": f"h{tag}", "DIAG_HOST": name}
        self.sessions = TmuxSessions(self.env["DIAG_TMUX_SOCKET"], self.env["DIAG_SESSION_PREFIX"])

    def cli(self, *args: str) -> Any:
        return cli(*args, env=self.env)

    def close(self) -> None:
        if self.state.running_job() is not None:
            self.cli("stop", "--now")
            wait_until(lambda: self.state.running_job() is None, timeout=30)
        import subprocess

        subprocess.run(["tmux", "-L", self.env["DIAG_TMUX_SOCKET"], "kill-server"], capture_output=True, check=False)


@pytest.fixture
def hosts(isolated: dict[str, Any], tmp_path: Path, server: RedisServer) -> Iterator[dict[str, Any]]:
    stub = StubServer(latency_s=0.05, require_key=KEY).start()
    base = {k: v for k, v in os.environ.items() if not k.startswith("DIAG_")}
    base.update({"DIAG_CONFIG": str(write_config(tmp_path, endpoints=8)), "DIAG_API_KEY": KEY,
                 "DIAG_BASE_URL": stub.url, "DIAG_MODEL": "stub-model", "DIAG_CLAIMS_URL": server.url})
    made = {"a": Host("host-a", base, tmp_path), "b": Host("host-b", base, tmp_path)}
    info = {"stub": stub, "server": server, "input": tmp_path / "in", "output": tmp_path / "out", **made}
    yield info
    for host in made.values():
        host.close()
    stub.stop()


def start(job: dict[str, Any], host: Host, *args: str, input_dir: Path | None = None) -> Any:
    return host.cli("start", *args, "--input-dir", str(input_dir or job["input"]), "--output-dir", str(job["output"]))


def test_two_hosts_share_one_job_and_do_every_note_once(hosts: dict[str, Any]) -> None:
    write_notes(hosts["input"], list(range(1, 201)))
    hosts["stub"].latency_s = 2.0  # slow until the second host works too, however long its start takes
    for name in ("a", "b"):
        result = start(hosts, hosts[name], "1", "--until-drained")
        assert result.returncode == 0, result.stderr + result.stdout
    wait_until(lambda: any(b.get("state") == "working" for b in hosts["b"].state.read_heartbeats().values()),
               timeout=90)
    hosts["stub"].latency_s = 0.1
    def both_hosts_shown() -> dict[str, Any] | None:
        shown = json.loads(hosts["a"].cli("monitor", "--json").stdout).get("hosts", {})
        return shown if set(shown) == {"host-a", "host-b"} else None

    board = wait_until(both_hosts_shown, timeout=60)
    assert sum(len(status["apis_status"]) for status in board.values()) == 16  # one monitor, every endpoint
    for name in ("a", "b"):
        wait_until(lambda name=name: job_ended(hosts[name].state), timeout=180)
    assert done_numbers(hosts["output"]) == list(range(1, 201))
    assert hosts["stub"].stats()["total"] == 600  # three calls a report, none repeated on either host
    writers = {read_json(path)["host"] for path in (hosts["output"] / RAW_DIR).glob("*.json")}
    assert writers == {"host-a", "host-b"}
    assert not list((hosts["output"] / "failed").glob("*.json"))


def power_cut(host: Host, server: RedisServer, output: Path) -> set[int]:
    """Freeze the host's supervisor and workers, read the reports they hold in Redis, SIGKILL them all.

    Returns the held reports that were not done: those a call may have been in flight for.
    """
    beats = [b for b in host.state.read_heartbeats().values() if identity_alive(b.get("identity"))]
    job = host.state.running_job()
    pids = ([int(job["pid"])] if job else []) + [int(b["pid"]) for b in beats]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    store = OutputStore(output)
    leases = RedisClaimBook(server.url, store, output).snapshot()["leases"]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return {int(n) for n, lease in leases.items() if lease["host"] == host.name and not store.is_done(int(n))}


def test_sigkill_of_a_whole_host_leaves_every_note_to_the_other_once(hosts: dict[str, Any]) -> None:
    numbers = list(range(1, 161))
    write_notes(hosts["input"], numbers)
    hosts["stub"].latency_s = 2.0  # slow until both hosts work, however long the second one's start takes
    for name in ("a", "b"):
        hosts[name].env["DIAG_LEASE_TTL"] = "15"  # well above the heartbeat's renewal, even on a loaded machine
        result = start(hosts, hosts[name], "1", "--until-drained")
        assert result.returncode == 0, result.stderr + result.stdout
    wait_until(lambda: any(b.get("state") == "working" for b in hosts["b"].state.read_heartbeats().values()),
               timeout=90)
    hosts["stub"].latency_s = 0.2
    wait_until(lambda: len(done_numbers(hosts["output"])) >= 30, timeout=120)
    in_flight = power_cut(hosts["a"], hosts["server"], hosts["output"])
    assert in_flight  # host-a died holding reports: they must move to host-b
    wait_until(lambda: job_ended(hosts["b"].state), timeout=180)
    assert done_numbers(hosts["output"]) == numbers
    assert not list((hosts["output"] / "failed").glob("*.json"))
    answered = hosts["stub"].stats()["answered_by_report_step"]
    assert {int(key.split("/")[0]) for key, n in answered.items() if n > 1} <= in_flight
    assert max(answered.values()) <= 2
    finishers = {read_json(path)["host"] for n in in_flight
                 for path in [hosts["output"] / RAW_DIR / f"diagnostic_{n}.json"]}
    assert finishers == {"host-b"}


def test_a_host_joining_with_another_input_folder_is_refused_with_one_line(hosts: dict[str, Any]) -> None:
    write_notes(hosts["input"], list(range(1, 41)))
    hosts["stub"].latency_s = 0.3
    first = start(hosts, hosts["a"], "1", "--until-drained")
    assert first.returncode == 0, first.stderr + first.stdout
    other = hosts["input"].parent / "other_in"
    write_notes(other, [1, 2])
    refused = start(hosts, hosts["b"], "1", "--until-drained", input_dir=other)
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "input_dir" in lines[0] and "DIAG_CLAIMS_URL" in lines[0], refused.stderr


def test_the_hosts_of_one_job_share_the_output_folder_and_another_job_is_refused(hosts: dict[str, Any],
                                                                               tmp_path: Path) -> None:
    from distill.job.manifest import read_manifest

    write_notes(hosts["input"], list(range(1, 81)))
    hosts["stub"].latency_s = 2.0  # the job outlasts the checks below
    for name in ("a", "b"):
        result = start(hosts, hosts[name], "1", "--until-drained")
        assert result.returncode == 0, result.stderr + result.stdout
    manifest = read_manifest(hosts["output"]) or {}
    shared_id = RedisClaimBook(hosts["server"].url, OutputStore(hosts["output"]), hosts["input"]).stored_job_id()
    assert manifest.get("job_id") == shared_id and set(manifest.get("hosts", {})) == {"host-a", "host-b"}
    # Another job (its own Redis database) on the same output folder is refused, whatever its state directory.
    other = Host("host-c", {**hosts["a"].env, "DIAG_CLAIMS_URL": hosts["server"].url[:-1] + "1"}, tmp_path)
    try:
        refused = start(hosts, other, "1", "--until-drained")
    finally:
        other.close()
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and shared_id in lines[0] and str(hosts["a"].state.root) in lines[0], refused.stderr
    assert other.state.running_job() is None
    hosts["stub"].latency_s = 0.05
    for name in ("a", "b"):
        wait_until(lambda name=name: job_ended(hosts[name].state), timeout=180)
    assert done_numbers(hosts["output"]) == list(range(1, 81))
    assert (read_manifest(hosts["output"]) or {}).get("ended_at")


def test_redis_stopped_for_twenty_seconds_mid_run_fails_nothing_and_the_job_ends(hosts: dict[str, Any]) -> None:
    write_notes(hosts["input"], list(range(1, 121)))
    hosts["stub"].latency_s = 0.5  # about 20 s of work: most of it is still pending when Redis goes
    result = start(hosts, hosts["a"], "1", "--until-drained")
    assert result.returncode == 0, result.stderr + result.stdout
    wait_until(lambda: len(done_numbers(hosts["output"])) >= 8, timeout=60)
    hosts["server"].stop()
    time.sleep(20)  # shorter than the lease (30 s): the reports in hand stay with their workers
    paused = [b for b in hosts["a"].state.read_heartbeats().values() if b.get("state") == "paused"]
    hosts["server"].start()
    wait_until(lambda: job_ended(hosts["a"].state), timeout=180)
    assert paused  # the workers noticed and waited
    assert done_numbers(hosts["output"]) == list(range(1, 121))
    assert not list((hosts["output"] / "failed").glob("*.json"))


def test_an_unreachable_redis_at_start_names_the_setting(hosts: dict[str, Any]) -> None:
    write_notes(hosts["input"], [1])
    hosts["server"].stop()
    refused = start(hosts, hosts["a"], "1")
    assert refused.returncode != 0
    assert "DIAG_CLAIMS_URL / --claims-url: cannot reach Redis" in refused.stderr
    assert hosts["a"].state.running_job() is None


def test_stop_on_one_host_stops_every_host(hosts: dict[str, Any]) -> None:
    write_notes(hosts["input"], list(range(1, 301)))
    hosts["stub"].latency_s = 0.3
    for name in ("a", "b"):
        result = start(hosts, hosts[name], "1")  # no end: only a stop ends this job
        assert result.returncode == 0, result.stderr + result.stdout
    wait_until(lambda: len(done_numbers(hosts["output"])) >= 4, timeout=60)
    stopped = hosts["b"].cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    for name in ("a", "b"):
        wait_until(lambda name=name: job_ended(hosts[name].state), timeout=90)
    assert 4 <= len(done_numbers(hosts["output"])) < 300
    assert not list((hosts["output"] / "failed").glob("*.json"))
