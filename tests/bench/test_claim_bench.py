from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.bench.claim_bench import ClaimBenchOptions, format_comparison, report_numbers, run_backend_comparison
from distill.cli.bench_cmd import command
from tests.helpers.redis_server import RedisServer, running_redis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path)


def test_the_comparison_runs_both_backends_and_leaves_no_keys_in_redis(tmp_path: Path, server: RedisServer) -> None:
    import redis

    options = ClaimBenchOptions(files=3_000, max_gap=5_000, claims_each=20, think_ms=0.0)
    result = run_backend_comparison(options, server.url, claimer_counts=(2, 4), say=lambda _line: None,
                                    work_dir=tmp_path)
    runs = [(run["backend"], run["claimers"], run["claims"], run["in_order_no_repeat"]) for run in result["runs"]]
    assert runs == [("file", 2, 40, True), ("redis", 2, 40, True), ("file", 4, 80, True), ("redis", 4, 80, True)]
    lines = format_comparison(result)
    assert [line.split()[:2] for line in lines[2:]] == [["file", "2"], ["redis", "2"], ["file", "4"], ["redis", "4"]]
    assert all("p50" in line and "p99" in line for line in lines[2:])
    assert redis.Redis.from_url(server.url).dbsize() == 0


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_system_benchmark_runs_its_job_on_redis_and_leaves_no_keys(tmp_path: Path, server: RedisServer) -> None:
    import redis

    out = tmp_path / "figures.json"
    result = CliRunner().invoke(command, ["--apis", "2", "--reports", "6", "--latency-ms", "20",
                                          "--baseline-reports", "0", "--claims-url", server.url, "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["claims_backend"] == "redis" and figures["system"]["reports"] == 6
    assert "claims on redis" in result.output
    assert redis.Redis.from_url(server.url).dbsize() == 0


def test_the_system_benchmark_refuses_a_database_holding_a_job(tmp_path: Path, server: RedisServer) -> None:
    import redis

    redis.Redis.from_url(server.url).hset("diag:job", "start", "1")
    result = CliRunner().invoke(command, ["--apis", "1", "--reports", "1", "--claims-url", server.url])
    assert result.exit_code != 0 and "holds a job" in str(result.exception)
    assert redis.Redis.from_url(server.url).hget("diag:job", "start") == b"1"  # the job's keys are untouched


@pytest.mark.parametrize("max_gap", [1, 3, 1000, 5000])
def test_report_numbers_increase_with_gaps_no_larger_than_max_gap(max_gap: int) -> None:
    numbers = report_numbers(2000, max_gap, seed=3)
    assert len(numbers) == 2000
    assert all(0 < b - a <= max(max_gap, 1) for a, b in itertools.pairwise(numbers))
