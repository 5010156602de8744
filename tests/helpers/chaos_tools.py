"""Helpers for the fault-tolerance suites: endpoint configs, random fault plans, reading a run's outputs."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.bench.stub_server import CallInfo, Fault
from distill.job.state import CLAIMS_FILE, StateDir, identity_alive
from distill.results.atomic import read_json
from distill.results.store import OutputStore
from tests.helpers.notes import SHARED_NOTES, write_notes

#: Every class a failure record may name (see docs/invariants.md).
FAILURE_CLASSES = {"bad_input", "api_auth", "api_unavailable", "api_rate_limited", "api_bad_request",
                   "invalid_output", "io_error", "api_error", "internal"}


def write_endpoint_config(folder: Path, *, endpoints: int, check_interval: float = 0.5, timeout: float = 5.0,
                          max_attempts: int = 5, backoff_base: float = 0.05, backoff_cap: float = 0.2,
                          max_report_bytes: int = 2_000_000, health: dict[str, float] | None = None) -> Path:
    """A config file whose endpoints call ``DIAG_API_<i>_BASE_URL``, else ``DIAG_BASE_URL``, with ``DIAG_API_KEY``,
    each with its own model name (``stub-api_<i>``), so the stub counts calls per endpoint; retries are fast.
    ``health`` adds endpoint settings (``down_after``, ``probe_min``, ``probe_max``) to every endpoint."""
    config = folder / "chaos_config.py"
    extra = "".join(f"'{name}': {value!r}, " for name, value in (health or {}).items())
    config.write_text(
        "import os\n"
        "MULTI_API_CONFIG = {\n"
        f"    f'api_{{i}}': {{{extra}'name': f'api_{{i}}',\n"
        f"                  'base_url': os.environ.get(f'DIAG_API_{{i}}_BASE_URL', os.environ['DIAG_BASE_URL']),\n"
        f"                  'model': f'stub-api_{{i}}', 'api_key': os.environ.get(f'DIAG_API_{{i}}_KEY',\n"
        f"                  os.environ['DIAG_API_KEY']), 'provider': 'openai', 'timeout': {timeout},\n"
        f"                  'max_attempts': {max_attempts}, 'backoff_base': {backoff_base},\n"
        f"                  'backoff_cap': {backoff_cap}}}\n"
        f"    for i in range(1, {endpoints + 1})\n"
        "}\n"
        f"CHECK_INTERVAL = {check_interval}\n"
        f"MAX_REPORT_BYTES = {max_report_bytes}\n"
    )
    return config


def copy_notes(folder: Path, count: int) -> list[int]:
    """``count`` real notes from the shared sample folder when present, else generated ones; their numbers."""
    folder.mkdir(parents=True, exist_ok=True)
    if SHARED_NOTES.is_dir():
        sources = sorted(SHARED_NOTES.glob("report_*.txt"), key=lambda p: int(p.stem.split("_")[1]))[:count]
        if len(sources) == count:
            for source in sources:
                shutil.copyfile(source, folder / source.name)
            return [int(p.stem.split("_")[1]) for p in sources]
    numbers = list(range(1, count + 1))
    write_notes(folder, numbers)
    return numbers


@dataclass
class RandomFaults:
    """A stub ``fault_plan``: each call is faulted with probability ``rate``, the kind drawn from ``kinds``.

    Thread-safe and seeded. ``hang`` holds the call past a client timeout of
    ``hang_s`` / 2; 429s ask for a ``Retry-After`` of 0, 0.5 or 1 s.
    """

    rate: float
    kinds: tuple[str, ...]
    seed: int = 0
    hang_s: float = 1.0
    injected: Counter[str] = field(default_factory=Counter)
    calls: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def __call__(self, call: CallInfo) -> Fault:
        with self._lock:
            self.calls += 1
            if self._rng.random() >= self.rate:
                return Fault()
            kind = self._rng.choice(self.kinds)
            self.injected[kind] += 1
            if kind == "429":
                return Fault("429", retry_after=self._rng.choice((0.0, 0.5, 1.0)))
            if kind == "latency":
                return Fault("latency", delay_s=self._rng.uniform(0.05, 0.3))
            if kind == "hang":
                return Fault("hang", delay_s=self.hang_s)
            return Fault(kind)


@dataclass
class RunOutputs:
    """What a finished run left in its output folder."""

    done: set[int]
    failed: dict[int, dict[str, Any]]
    raw: dict[int, dict[str, Any]]
    normalized: dict[int, Any]

    def recorded_calls(self) -> Counter[int]:
        """HTTP attempts per report, as the final raw file or failure record lists them."""
        counts: Counter[int] = Counter()
        for number, doc in [*self.raw.items(), *self.failed.items()]:
            counts[number] += len(doc.get("calls", []))
        return counts


def read_outputs(output: Path) -> RunOutputs:
    raw = {_number(p): read_json(p) for p in (output / "diagnostic_results").glob("diagnostic_*.json")}
    normalized = {_number(p): read_json(p) for p in (output / "diagnostic_results_normalized").glob("diagnostic_*.json")}
    failed = {_number(p): read_json(p) for p in (output / "failed").glob("diagnostic_*.json")}
    done = {n for n in raw if n in normalized}
    return RunOutputs(done=done, failed=failed, raw=raw, normalized=normalized)


def _number(path: Path) -> int:
    return int(path.stem.split("_")[1])


def stub_counts_by_report(counts: dict[str, int]) -> Counter[int]:
    """Sum a stub ``"<report>/<step>"`` counter per report."""
    per_report: Counter[int] = Counter()
    for key, n in counts.items():
        report = key.split("/", 1)[0]
        if report.lstrip("-").isdigit():
            per_report[int(report)] += n
    return per_report


def kill_worker(state: StateDir, beat: dict[str, Any], output: Path) -> set[int] | None:
    """SIGKILL one worker, first freezing it to read which reports it held; ``None`` when it was already gone.

    A lease is taken before a report's first call and dropped after its commit, so the frozen
    worker's leases name every report it could have a call in flight for; a lease whose report is
    already done (its release is deferred to the next claim) holds no call and is left out.
    """
    pid = int(beat["pid"])
    if not identity_alive(beat.get("identity")):
        return None
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return None
    try:
        held = _leases_of(state, {beat["identity"]})
    finally:
        os.kill(pid, signal.SIGKILL)
    store = OutputStore(output)
    return {n for n in held if not store.is_done(n)}


def kill_all(state: StateDir, output: Path) -> tuple[list[int], set[int]]:
    """Freeze the supervisor and every live worker, read the reports they held, SIGKILL them all (a power cut).

    Returns the pids killed and the held reports that were not done (those a call may be in flight for).
    """
    beats = [b for b in state.read_heartbeats().values() if identity_alive(b.get("identity"))]
    job = state.running_job()
    pids = ([int(job["pid"])] if job else []) + [int(b["pid"]) for b in beats]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    held = _leases_of(state, {b["identity"] for b in beats})
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    store = OutputStore(output)
    return pids, {n for n in held if not store.is_done(n)}


def _leases_of(state: StateDir, identities: set[str]) -> set[int]:
    claims = read_json(state.path(CLAIMS_FILE)) or {}
    return {int(n) for n, lease in claims.get("leases", {}).items() if lease.get("identity") in identities}


def files_containing(needle: bytes, *folders: Path) -> list[Path]:
    """Every regular file below ``folders`` whose bytes contain ``needle``."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    if needle in path.read_bytes():
                        found.append(path)
                except OSError:
                    continue
    return found
