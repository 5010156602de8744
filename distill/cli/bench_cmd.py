"""``diag-distill bench``: measure the system against a loopback stub, or measure claiming alone."""

from __future__ import annotations

import time
from pathlib import Path

import click

from distill.results.atomic import write_json


def _write(result: dict[str, object], json_path: Path | None, name: str) -> Path:
    path = json_path or Path("bench_results") / f"{name}_{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return path


@click.command("bench")
@click.option("--apis", type=click.IntRange(min=1, max=256), default=16, show_default=True,
              help="Endpoints (workers), each served by the stub.")
@click.option("--reports", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Reports to process (generated, or the first ones of --input-dir).")
@click.option("--latency-ms", type=click.FloatRange(min=0), default=200.0, show_default=True,
              help="The stub's answer latency per call.")
@click.option("--input-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Take notes from this folder instead of generating them.")
@click.option("--baseline-reports", type=click.IntRange(min=0), default=None,
              help="Reports for the predecessor baseline (default: min(reports, 4 x apis); 0 skips it).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the figures (default: bench_results/<name>_<time>.json).")
@click.option("--keep", is_flag=True, help="Keep the temporary state, notes and outputs for inspection.")
@click.option("--timeout", type=click.FloatRange(min=1), default=None, help="Seconds before giving up on a phase.")
@click.option("--claims", "claims_only", is_flag=True, help="Run the claim benchmark instead.")
@click.option("--files", type=click.IntRange(min=1), default=1_000_000, show_default=True,
              help="Claim benchmark: report files to create.")
@click.option("--max-gap", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Claim benchmark: largest gap between report numbers.")
@click.option("--claimers", type=click.IntRange(min=1), default=16, show_default=True,
              help="Claim benchmark: processes claiming at once.")
@click.option("--claims-each", type=click.IntRange(min=1), default=200, show_default=True,
              help="Claim benchmark: claims per claimer.")
@click.option("--claims-url", default=None, metavar="redis://HOST:PORT/DB",
              help="Claims in this Redis: the claim benchmark runs it beside the file backend with 16 and 64 "
                   "claimers; the system benchmark runs its job on it (an empty database).")
@click.option("--profile-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run each worker under cProfile and write its statistics there (<api>.<pid>.prof).")
@click.option("--think-ms", type=click.FloatRange(min=0), default=150.0, show_default=True,
              help="Claim benchmark: pause between a release and the next claim (0: back to back).")
def command(apis: int, reports: int, latency_ms: float, input_dir: Path | None, baseline_reports: int | None,
            json_path: Path | None, keep: bool, timeout: float | None, claims_only: bool, files: int, max_gap: int,
            claimers: int, claims_each: int, think_ms: float, claims_url: str | None,
            profile_dir: Path | None) -> None:
    """Run the real system (supervisor, tmux workers, claims, outputs) against a loopback stub
    until drained, then the predecessor's dispatch loop; print and save every figure."""
    if claims_only:
        from distill.bench.claim_bench import ClaimBenchOptions, format_claim_result, run_claim_bench

        options = ClaimBenchOptions(files=files, max_gap=max_gap, claimers=claimers, claims_each=claims_each,
                                    think_ms=think_ms)
        if claims_url:
            from distill.bench.claim_bench import format_comparison, run_backend_comparison
            from distill.job.claims_backend import require_claims_store

            url = require_claims_store(claims_url)
            assert url is not None
            result = run_backend_comparison(options, url, say=lambda line: click.echo(line, err=True))
            lines, name = format_comparison(result), "claims_file_vs_redis"
        else:
            result = run_claim_bench(options, say=lambda line: click.echo(line, err=True))
            lines, name = format_claim_result(result), "claims"
    else:
        from distill.bench.system import BenchOptions, format_result, run_bench
        from distill.job.claims_backend import require_claims_store

        bench = BenchOptions(apis=apis, reports=reports, latency_ms=latency_ms, input_dir=input_dir,
                             baseline_reports=baseline_reports, keep=keep, timeout_s=timeout,
                             claims_url=require_claims_store(claims_url),
                             profile_dir=profile_dir.resolve() if profile_dir else None)
        result = run_bench(bench, say=lambda line: click.echo(line, err=True))
        lines, name = format_result(result), f"bench_{apis}api_{latency_ms:g}ms"
    for line in lines:
        click.echo(line)
    click.echo(f"figures written to {_write(result, json_path, name)}")
