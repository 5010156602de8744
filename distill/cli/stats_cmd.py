"""``diag-distill stats``: summarize an output folder, as tables or as one JSON object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from distill.cli.options import output_folder_of_last_job, progress_bar
from distill.core.errors import ConfigError
from distill.results.provenance import changed_notes
from distill.results.stats import TOP_FINDINGS, RunStats, collect_stats

EXAMPLE_NUMBERS = 10


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for index, name in enumerate(columns):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    return table


def render(stats: RunStats) -> list[Any]:
    """The tables ``stats`` prints, in order: the whole folder, then (with several teachers) each teacher's."""
    data = stats.to_dict()
    reports, per, grounding = data["reports"], data["findings_per_report"], data["grounding"]
    tables = [_teachers_table(stats)] if stats.per_teacher else []
    tables += [
        _table("Reports", ["state", "reports"], [[k, v] for k, v in reports.items()]),
        _table("Failed by class", ["class", "reports"], [[k, v] for k, v in data["failed_by_class"].items()]),
        _table("Findings per done report", ["total", "mean", "median", "p90", "max"],
               [[per["total"], per["mean"], per["median"], per["p90"], per["max"]]]),
        _table("Organs (units)", ["organ", "units"], [[k, v] for k, v in data["organs"].items()]),
        _table("Most frequent findings" + ("" if data["top_findings_exact"] else " (approximate)"),
               ["finding", "reports"], [[f["finding"], f["count"]] for f in data["top_findings"]]),
        _table("Grounding", ["proposed", "kept", "merged (repeats)", "dropped", "dropped share"],
               [[grounding["findings_in"], grounding["findings_kept"], grounding["findings_merged"],
                 grounding["findings_dropped"], f"{grounding['dropped_share']:.1%}"]]),
    ]
    for title, key in (("Tokens by endpoint", "tokens_by_endpoint"), ("Tokens by model", "tokens_by_model")):
        usages = data[key]
        # Cached tokens and cost appear once some endpoint reports them, so a narrow terminal keeps the names.
        cached = any(u["cached_tokens"] for u in usages.values())
        priced = any(u["cost"] for u in usages.values())
        columns = ["name", "done", "failed", "calls", "prompt", *(["cached"] if cached else []), "completion",
                   *(["cost"] if priced else [])]
        tables.append(_table(title, columns, [
            [name, u["reports_done"], u["reports_failed"], u["calls"], u["prompt_tokens"],
             *([u["cached_tokens"]] if cached else []), u["completion_tokens"], *([f"{u['cost']:.4f}"] if priced else [])]
            for name, u in usages.items()
        ]))
    if stats.per_teacher and len(stats.by_teacher) > 1:
        from rich.rule import Rule

        for name, part in sorted(stats.by_teacher.items()):
            tables += [Rule(f"teacher {name}", align="left"), *render(part)]
    return tables


def _teachers_table(stats: RunStats) -> Any:
    """One row per teacher: reports, findings, grounding and tokens (each teacher's own tables follow)."""
    rows = []
    for name, part in sorted(stats.by_teacher.items()):
        data = part.to_dict()
        tokens = data["tokens_by_model"].values()
        rows.append([name, data["reports"]["done"], data["reports"]["failed"], data["findings_per_report"]["total"],
                     f"{data['grounding']['dropped_share']:.1%}",
                     sum(u["total_tokens"] for u in tokens), f"{sum(u['cost'] for u in tokens):.2f}"])
    return _table("Teachers", ["teacher", "done", "failed", "findings", "dropped", "tokens", "cost"], rows)


@click.command("stats")
@click.option("--output-dir", type=click.Path(path_type=Path), default=None,
              help="The job's output folder (default: the last job's on this state directory).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--top", type=click.IntRange(min=1), default=TOP_FINDINGS, show_default=True,
              help="How many of the most frequent findings to list.")
@click.pass_context
def command(ctx: click.Context, output_dir: Path | None, as_json: bool, top: int) -> None:
    """Summarize a run: reports done and failed, findings, organs, grounding, tokens; each also per teacher."""
    try:
        output_dir, _notes = output_folder_of_last_job(output_dir, None)
        with progress_bar("reading") as progress:
            stats = collect_stats(output_dir, top=top, progress=progress)
    except ConfigError as exc:
        click.echo(f"diag-distill stats: {exc}", err=True)
        ctx.exit(2)
    changed = changed_notes(output_dir)
    if as_json:
        click.echo(json.dumps({**stats.to_dict(), "changed_notes": changed}, ensure_ascii=False, indent=2))
        return
    from rich.console import Console

    console = Console()
    for table in render(stats):
        console.print(table)
    if changed:
        shown = ", ".join(map(str, changed[:EXAMPLE_NUMBERS])) + (", …" if len(changed) > EXAMPLE_NUMBERS else "")
        click.echo(f"changed since done: {len(changed)} report(s) ({shown}); start --redo-changed re-runs them")
    for problem in stats.problems[:10]:
        click.echo(f"corrupt: {problem}", err=True)
