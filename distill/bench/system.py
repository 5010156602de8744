"""The benchmark: the real system against a loopback stub, with the predecessor's design beside it.

``run_bench`` starts ``distill.bench.stub_server`` in a process of its own (it answers every call after a
fixed latency and keeps each call's start and end), generates notes (or takes a folder), and runs
a real job (supervisor, one tmux session per endpoint, claims, outputs) in its own state
directory, tmux socket, session prefix and output folder until drained. Then it runs
``data/predecessor_dispatch.sh`` (1 s dispatch rounds, a new Python process per report) against
the same stub. Each endpoint calls the stub with its own model name, so the stub's timeline says
which endpoint was inside a call when.

Utilisation is computed from that timeline, i.e. from the endpoint's side: the time the stub
spent answering, summed over calls, over (endpoints x window). "Whole run" uses the window from
launch to the observed end of the job; "steady" uses the window in which every endpoint is
running: from the moment the last endpoint began its first call to the moment the first endpoint
finished its last call.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.bench.figures import (
    ProcessSampler,
    Row,
    cpu_after_start,
    cpu_ticks,
    format_ms,
    p50_p99,
    phase_figures,
    token_figures,
)
from distill.core.config import project_root
from distill.core.errors import DistillError
from distill.job.state import StateDir
from distill.job.tmux import TmuxError
from distill.job.worker import PROFILE_ENV
from distill.results.atomic import read_json
from distill.results.store import RAW_DIR, OutputStore

MODEL_PREFIX = "bench-api-"
PREDECESSOR_SCRIPT = Path(__file__).resolve().parent / "data" / "predecessor_dispatch.sh"


class BenchError(DistillError):
    """The benchmark could not run (tmux missing, the stub or the job did not start, a timeout)."""


@dataclass(frozen=True)
class BenchOptions:
    """What to measure. ``baseline_reports=None`` means min(reports, 4 x apis); 0 skips the baseline."""

    apis: int = 16
    reports: int = 1000
    latency_ms: float = 200.0
    input_dir: Path | None = None
    baseline_reports: int | None = None
    keep: bool = False
    timeout_s: float | None = None
    claims_url: str | None = None  # run the job on the Redis backend (an empty database: its keys go at the end)
    profile_dir: Path | None = None  # each worker writes its cProfile statistics there


class StubProcess:
    """``python -m distill.bench.stub_server`` on a free loopback port, with its timeline kept."""

    def __init__(self, latency_ms: float) -> None:
        command = [sys.executable, "-m", "distill.bench.stub_server", "--port", "0", "--latency-ms", f"{latency_ms:g}",
                   "--timeline"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        cwd=project_root())
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"http://[\d.]+:\d+/v1", line)
        if found is None:
            self.stop()
            raise BenchError(f"the stub server did not start: {line.strip() or 'no output'}")
        self.url = found.group(0)

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system) the stub has used so far; None once it is gone."""
        ticks = cpu_ticks(self.process.pid)
        return ticks / os.sysconf("SC_CLK_TCK") if ticks is not None else None

    def timeline(self) -> list[Row]:
        with urllib.request.urlopen(self.url.rsplit("/v1", 1)[0] + "/timeline", timeout=60) as response:
            rows = json.loads(response.read())["calls"]
        return [(str(m), r, str(s), float(a), float(b)) for m, r, s, a, b in rows]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- notes -------------------------------------------------------------------------------------

_COMPLAINTS = ("chest pain", "shortness of breath", "abdominal pain", "headache", "cough", "back pain", "dizziness")
_FINDINGS = ("a systolic murmur", "bilateral lower extremity edema", "right upper quadrant tenderness",
             "decreased breath sounds at the left base", "an irregularly irregular rhythm", "neck stiffness")
_ASSESSMENTS = ("congestive heart failure", "community acquired pneumonia", "acute cholecystitis",
                "migraine without aura", "atrial fibrillation", "lumbar strain")


def note_text(number: int) -> str:
    """A short, sectioned synthetic note; its wording varies with ``number``."""
    pick = lambda items, k: items[(number * k) % len(items)]  # noqa: E731
    return (
        f"CHIEF COMPLAINT: {pick(_COMPLAINTS, 1).capitalize()} for {number % 9 + 1} days.\n\n"
        f"HISTORY OF PRESENT ILLNESS: The patient reports {pick(_COMPLAINTS, 1)} and {pick(_COMPLAINTS, 3)}. "
        "He denies fever or chills. Symptoms are worse at night.\n\n"
        f"PHYSICAL EXAMINATION: Blood pressure {110 + number % 40}/{70 + number % 15}. "
        f"Examination shows {pick(_FINDINGS, 1)} and {pick(_FINDINGS, 5)}.\n\n"
        f"ASSESSMENT: {pick(_ASSESSMENTS, 1).capitalize()}. Possible {pick(_ASSESSMENTS, 2)}.\n\n"
        "PLAN: Laboratory studies, imaging, and follow up in one week.\n"
    )


def write_notes(folder: Path, numbers: Iterable[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number in numbers:
        (folder / f"report_{number}.txt").write_text(note_text(number), encoding="utf-8")


def _numbers_in(folder: Path) -> list[int]:
    from distill.job.claims import scan_input

    return list(scan_input(folder, 0, None))


# --- the two phases ----------------------------------------------------------------------------


def socket_name(tag: str) -> str:
    """The tmux socket of the run tagged ``tag``: the only tmux server that run may kill."""
    return f"diagbench_{tag}"


@dataclass
class Workspace:
    """Everything one benchmark run owns: folders, socket, prefix, environment."""

    root: Path
    tag: str
    env: dict[str, str]

    @property
    def socket(self) -> str:
        return socket_name(self.tag)

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path


def make_workspace(apis: int, stub_url: str, root: Path) -> Workspace:
    tag = uuid.uuid4().hex[:8]
    config = root / "bench_config.py"
    config.write_text("from distill.core.config import endpoint_table\n"
                      f"MULTI_API_CONFIG = endpoint_table({apis})\nCHECK_INTERVAL = 0.5\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DIAG_") and k not in ("TMUX", "TMUX_PANE")}
    env.update(DIAG_CONFIG=str(config), DIAG_STATE_DIR=str(root / "state"), DIAG_TMUX_SOCKET=socket_name(tag),
               DIAG_SESSION_PREFIX=f"bench{tag}", DIAG_API_KEY="bench-key", DIAG_BASE_URL=stub_url,
               DIAG_MODEL="bench-model", DIAG_BENCH_DIR=str(root / "timings"))
    env.update({f"DIAG_API_{i}_MODEL": f"{MODEL_PREFIX}{i}" for i in range(1, apis + 1)})
    workspace = Workspace(root, tag, env)
    workspace.folder("timings")
    return workspace


def _raw_figures(output: Path) -> tuple[list[float], float, dict[str, int]]:
    """Per-report time outside calls inside the pipeline (duration_s - usage.latency_s), all call latency,
    and the tokens of every done report (plus their count)."""
    inside: list[float] = []
    latency = 0.0
    tokens = {"reports": 0, "prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0}
    for path in (output / RAW_DIR).glob("diagnostic_*.json"):
        raw = read_json(path)
        if isinstance(raw, dict):
            used = float(raw["usage"]["latency_s"])
            latency += used
            inside.append(max(0.0, float(raw["timings"]["duration_s"]) - used))
            tokens["reports"] += 1
            for name in ("prompt_tokens", "cached_tokens", "completion_tokens"):
                tokens[name] += int(raw["usage"].get(name) or 0)
    return inside, latency, tokens


def run_system(ws: Workspace, stub: StubProcess, numbers: list[int], input_dir: Path, apis: int,
               timeout_s: float, say: Callable[[str], None]) -> dict[str, Any]:
    """Run the real job until drained; return its figures."""
    state = StateDir(Path(ws.env["DIAG_STATE_DIR"]))
    output = ws.folder("out")
    # The supervisor runs in the foreground of a child process (its workers still get tmux sessions):
    # with 64 endpoints, starting every session can outlast the background launcher's wait.
    command = [sys.executable, "-m", "distill", "start", str(numbers[0]), "--end", str(numbers[-1]),
               "--until-drained", "--foreground", "--input-dir", str(input_dir), "--output-dir", str(output)]
    say(f"system: {len(numbers)} reports, {apis} endpoints, tmux socket {ws.socket}")
    t0, stub_cpu0 = time.time(), stub.cpu_s()
    with ProcessSampler(state) as sampler:
        log = (ws.root / "supervisor.log").open("w")
        supervisor = subprocess.Popen(command, env=ws.env, cwd=project_root(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        try:
            while supervisor.poll() is None:
                status = state.read_status() or {}
                if status.get("state") == "stopped" and state.running_job() is None:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"the job did not drain within {timeout_s:.0f} s (state {state.root})")
                time.sleep(0.05)
            t1, stub_cpu1 = time.time(), stub.cpu_s()
            code = supervisor.wait(timeout=60)
        finally:
            if supervisor.poll() is None:
                supervisor.terminate()  # our own child: asks it to stop its workers gracefully
                supervisor.wait(timeout=60)
            log.close()
        if code != 0:
            tail = (ws.root / "supervisor.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise BenchError(f"the job ended with exit status {code}: {' | '.join(tail)}")
    rows = [r for r in stub.timeline() if r[3] >= t0]
    counts = OutputStore(output).counts()
    figures = phase_figures(rows, apis, t0, t1, counts["raw"])
    pipeline_overhead, client_latency, tokens = _raw_figures(output)
    timings = [t for t in (read_json(p) for p in (ws.root / "timings").glob("*.json")) if isinstance(t, dict)]
    claims = [s for t in timings for s in t.get("claim_s", [])]
    later_claims = [s for t in timings for s in t.get("claim_s", [])[1:]]  # the start's queue of first claims left out
    figures.update(
        failed=counts["failed"],
        client_utilisation_whole_run=round(client_latency / (apis * max(t1 - t0, 1e-9)), 4),
        pipeline_overhead_ms=p50_p99(pipeline_overhead, 1000.0),
        claim_latency_ms=p50_p99(claims, 1000.0),
        claim_latency_after_first_ms=p50_p99(later_claims, 1000.0),
        supervisor_cpu_share=_round(sampler.supervisor_cpu_share(), 4),
        stub_cpu_share=(round((stub_cpu1 - stub_cpu0) / max(t1 - t0, 1e-9), 4)
                        if stub_cpu0 is not None and stub_cpu1 is not None else None),
        peak_rss_mib=round(sampler.peak_rss / 2**20, 1),
        peak_rss_processes=sampler.peak_processes,
        worker_cpu_ms_per_report=round(1000 * sampler.worker_cpu_s() / max(counts["raw"], 1), 2),
        worker_cpu_ms_per_report_after_start=cpu_after_start(timings),
        worker_system_cpu_ms_per_report_after_start=cpu_after_start(timings, "system"),
        worker_rss_mib=sampler.worker_rss(),
        tokens=token_figures(tokens),
    )
    return figures


def run_baseline(ws: Workspace, stub: StubProcess, numbers: list[int], input_dir: Path, apis: int,
                 timeout_s: float, say: Callable[[str], None]) -> dict[str, Any]:
    """The predecessor's dispatch loop on the same stub; return its figures."""
    output, work = ws.folder("baseline_out"), ws.folder("baseline_state")
    say(f"baseline: {len(numbers)} reports through predecessor_dispatch.sh (1 s rounds, a process per report)")
    command = ["bash", str(PREDECESSOR_SCRIPT), str(input_dir), str(output), str(numbers[0]), str(numbers[-1]),
               str(apis), str(work), sys.executable]
    t0 = time.time()
    result = subprocess.run(command, env=ws.env, cwd=project_root(), capture_output=True, text=True,
                            timeout=timeout_s, check=False)
    t1 = time.time()
    if result.returncode != 0:
        raise BenchError(f"the baseline script failed: {(result.stderr or result.stdout).strip()[-300:]}")
    rows = [r for r in stub.timeline() if t0 <= r[3] <= t1]
    counts = OutputStore(output).counts()
    figures = phase_figures(rows, apis, t0, t1, counts["raw"])
    figures["failed"] = counts["failed"]
    return figures


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _nothing() -> None:
    return None


def _use_redis(ws: Workspace, url: str | None) -> Callable[[], None]:
    """Point the benchmark's job at Redis ``url``; returns what deletes its keys afterwards."""
    if url is None:
        return _nothing
    from distill.job.claims_redis import PREFIX, RedisClaimBook

    book = RedisClaimBook(url, OutputStore(ws.root), ws.root)
    book.ping()
    if book.client.exists(PREFIX + "job"):
        raise BenchError(f"Redis at {url} holds a job (key {PREFIX}job); give the benchmark an empty database "
                         f"(--claims-url redis://host:port/<another db>)")
    ws.env["DIAG_CLAIMS_URL"] = url

    def forget() -> None:
        with contextlib.suppress(DistillError):
            book.forget()

    return forget


def run_bench(options: BenchOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole benchmark and return every figure (see ``docs/benchmark.md`` for each key)."""
    if shutil.which("tmux") is None:
        raise TmuxError("tmux is not installed (install it with your package manager, e.g. apt-get install tmux)")
    root = Path(tempfile.mkdtemp(prefix="diag-bench-"))
    stub = StubProcess(options.latency_ms)
    ws = make_workspace(options.apis, stub.url, root)
    forget: Callable[[], None] = _nothing
    try:
        forget = _use_redis(ws, options.claims_url)
        if options.profile_dir is not None:
            options.profile_dir.mkdir(parents=True, exist_ok=True)
            ws.env[PROFILE_ENV] = str(options.profile_dir)
        if options.input_dir is not None:
            input_dir = options.input_dir.resolve()
            numbers = _numbers_in(input_dir)[: options.reports]
        else:
            input_dir = ws.folder("in")
            numbers = list(range(1, options.reports + 1))
            write_notes(input_dir, numbers)
        if not numbers:
            raise BenchError(f"no report_<N> files in {input_dir}")
        per_report = 3 * options.latency_ms / 1000.0
        timeout = options.timeout_s or 120.0 + 5 * per_report * len(numbers) / options.apis
        result: dict[str, Any] = {
            "apis": options.apis, "latency_ms": options.latency_ms, "reports_asked": len(numbers),
            "cpus": os.cpu_count(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "load_average_before": os.getloadavg()[0],
            "claims_backend": "redis" if options.claims_url else "file",
        }
        result["system"] = run_system(ws, stub, numbers, input_dir, options.apis, timeout, say)
        count = min(len(numbers), 4 * options.apis) if options.baseline_reports is None else options.baseline_reports
        if count > 0:
            base = numbers[:count]
            base_timeout = options.timeout_s or 120.0 + 3 * (1.0 + per_report) * len(base) / options.apis
            result["baseline"] = run_baseline(ws, stub, base, input_dir, options.apis, base_timeout, say)
        result["load_average_after"] = os.getloadavg()[0]
        return result
    finally:
        stub.stop()
        forget()
        # Only the tmux server on this run's own socket, which this run started.
        subprocess.run(["tmux", "-L", ws.socket, "kill-server"], capture_output=True, check=False)
        if options.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def format_result(result: dict[str, Any]) -> list[str]:
    """The figures as printed lines."""
    s = result["system"]
    base = result.get("baseline")
    lines = [
        f"benchmark: {result['apis']} endpoints, stub latency {result['latency_ms']:g} ms, "
        f"{result['reports_asked']} reports, {result['cpus']} CPUs, load average {result['load_average_before']:.2f}, "
        f"claims on {result.get('claims_backend', 'file')}",
        f"wall time:                 {s['wall_s']:.2f} s ({s['reports']} done, {s['failed']} failed)",
        f"reports per second:        {s['reports_per_s']:.2f}",
        f"calls per second:          {s['calls_per_s']:.2f}",
        f"endpoint utilisation:      steady {s['utilisation']['steady']} over {s['utilisation']['steady_window_s']} s, "
        f"whole run {s['utilisation']['whole_run']}",
        f"per-report overhead:       {format_ms(s['overhead_ms'])} (outside calls, endpoint side)",
        f"idle per report (mean):    {s['idle_ms_per_report']['between_steps']} ms between its calls, "
        f"{s['idle_ms_per_report']['between_reports']} ms before the next report's first call",
        f"pipeline overhead:         {format_ms(s['pipeline_overhead_ms'])} (read, parse, normalize; no commit)",
        f"claim latency:             {format_ms(s['claim_latency_ms'])}; after each worker's first claim "
        f"{format_ms(s['claim_latency_after_first_ms'])}",
        f"supervisor CPU share:      {s['supervisor_cpu_share']} of one core; the stub's "
        f"{s.get('stub_cpu_share')} (the same cores, a cost a remote endpoint would not add)",
        f"peak RSS:                  {s['peak_rss_mib']} MiB ({s['peak_rss_processes']} processes)",
        f"worker CPU per report:     {s['worker_cpu_ms_per_report']} ms (utime + stime of every worker / reports done); "
        f"{s['worker_cpu_ms_per_report_after_start']} ms after start-up (from each worker's first claim), "
        f"of which {s.get('worker_system_cpu_ms_per_report_after_start')} ms in the kernel",
        f"RSS per worker:            peak {s['worker_rss_mib']['peak']} MiB, mean {s['worker_rss_mib']['mean']} MiB "
        f"(each worker's largest, over {s['worker_rss_mib']['workers']} workers); Pss peak "
        f"{s['worker_rss_mib']['pss_peak']} MiB, mean {s['worker_rss_mib']['pss_mean']} MiB (shared pages divided)",
    ]
    if "tokens" in s:
        t = s["tokens"]
        p = t["sample_price"]
        lines += [
            f"input tokens per report:   {t['input_tokens_per_report']:g} ({t['cached_tokens_per_report']:g} cached), "
            f"output {t['output_tokens_per_report']:g}",
            f"cached share of input:     {t['cached_share']:.3f}",
            f"cost per 1,000 reports:    {t['cost_per_1000_reports']:.4f} at the sample price per million tokens "
            f"(input {p['input']:g}, cached input {p['cached_input']:g}, output {p['output']:g})",
        ]
    if base:
        lines.append(f"baseline (predecessor):    {base['reports']} reports in {base['wall_s']:.2f} s, "
                     f"{base['reports_per_s']:.2f} reports/s, {base['calls_per_s']:.2f} calls/s")
        lines.append(f"utilisation side by side:  system steady {s['utilisation']['steady']} / whole run "
                     f"{s['utilisation']['whole_run']}; predecessor steady {base['utilisation']['steady']} / "
                     f"whole run {base['utilisation']['whole_run']}")
    else:
        lines.append("baseline (predecessor):    skipped")
    return lines
