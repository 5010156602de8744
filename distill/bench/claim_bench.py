"""The claim benchmark: many report files with large gaps, many processes claiming at once.

``run_claim_bench`` fills a folder with empty ``report_<N>.txt`` files (numbers with gaps of up
to ``max_gap``, the first one ``max_gap`` above START), starts ``claimers`` processes that each
build their own ``ClaimBook`` and wait, then starts the clock: the job's ``begin`` (one scan of
the folder), then every claimer claims and releases as fast as it can. It reports the latency
of ``claim_next`` and ``release`` across all claimers, and the time from start (before the scan)
to the first report handed out.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from distill.bench.figures import format_ms, p50_p99
from distill.core.errors import DistillError
from distill.job.claims import ClaimBook
from distill.job.claims_backend import ClaimsBackend, shown_url
from distill.job.state import StateDir, my_identity
from distill.results.store import OutputStore

START = 1


@dataclass(frozen=True)
class ClaimBenchOptions:
    """Sizes of one claim benchmark."""

    files: int = 1_000_000
    max_gap: int = 100_000
    claimers: int = 16
    claims_each: int = 200
    think_ms: float = 150.0  # time "processing" each report between release and the next claim; 0 = back to back
    seed: int = 7
    claims_url: str | None = None  # None: the file backend; redis://...: the Redis backend


def _book(state: str, output: str, folder: str, url: str | None, prefix: str) -> ClaimsBackend:
    if url is None:
        return ClaimBook(StateDir(Path(state)), OutputStore(Path(output)), Path(folder))
    from distill.job.claims_redis import RedisClaimBook

    return RedisClaimBook(url, OutputStore(Path(output)), Path(folder), prefix=prefix)


def report_numbers(files: int, max_gap: int, seed: int) -> list[int]:
    """``files`` increasing numbers from ``START + max_gap``: mostly consecutive, now and then a gap of up to ``max_gap``."""
    rng = random.Random(seed)
    numbers: list[int] = []
    number = START + max_gap
    for _ in range(files):
        numbers.append(number)
        roll = rng.random()
        gap = rng.randint(min(1000, max_gap), max_gap) if roll < 0.001 else rng.randint(2, 5) if roll < 0.1 else 1
        number += min(gap, max_gap)
    return numbers


def make_files(folder: Path, numbers: list[int]) -> None:
    """Create an empty ``report_<N>.txt`` for each number."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    for number in numbers:
        os.close(os.open(folder / f"report_{number}.txt", os.O_WRONLY | os.O_CREAT, 0o600))


def _claimer(state: str, output: str, folder: str, api: str, count: int, think_s: float, ready: Any, go: Event,
             results: Any, url: str | None = None, prefix: str = "") -> None:
    book = _book(state, output, folder, url, prefix)
    identity = my_identity()
    claims: list[float] = []
    releases: list[float] = []
    first_at: float | None = None
    numbers: list[int] = []
    rng = random.Random(api)
    ready.put(api)
    go.wait()
    for _ in range(count):
        asked = time.perf_counter()
        claim = book.claim_next(api, identity)
        claims.append(time.perf_counter() - asked)
        if claim is None:
            break
        if first_at is None:
            first_at = time.time()
        numbers.append(claim.number)
        asked = time.perf_counter()
        book.release(claim.number, finished=True)
        releases.append(time.perf_counter() - asked)
        if think_s > 0:
            time.sleep(think_s * rng.uniform(0.5, 1.5))  # jittered, so claimers do not march in step
    results.put({"api": api, "claims": claims, "releases": releases, "first_at": first_at, "numbers": numbers})


def run_claim_bench(options: ClaimBenchOptions, say: Callable[[str], None] = print,
                    work_dir: Path | None = None) -> dict[str, Any]:
    """Build the folder, run the claimers, return the figures (temporary files are removed)."""
    root = Path(tempfile.mkdtemp(prefix="diag-claim-bench-", dir=work_dir))
    prefix = f"diag-bench:{root.name}:"  # never the keys of a job that shares this Redis
    try:
        folder, state, output = root / "in", root / "state", root / "out"
        numbers = report_numbers(options.files, options.max_gap, options.seed)
        say(f"claims: creating {len(numbers):,} files (numbers {numbers[0]:,} .. {numbers[-1]:,})")
        made = time.perf_counter()
        make_files(folder, numbers)
        make_s = time.perf_counter() - made
        StateDir(state).ensure()
        store = OutputStore(output)
        store.prepare()
        context = multiprocessing.get_context("spawn")
        ready, results, go = context.Queue(), context.Queue(), context.Event()
        processes = [context.Process(target=_claimer, args=(str(state), str(output), str(folder), f"api_{i}",
                                                            options.claims_each, options.think_ms / 1000.0,
                                                            ready, go, results, options.claims_url, prefix))
                     for i in range(1, options.claimers + 1)]
        for process in processes:
            process.start()
        for _ in processes:
            ready.get(timeout=120)
        say(f"claims: {options.claimers} claimers ready; scanning and claiming")
        started = time.time()
        scan_s = time.perf_counter()
        _book(str(state), str(output), str(folder), options.claims_url, prefix).begin(START, None)
        scan_s = time.perf_counter() - scan_s
        go.set()
        outcomes = [results.get(timeout=600) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        claims = [s for o in outcomes for s in o["claims"]]
        releases = [s for o in outcomes for s in o["releases"]]
        handed = [n for o in outcomes for n in o["numbers"]]
        firsts = [o["first_at"] for o in outcomes if o["first_at"] is not None]
        expected = numbers[: len(handed)]
        return {
            "backend": "redis" if options.claims_url else "file",
            "files": len(numbers), "max_gap": options.max_gap, "claimers": options.claimers,
            "think_ms": options.think_ms,
            "claims": len(handed), "make_files_s": round(make_s, 2),
            "scan_s": round(scan_s, 3),
            "first_claim_after_start_s": round(min(firsts) - started, 3) if firsts else None,
            "claim_latency_ms": p50_p99(claims, 1000.0),
            "release_latency_ms": p50_p99(releases, 1000.0),
            "in_order_no_repeat": sorted(handed) == expected and len(set(handed)) == len(handed),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if options.claims_url:
            from distill.job.claims_redis import RedisClaimBook

            with contextlib.suppress(DistillError):
                RedisClaimBook(options.claims_url, OutputStore(root), root, prefix=prefix).forget()


def run_backend_comparison(options: ClaimBenchOptions, claims_url: str, claimer_counts: tuple[int, ...] = (16, 64),
                           say: Callable[[str], None] = print, work_dir: Path | None = None) -> dict[str, Any]:
    """The claim benchmark on the file backend and on Redis, for each number of claimers, in one run."""
    runs = []
    for claimers in claimer_counts:
        for url in (None, claims_url):
            say(f"claims: {'redis' if url else 'file'} backend, {claimers} claimers")
            runs.append(run_claim_bench(replace(options, claimers=claimers, claims_url=url), say, work_dir))
    return {"claims_url": shown_url(claims_url), "runs": runs}


def format_comparison(result: dict[str, Any]) -> list[str]:
    """One line per backend and number of claimers: claim and release p50/p99."""
    first = result["runs"][0]
    lines = [f"claim benchmark, file backend beside Redis ({result['claims_url']}): {first['files']:,} files, "
             f"gaps up to {first['max_gap']:,}, {first['think_ms']:g} ms between a release and the next claim",
             f"{'backend':<8} {'claimers':>8} {'claims':>7}  {'claim latency':<38} {'release latency':<38} in order"]
    for run in result["runs"]:
        lines.append(f"{run['backend']:<8} {run['claimers']:>8} {run['claims']:>7}  "
                     f"{format_ms(run['claim_latency_ms']):<38} {format_ms(run['release_latency_ms']):<38} "
                     f"{run['in_order_no_repeat']}")
    return lines


def format_claim_result(result: dict[str, Any]) -> list[str]:
    """The claim figures as printed lines."""
    claim, release = result["claim_latency_ms"], result["release_latency_ms"]
    return [
        f"claim benchmark: {result['files']:,} files, gaps up to {result['max_gap']:,}, {result['claimers']} claimers, "
        f"{result['think_ms']:g} ms between a release and the next claim",
        f"folder scan at start:      {result['scan_s']:.3f} s (creating the files took {result['make_files_s']:.1f} s)",
        f"first claim after start:   {result['first_claim_after_start_s']} s",
        f"claim latency:             {format_ms(claim)}",
        f"release latency:           {format_ms(release)}",
        f"handed out in order, none twice: {result['in_order_no_repeat']}",
    ]
