"""The benchmark: its figures from a call timeline, and tiny real runs that print every figure (no timing asserted)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.bench.claim_bench import ClaimBenchOptions, format_claim_result, report_numbers, run_claim_bench
from distill.bench.figures import (
    ProcessSampler,
    busy_time,
    format_ms,
    idle_split,
    percentile,
    phase_figures,
    report_overheads,
    steady_window,
)
from distill.cli.bench_cmd import command
from distill.job.state import StateDir, my_identity

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

# Two endpoints; a: report 1 (calls at 0-1, 1-2), report 2 (3-4); b: report 7 (0.5-1.5), report 8 (2.5-3.5).
ROWS = [("a", 1, "findings", 0.0, 1.0), ("a", 1, "organs", 1.0, 2.0), ("a", 2, "findings", 3.0, 4.0),
        ("b", 7, "findings", 0.5, 1.5), ("b", 8, "findings", 2.5, 3.5)]


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([], 50, None),
    ([5.0], 99, 5.0),
    ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
    ([float(v) for v in range(1, 101)], 99, 99.0),
])
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_steady_window_runs_from_the_last_first_call_to_the_first_last_call() -> None:
    assert steady_window(ROWS) == (0.5, 3.5)
    assert steady_window([]) is None


def test_busy_time_counts_only_the_part_of_each_call_inside_the_window() -> None:
    assert busy_time(ROWS, 0.5, 3.5) == pytest.approx(0.5 + 1.0 + 0.5 + 1.0 + 1.0)


def test_report_overhead_is_the_time_between_reports_outside_calls() -> None:
    # a: report 1 starts at 0, report 2 at 3, 2 s inside calls -> 1 s; b: 7 at 0.5, 8 at 2.5, 1 s inside -> 1 s.
    assert sorted(report_overheads(ROWS)) == pytest.approx([1.0, 1.0])


def test_idle_split_tells_waits_between_a_reports_calls_from_waits_between_reports() -> None:
    rows = [("a", 1, "findings", 0.0, 1.0), ("a", 1, "organs", 1.5, 2.5), ("a", 2, "findings", 3.0, 4.0),
            ("b", 7, "findings", 0.0, 1.0), ("b", 8, "findings", 3.0, 4.0)]
    # Between steps: 0.5 s in report 1, none in reports 2, 7, 8. Between reports: a 0.5 s, b 2 s.
    assert idle_split(rows) == {"between_steps": 125.0, "between_reports": 1250.0}
    assert idle_split([]) == {"between_steps": None, "between_reports": None}


def test_phase_figures_hold_throughput_and_both_utilisations() -> None:
    figures = phase_figures(ROWS, 2, 0.0, 4.0, reports=4)
    assert figures["reports_per_s"] == 1.0 and figures["calls"] == 5
    assert figures["utilisation"]["whole_run"] == pytest.approx(5.0 / 8.0)
    assert figures["utilisation"]["steady"] == pytest.approx(4.0 / 6.0, abs=1e-4)
    assert figures["overhead_ms"]["p50"] == 1000.0


@pytest.mark.parametrize("recorded_as", ["supervisor", "worker"])
def test_process_sampler_measures_the_processes_the_state_directory_names(tmp_path: Path, recorded_as: str) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    if recorded_as == "supervisor":
        state.write_job({"job_id": "j", "pid": os.getpid(), "identity": my_identity()})
    else:
        state.write_heartbeat("api_1", {"pid": os.getpid(), "state": "working"})
    sampler = ProcessSampler(state)
    sampler.sample()
    sampler.sample()
    assert sampler.peak_rss > 0 and sampler.peak_processes == 1
    assert list(sampler.cpu) == ([os.getpid()] if recorded_as == "supervisor" else [])


def test_process_sampler_keeps_each_workers_cpu_time_and_largest_rss(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    state.write_heartbeat("api_1", {"pid": os.getpid(), "state": "working"})
    sampler = ProcessSampler(state)
    sampler.sample()
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn CPU so that the second sample sees more ticks
        pass
    sampler.sample()
    state.write_heartbeat("api_1", {"pid": os.getpid(), "state": "exited"})
    sampler.sample()  # an exited worker keeps what was seen of it
    assert sampler.worker_cpu_s() >= 0.05
    rss = sampler.worker_rss()
    assert rss["workers"] == 1 and rss["peak"] == rss["mean"] and rss["peak"] > 1
    assert rss["pss_peak"] is not None and 0 < rss["pss_peak"] <= rss["peak"] + 0.1


def test_process_sampler_reports_no_worker_rss_before_any_worker_was_seen(tmp_path: Path) -> None:
    sampler = ProcessSampler(StateDir(tmp_path / "state"))
    assert sampler.worker_rss() == {"peak": None, "mean": None, "workers": 0, "pss_peak": None, "pss_mean": None}
    assert sampler.worker_cpu_s() == 0.0


def test_process_sampler_ignores_a_job_record_whose_supervisor_is_gone(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    state.write_job({"job_id": "j", "pid": os.getpid(), "identity": f"{os.getpid()}:0"})  # an earlier process
    sampler = ProcessSampler(state)
    sampler.sample()
    assert (sampler.peak_rss, sampler.cpu) == (0, {})


def test_format_ms_prints_both_percentiles_and_the_count() -> None:
    assert format_ms({"p50": 1.5, "p99": 9.0, "n": 4}) == "p50 1.5 ms, p99 9.0 ms (n=4)"


def test_report_numbers_start_one_gap_up_increase_and_keep_gaps_bounded() -> None:
    numbers = report_numbers(20_000, 1_000, seed=3)
    assert numbers[0] == 1 + 1_000 and len(set(numbers)) == len(numbers) == 20_000
    gaps = [b - a for a, b in itertools.pairwise(numbers)]
    assert min(gaps) >= 1 and max(gaps) <= 1_000 and max(gaps) >= 100


SYSTEM_KEYS = {"wall_s", "reports", "calls", "reports_per_s", "calls_per_s", "utilisation", "overhead_ms",
               "pipeline_overhead_ms", "claim_latency_ms", "supervisor_cpu_share", "peak_rss_mib", "failed",
               "client_utilisation_whole_run", "first_call_after_s", "worker_cpu_ms_per_report", "worker_rss_mib",
               "worker_cpu_ms_per_report_after_start", "claim_latency_after_first_ms",
               "worker_system_cpu_ms_per_report_after_start", "stub_cpu_share", "idle_ms_per_report"}
PRINTED = ["wall time:", "reports per second:", "calls per second:", "endpoint utilisation:", "per-report overhead:",
           "idle per report (mean):",
           "claim latency:", "supervisor CPU share:", "peak RSS:", "worker CPU per report:", "RSS per worker:",
           "baseline (predecessor):",
           "utilisation side by side:"]


@needs_tmux
def test_a_tiny_benchmark_runs_the_real_system_and_the_baseline_and_prints_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = CliRunner().invoke(command, ["--apis", "2", "--reports", "6", "--latency-ms", "20",
                                          "--baseline-reports", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for label in PRINTED:
        assert label in result.output
    figures = json.loads(out.read_text())
    baseline_keys = SYSTEM_KEYS - {"pipeline_overhead_ms", "claim_latency_ms", "supervisor_cpu_share",
                                   "peak_rss_mib", "client_utilisation_whole_run", "worker_cpu_ms_per_report",
                                   "worker_rss_mib", "worker_cpu_ms_per_report_after_start",
                                   "claim_latency_after_first_ms", "worker_system_cpu_ms_per_report_after_start",
                                   "stub_cpu_share"}
    assert set(figures["system"]) >= SYSTEM_KEYS and set(figures["baseline"]) >= baseline_keys
    assert figures["system"]["reports"] == 6 and figures["system"]["calls"] == 18
    system = figures["system"]
    assert 0 <= system["worker_system_cpu_ms_per_report_after_start"] <= system["worker_cpu_ms_per_report_after_start"]
    assert system["stub_cpu_share"] >= 0  # measured (18 calls may take less than one clock tick)
    assert "ms in the kernel" in result.output and "the stub's" in result.output
    assert figures["system"]["worker_cpu_ms_per_report"] > 0 and figures["system"]["worker_rss_mib"]["workers"] >= 2
    assert figures["system"]["claim_latency_ms"]["n"] == 6
    assert all(isinstance(v, float) for v in system["idle_ms_per_report"].values())  # 3 calls a report, 3 each
    assert figures["system"]["claim_latency_after_first_ms"]["n"] in (4, 5)  # one first claim per worker left out
    assert figures["baseline"]["reports"] == 2
    assert {"steady", "whole_run"} <= set(figures["system"]["utilisation"])


def test_a_tiny_claim_benchmark_hands_out_every_report_once_in_order(tmp_path: Path) -> None:
    options = ClaimBenchOptions(files=5_000, max_gap=10_000, claimers=4, claims_each=25, think_ms=1.0)
    result = run_claim_bench(options, say=lambda line: None, work_dir=tmp_path)
    assert result["claims"] == 100 and result["in_order_no_repeat"] is True
    assert result["claim_latency_ms"]["n"] == 100 and result["first_claim_after_start_s"] is not None
    printed = "\n".join(format_claim_result(result))
    for label in ("claim latency:", "release latency:", "first claim after start:", "folder scan at start:"):
        assert label in printed
    assert list(tmp_path.iterdir()) == []  # its files are gone


def test_cpu_after_start_divides_the_cpu_since_each_first_claim_by_the_reports_claimed() -> None:
    from distill.bench.figures import cpu_after_start

    timings = [{"claim_s": [0.001] * 3, "cpu_s": 1.5, "cpu_at_first_claim_s": 1.2},
               {"claim_s": [0.001], "cpu_s": 0.9, "cpu_at_first_claim_s": 0.8},
               {"claim_s": [], "cpu_s": 0.5, "cpu_at_first_claim_s": None}]  # claimed nothing: left out
    assert cpu_after_start(timings) == pytest.approx(100.0)
    kernel = [{"claim_s": [0.001] * 2, "system_s": 0.3, "system_at_first_claim_s": 0.1},
              {"claim_s": [0.001] * 2, "cpu_s": 0.3, "cpu_at_first_claim_s": 0.1}]  # an older worker: no kernel figure
    assert cpu_after_start(kernel, "system") == pytest.approx(100.0)
    assert cpu_after_start([]) is None
