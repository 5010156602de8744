"""The benchmark's measurements: utilisation and overhead from the stub's call timeline, and
the supervisor's CPU share and the job's peak memory from ``/proc``.

A timeline row is one call as the stub saw it: (model, report, step, started, ended), wall clock.
Each endpoint calls with its own model name, so rows say which endpoint was inside a call when.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from distill.core.prices import SAMPLE_PRICE, Price
from distill.job.state import StateDir, proc_stat_fields

Row = tuple[str, int | None, str, float, float]  # model, report, step, started, ended (wall clock)
SAMPLE_EVERY_S = 0.2
#: Pss is read every this many samples: reading /proc/<pid>/smaps_rollup walks the process's page tables (a few
#: percent of a core for sixteen workers at every sample, taken from the job it measures), and Pss moves slowly.
PSS_EVERY_SAMPLES = 10


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100), ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def p50_p99(values: Sequence[float], scale: float = 1.0) -> dict[str, float | None]:
    def fmt(v: float | None) -> float | None:
        return None if v is None else round(v * scale, 3)

    return {"p50": fmt(percentile(values, 50)), "p99": fmt(percentile(values, 99)), "n": len(values)}


def format_ms(block: dict[str, Any]) -> str:
    """A ``p50_p99`` block of milliseconds as one printed phrase."""
    return f"p50 {block['p50']} ms, p99 {block['p99']} ms (n={block['n']})"


def busy_time(rows: Iterable[Row], t0: float, t1: float) -> float:
    """Seconds of calls inside the window ``[t0, t1]``, summed over calls."""
    return sum(max(0.0, min(end, t1) - max(start, t0)) for _m, _r, _s, start, end in rows)


def steady_window(rows: Sequence[Row]) -> tuple[float, float] | None:
    """From the last endpoint's first call to the first endpoint's last call; ``None`` when empty."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for model, _r, _s, start, end in rows:
        first[model] = min(first.get(model, start), start)
        last[model] = max(last.get(model, end), end)
    if not first:
        return None
    t0, t1 = max(first.values()), min(last.values())
    return (t0, t1) if t1 > t0 else None


def _reports_by_endpoint(rows: Sequence[Row]) -> list[list[list[Row]]]:
    """Per endpoint (model), its reports in the order it ran them, each report's calls in order."""
    by_model: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_model[row[0]].append(row)
    return [[list(calls) for _report, calls in itertools.groupby(sorted(model_rows, key=lambda r: r[3]),
                                                                  key=lambda r: r[1])]
            for model_rows in by_model.values()]


def _gaps(calls: list[Row]) -> float:
    """Seconds between the calls of one report."""
    return sum(max(0.0, b[3] - a[4]) for a, b in itertools.pairwise(calls))


def report_overheads(rows: Sequence[Row]) -> list[float]:
    """Per report, the endpoint's time outside calls: from its first call to the next report's first call,
    minus the time inside its calls. Each endpoint's last report has no next one and is left out."""
    return [max(0.0, following[0][3] - report[0][3] - sum(end - start for *_, start, end in report))
            for reports in _reports_by_endpoint(rows) for report, following in itertools.pairwise(reports)]


def idle_split(rows: Sequence[Row]) -> dict[str, float | None]:
    """Mean milliseconds an endpoint waits per report, split where the wait falls: between the calls of one
    report (``between_steps``) and from a report's last call to the next report's first (``between_reports``).
    Utilisation follows the means, not the medians. Each endpoint's last report has no next one."""
    endpoints = _reports_by_endpoint(rows)
    steps = [_gaps(report) for reports in endpoints for report in reports]
    between = [max(0.0, following[0][3] - report[-1][4])
               for reports in endpoints for report, following in itertools.pairwise(reports)]
    return {"between_steps": _mean_ms(steps), "between_reports": _mean_ms(between)}


def _mean_ms(seconds: list[float]) -> float | None:
    return round(1000.0 * sum(seconds) / len(seconds), 3) if seconds else None


def phase_figures(rows: Sequence[Row], endpoints: int, t0: float, t1: float, reports: int) -> dict[str, Any]:
    """Throughput and utilisation of one phase (the system or the baseline)."""
    wall = max(t1 - t0, 1e-9)
    window = steady_window(rows)
    steady = None
    steady_s = 0.0
    if window is not None:
        steady_s = window[1] - window[0]
        steady = round(busy_time(rows, *window) / (endpoints * steady_s), 4)
    overheads = report_overheads(rows)
    return {
        "wall_s": round(wall, 3),
        "reports": reports,
        "calls": len(rows),
        "reports_per_s": round(reports / wall, 3),
        "calls_per_s": round(len(rows) / wall, 3),
        "utilisation": {"whole_run": round(busy_time(rows, t0, t1) / (endpoints * wall), 4),
                        "steady": steady, "steady_window_s": round(steady_s, 3)},
        "overhead_ms": p50_p99(overheads, 1000.0),
        "idle_ms_per_report": idle_split(rows),
        "first_call_after_s": round(min(r[3] for r in rows) - t0, 3) if rows else None,
    }


# --- the pieces the benchmark starts ---------------------------------------------------------


def cpu_ticks(pid: int) -> int | None:
    fields = proc_stat_fields(pid)
    try:
        return int(fields[11]) + int(fields[12]) if fields is not None else None  # utime + stime
    except (IndexError, ValueError):
        return None


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _private_bytes(pid: int) -> int:
    """A process's own memory: anonymous pages plus its share of the file pages it maps (``Pss``)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            for line in handle:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class ProcessSampler:
    """Samples the supervisor's CPU time, the RSS of supervisor plus workers, and each worker's CPU time and
    RSS, on a thread."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.peak_rss = 0
        self.peak_processes = 0
        self.cpu: dict[int, tuple[float, int, float, int]] = {}  # pid -> first (time, ticks), last (time, ticks)
        self.worker_ticks: dict[int, int] = {}  # worker pid -> utime + stime when last seen
        self.worker_peak_rss: dict[int, int] = {}  # worker pid -> largest VmRSS seen
        self.worker_peak_pss: dict[int, int] = {}  # worker pid -> largest Pss seen (shared pages divided)
        self._samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        job = self.state.running_job()
        supervisor = int(job["pid"]) if job is not None and "pid" in job else None
        pids = {int(b["pid"]) for b in self.state.read_heartbeats().values()
                if isinstance(b.get("pid"), int) and b.get("state") != "exited"}
        workers = {pid: _rss_bytes(pid) for pid in pids}
        read_pss = self._samples % PSS_EVERY_SAMPLES == 0
        self._samples += 1
        for pid, rss in workers.items():
            ticks = cpu_ticks(pid)
            if ticks is not None and rss:
                self.worker_ticks[pid] = max(ticks, self.worker_ticks.get(pid, 0))
                self.worker_peak_rss[pid] = max(rss, self.worker_peak_rss.get(pid, 0))
                if read_pss or pid not in self.worker_peak_pss:
                    self.worker_peak_pss[pid] = max(_private_bytes(pid), self.worker_peak_pss.get(pid, 0))
        if supervisor is not None:
            pids.add(supervisor)
            ticks = cpu_ticks(supervisor)
            if ticks is not None:
                now = time.monotonic()
                first_t, first_ticks = self.cpu.get(supervisor, (now, ticks, now, ticks))[:2]
                self.cpu[supervisor] = (first_t, first_ticks, now, ticks)
        total = sum(_rss_bytes(pid) for pid in pids)
        if total > self.peak_rss:
            self.peak_rss, self.peak_processes = total, len(pids)

    def supervisor_cpu_share(self) -> float | None:
        """CPU seconds over wall seconds of the supervisor while it was sampled (1.0 = one core)."""
        spans = [(t1 - t0, k1 - k0) for t0, k0, t1, k1 in self.cpu.values() if t1 > t0]
        if not spans:
            return None
        wall = sum(s for s, _ in spans)
        return sum(k for _, k in spans) / os.sysconf("SC_CLK_TCK") / wall

    def worker_cpu_s(self) -> float:
        """Seconds of CPU (utime + stime) of every worker seen, up to its last sample, summed."""
        return sum(self.worker_ticks.values()) / os.sysconf("SC_CLK_TCK")

    def worker_rss(self) -> dict[str, float | int | None]:
        """Each worker's largest RSS, in MiB: the largest and the mean over workers, how many were seen, and the
        same two of ``Pss`` (the pages workers share, such as libraries, divided among them)."""
        peaks = [v / 2**20 for v in self.worker_peak_rss.values()]
        pss = [v / 2**20 for v in self.worker_peak_pss.values() if v]
        if not peaks:
            return {"peak": None, "mean": None, "workers": 0, "pss_peak": None, "pss_mean": None}
        return {"peak": round(max(peaks), 1), "mean": round(sum(peaks) / len(peaks), 1), "workers": len(peaks),
                "pss_peak": round(max(pss), 1) if pss else None,
                "pss_mean": round(sum(pss) / len(pss), 1) if pss else None}

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.sample()


def cpu_after_start(timings: list[dict[str, Any]], kind: str = "cpu") -> float | None:
    """Worker CPU per report from each worker's first claim to its exit, as the workers timed it themselves
    (``kind`` "system": only the part spent in the kernel)."""
    spans = [(t[f"{kind}_s"] - t[f"{kind}_at_first_claim_s"], len(t.get("claim_s", []))) for t in timings
             if isinstance(t.get(f"{kind}_s"), float) and isinstance(t.get(f"{kind}_at_first_claim_s"), float)]
    reports = sum(n for _, n in spans)
    return round(1000 * sum(s for s, _ in spans) / reports, 2) if reports else None


def token_figures(tokens: dict[str, int], price: Price = SAMPLE_PRICE) -> dict[str, Any]:
    """Input tokens per report, the cached share of input tokens, and the cost of 1,000 such reports at
    ``price`` (the sample table unless given)."""
    reports = max(tokens.get("reports", 0), 1)
    prompt, cached = tokens.get("prompt_tokens", 0), tokens.get("cached_tokens", 0)
    cost = price.cost(prompt, cached, tokens.get("completion_tokens", 0))
    return {
        "input_tokens_per_report": round(prompt / reports, 1),
        "cached_tokens_per_report": round(cached / reports, 1),
        "output_tokens_per_report": round(tokens.get("completion_tokens", 0) / reports, 1),
        "cached_share": round(cached / prompt, 4) if prompt else 0.0,
        "cost_per_1000_reports": round(1000 * cost / reports, 4),
        "sample_price": {"input": price.input, "cached_input": price.cached_input, "output": price.output},
    }
