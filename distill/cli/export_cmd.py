"""``diag-distill export``: write the done reports as training data (train and validation JSONL)."""

from __future__ import annotations

from pathlib import Path

import click

from distill.cli.options import output_folder_of_last_job, progress_bar
from distill.core.errors import ConfigError, DistillError
from distill.results.export import FORMATS, ExportOptions, ExportSummary, export_dataset
from distill.results.export_formats import RECORDS
from distill.results.teachers import describe_counts

SHOWN_PROBLEMS = 10
PROBLEM_KINDS = ("corrupt", "source_missing", "source_changed", "source_unreadable")


def describe(summary: ExportSummary) -> list[str]:
    """The lines printed after an export."""
    def split(reports: int, lines: int) -> str:
        return f"{reports} reports" if summary.format != RECORDS else f"{reports} reports, {lines} lines"

    lines = [
        f"exported {summary.exported} of {summary.reports_seen} reports ({summary.format})",
        f"  train: {split(summary.train_reports, summary.train_lines)} -> {summary.train_path}",
        f"  val:   {split(summary.val_reports, summary.val_lines)} -> {summary.val_path}",
    ]
    if summary.by_teacher:
        lines.append(f"  by teacher: {describe_counts(summary.by_teacher)}")
    if summary.dataset_info_path is not None:
        lines.append(f"  LLaMA-Factory dataset description: {summary.dataset_info_path}")
    if summary.skipped:
        left_out = ", ".join(f"{reason} {n}" for reason, n in sorted(summary.skipped.items()))
        lines.append(f"  left out: {left_out}")
    return lines


@click.command("export")
@click.option("--output-dir", type=click.Path(path_type=Path), default=None,
              help="The job's output folder (default: the last job's on this state directory).")
@click.option("--to", "to", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Train split file; the validation split goes next to it (out.jsonl -> out.val.jsonl).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="sft-chat", show_default=True,
              help="sft-chat: one chat-messages line per report; records: one line per finding/organ/location; "
                   "llamafactory: chat lines plus dataset_info.json; prompt-completion: TRL prompt/completion lines.")
@click.option("--teacher", "teachers", multiple=True, metavar="NAME",
              help="Export only this teacher's reports (its model name, or local); repeatable; 'all' for every "
                   "teacher. Required when the folder holds more than one teacher.")
@click.option("--val-fraction", type=click.FloatRange(0.0, 1.0), default=0.05, show_default=True,
              help="Share of reports in the validation split (chosen by a hash of report number and seed).")
@click.option("--seed", default="0", show_default=True, help="Changes which reports go to validation.")
@click.option("--min-units", type=click.IntRange(min=0), default=1, show_default=True,
              help="Leave out reports with fewer finding-organ units than this.")
@click.option("--include-absent/--no-include-absent", default=True, show_default=True,
              help="Keep findings whose status is absent (negated findings).")
@click.option("--input-dir", "source_dir", type=click.Path(path_type=Path), default=None,
              help="Read notes from this folder by file name instead of the path recorded in each result.")
@click.pass_context
def command(ctx: click.Context, output_dir: Path | None, to: Path, fmt: str, teachers: tuple[str, ...],
            val_fraction: float, seed: str, min_units: int, include_absent: bool, source_dir: Path | None) -> None:
    """Export the done reports of an output folder as training data for a student model."""
    try:
        output_dir, source_dir = output_folder_of_last_job(output_dir, source_dir)
        with progress_bar("exporting") as progress:
            options = ExportOptions(fmt=fmt, val_fraction=val_fraction, seed=seed, min_units=min_units,
                                    include_absent=include_absent, source_dir=source_dir,
                                    teachers=tuple(name.strip() for name in teachers))
            summary = export_dataset(output_dir, to, options, progress=progress)
    except ConfigError as exc:
        click.echo(f"diag-distill export: {exc}", err=True)
        ctx.exit(2)
    except DistillError as exc:
        click.echo(f"diag-distill export: {exc}", err=True)
        ctx.exit(1)
    for problem in summary.problems[:SHOWN_PROBLEMS]:
        click.echo(f"left out report {problem.number}: {problem.kind}: {problem.detail}", err=True)
    hidden = sum(summary.skipped.get(kind, 0) for kind in PROBLEM_KINDS) - min(len(summary.problems), SHOWN_PROBLEMS)
    if hidden > 0:
        click.echo(f"... and {hidden} more report(s) left out for these reasons", err=True)
    for line in describe(summary):
        click.echo(line)
