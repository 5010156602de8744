"""How well the offline teacher reads the labelled sets, measured through the whole system.

``run_eval`` copies (a sample of) each labelled set's notes into one temporary input folder
(the sets' number ranges do not overlap; the folder is removed afterwards), runs ``diag-distill start FIRST --until-drained
--foreground`` in a child process with its own state directory, tmux socket and session prefix
and no API keys (so every endpoint is the offline teacher), then scores the normalized outputs
against the labels. It prints figures and asserts nothing; ``docs/eval.md`` says what each means.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.bench.mesh_organs import organs_of_terms
from distill.core.config import project_root
from distill.core.errors import DistillError
from distill.extraction.normalize import quote_in_text
from distill.extraction.vocabulary import load_vocabulary
from distill.results.atomic import read_json
from distill.results.store import OutputStore

SETS = ("iu_xray_dev", "chip_cdee_train", "ccks2017_dev", "mtsamples_dev")
_STATUS = {"": "present", "否定": "absent", "不确定": "uncertain"}


class EvalError(DistillError):
    """The evaluation could not run (no labelled data, the job failed or timed out)."""


@dataclass
class Note:
    """One labelled note: its number, text, and the set it belongs to."""

    set_name: str
    number: int
    path: Path
    gold: Any = None


@dataclass
class Counts:
    """Running sums for one set's figures."""

    values: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, amount: float = 1) -> None:
        self.values[key] = self.values.get(key, 0) + amount

    def get(self, key: str) -> float:
        return self.values.get(key, 0)


def _spread(items: list[Note], sample: int | None) -> list[Note]:
    if sample is None or sample >= len(items):
        return items
    step = len(items) / sample
    return [items[int(i * step)] for i in range(sample)]


def _lines(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def load_set(data: Path, name: str, sample: int | None) -> list[Note]:
    """The notes of one labelled set with their gold labels; an empty list when the folder is absent."""
    folder = data / name
    if not folder.is_dir():
        return []
    notes: list[Note] = []
    if name == "iu_xray_dev":
        for row in _lines(folder / "iu_xray_dev_gold.jsonl"):
            notes.append(Note(name, row["report"], folder / f"report_{row['report']}.txt",
                              [m.strip() for m in row["mesh"]]))
    elif name == "chip_cdee_train":
        items = json.loads((folder / "chip_cdee_train.json").read_text(encoding="utf-8"))
        for row in _lines(folder / "chip_cdee_train_reports.jsonl"):
            notes.append(Note(name, row["report"], folder / f"report_{row['report']}.txt",
                              items[row["index"]]["event"]))
    elif name == "ccks2017_dev":
        for row in _lines(folder / "ccks2017_dev.jsonl"):
            if row["section"] == "病史特点":
                number = 50000 + row["patient"]
                spans = [e["text"] for e in row["entities"] if e["type"] == "症状和体征"]
                notes.append(Note(name, number, folder / f"report_{number}.txt", spans))
    else:
        for path in sorted(folder.glob("report_*.txt"), key=lambda p: int(p.stem.split("_")[1])):
            notes.append(Note(name, int(path.stem.split("_")[1]), path))
    return _spread([n for n in notes if n.path.is_file()], sample)


def run_offline_job(notes: list[Note], root: Path, timeout_s: float, say: Callable[[str], None]) -> Path:
    """Run the real job with the offline teacher over ``notes``; return its output folder."""
    if shutil.which("tmux") is None:
        raise EvalError("tmux is not installed (install it with your package manager, e.g. apt-get install tmux)")
    input_dir, output = root / "in", root / "out"
    input_dir.mkdir()
    # Copied, not linked: the job refuses input symlinks that lead outside its input folder.
    for note in notes:
        shutil.copyfile(note.path, input_dir / note.path.name)
    tag = uuid.uuid4().hex[:8]
    config = root / "eval_config.py"
    config.write_text("from distill.core.config import endpoint_table\n"
                      "MULTI_API_CONFIG = endpoint_table(4)\nCHECK_INTERVAL = 0.5\n", encoding="utf-8")
    # No key of any kind reaches the job: every endpoint is the offline teacher.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DIAG_") and "API_KEY" not in k and k not in ("TMUX", "TMUX_PANE")}
    env.update(DIAG_CONFIG=str(config), DIAG_STATE_DIR=str(root / "state"), DIAG_TMUX_SOCKET=f"diageval_{tag}",
               DIAG_SESSION_PREFIX=f"eval{tag}")
    numbers = sorted(n.number for n in notes)
    command = [sys.executable, "-m", "distill", "start", str(numbers[0]), "--end", str(numbers[-1]),
               "--until-drained", "--foreground", "--input-dir", str(input_dir), "--output-dir", str(output)]
    say(f"eval: {len(notes)} notes through the offline teacher (tmux socket diageval_{tag})")
    try:
        with (root / "supervisor.log").open("w") as log:
            result = subprocess.run(command, env=env, cwd=project_root(), stdout=log, stderr=subprocess.STDOUT,
                                    timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EvalError(f"the job did not drain within {timeout_s:.0f} s (kept nothing; state {root})") from exc
    finally:
        # Only the tmux server on this run's own socket, which this run started.
        subprocess.run(["tmux", "-L", f"diageval_{tag}", "kill-server"], capture_output=True, check=False)
    if result.returncode != 0:
        tail = (root / "supervisor.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise EvalError(f"the job ended with exit status {result.returncode}: {' | '.join(tail)}")
    return output


def _normalized(output: Path, number: int) -> list[dict[str, Any]] | None:
    path = OutputStore(output).normalized_path(number)
    data = read_json(path) if path.exists() else None
    return data if isinstance(data, list) else None


def _organs(record: list[dict[str, Any]], present_only: bool = True) -> set[str]:
    return {unit["u_unit"]["o_organ"]["organName"] for finding in record
            if not present_only or finding.get("status") == "present"
            for unit in finding.get("U_unit_set", [])}


def _zh_match(pred: str, core: str, anatomy: list[str]) -> bool:
    """A quoted finding matches a gold event when it holds the core word, lies within it, or is site plus part of it."""
    pred = "".join(pred.split())
    if core and core in pred:
        return True
    if len(pred) >= 2 and pred in core:
        return True
    # 腹痛 for core 疼痛 at site 腹: the site is quoted, and what is left is part of the core.
    for site in anatomy:
        rest = pred.replace(site, "", 1) if site and site in pred else ""
        if rest and rest in core:
            return True
    return False


def _quote_positions(record: list[dict[str, Any]], text: str) -> list[int]:
    """Where each finding's quote stands in the note: the k-th finding quoting the same words takes their k-th
    occurrence (the first when the words occur fewer times)."""
    seen: Counter[str] = Counter()
    positions = []
    for finding in record:
        quote = finding["s_symptom"]
        at = -1
        for _ in range(seen[quote] + 1):
            at = text.find(quote, at + 1)
            if at < 0:
                at = text.find(quote)
                break
        seen[quote] += 1
        positions.append(at)
    return positions


def _pair_events(events: list[tuple[str, list[str], str]], record: list[dict[str, Any]],
                 text: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Each gold event that some finding matches, with the finding it is scored against, and the gold status.

    The events carry no offsets but come in the note's order, so the findings that match one are
    taken in the note's order too, each once: the second 咳嗽 event of a note is scored against the
    second 咳嗽 finding, not the first again. When every matching finding is taken, the first serves.
    """
    positions, taken = _quote_positions(record, text), set()
    for core, anatomy, status in events:
        matching = sorted((positions[i], i) for i, f in enumerate(record) if _zh_match(f["s_symptom"], core, anatomy))
        if not matching:
            continue
        free = [i for _, i in matching if i not in taken]
        chosen = free[0] if free else matching[0][1]
        taken.add(chosen)
        yield record[chosen], status


def score(notes: list[Note], output: Path) -> dict[str, dict[str, float]]:
    """Every figure, per set, from the normalized outputs in ``output``."""
    vocabulary = load_vocabulary()
    counts: dict[str, Counts] = {name: Counts() for name in SETS}
    for note in notes:
        c = counts[note.set_name]
        c.add("notes")
        record = _normalized(output, note.number)
        if record is None:
            c.add("not_done")
            continue
        text = note.path.read_text(encoding="utf-8", errors="replace")
        c.add("findings", len(record))
        if not record:
            c.add("no_finding")
        for finding in record:
            if not quote_in_text(finding["s_symptom"], text):
                c.add("ungrounded")
            for unit in finding.get("U_unit_set", []):
                organ = unit["u_unit"]["o_organ"]
                if organ["organName"] not in vocabulary.organs:
                    c.add("organ_outside")
                    continue
                allowed = set(vocabulary.locations(organ["organName"]))
                c.add("location_outside", sum(1 for loc in organ["anatomicalLocations"] if loc not in allowed))
        if note.set_name == "iu_xray_dev":
            gold, pred = organs_of_terms(note.gold), _organs(record)
            c.add("tp", len(gold & pred))
            c.add("fp", len(pred - gold))
            c.add("fn", len(gold - pred))
            if gold:
                c.add("abnormal_with_organ")
                if not pred:
                    c.add("abnormal_no_organ")
        elif note.set_name == "chip_cdee_train":
            events = [(e["core_name"], e.get("anatomy_list") or [], _STATUS.get(e["tendency"].strip(), "present"))
                      for e in note.gold]
            c.add("gold_events", len(events))
            for hit, status in _pair_events(events, record, text):
                c.add("events_found")
                c.add("status_right", hit["status"] == status)
            c.add("findings_matched", sum(1 for f in record
                                          if any(_zh_match(f["s_symptom"], core, a) for core, a, _ in events)))
        elif note.set_name == "ccks2017_dev":
            c.add("gold_spans", len(note.gold))
            quotes = ["".join(f["s_symptom"].split()) for f in record]
            c.add("spans_found", sum(1 for span in note.gold
                                     if any(span in q or (len(q) >= 2 and q in span) for q in quotes)))
    return {name: _figures(name, c) for name, c in counts.items() if c.get("notes")}


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _figures(name: str, c: Counts) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "notes": int(c.get("notes")), "not_done": int(c.get("not_done")),
        "findings_per_note": _ratio(c.get("findings"), c.get("notes") - c.get("not_done")),
        "no_finding_share": _ratio(c.get("no_finding"), c.get("notes") - c.get("not_done")),
        "ungrounded_quotes": int(c.get("ungrounded")), "organs_outside_vocabulary": int(c.get("organ_outside")),
        "locations_outside_vocabulary": int(c.get("location_outside")),
    }
    if name == "iu_xray_dev":
        p, r = _ratio(c.get("tp"), c.get("tp") + c.get("fp")), _ratio(c.get("tp"), c.get("tp") + c.get("fn"))
        figures.update(organ_precision=p, organ_recall=r,
                       organ_f1=round(2 * p * r / (p + r), 3) if p and r else 0.0,
                       abnormal_no_organ_share=_ratio(c.get("abnormal_no_organ"), c.get("abnormal_with_organ")))
    elif name == "chip_cdee_train":
        figures.update(event_recall=_ratio(c.get("events_found"), c.get("gold_events")),
                       event_precision=_ratio(c.get("findings_matched"), c.get("findings")),
                       status_accuracy=_ratio(c.get("status_right"), c.get("events_found")))
    elif name == "ccks2017_dev":
        figures.update(symptom_span_recall=_ratio(c.get("spans_found"), c.get("gold_spans")))
    return figures


def run_eval(data: Path, sample: int | None = None, say: Callable[[str], None] = print,
             keep: bool = False) -> dict[str, Any]:
    """Run the offline teacher over the labelled sets in ``data`` and return every figure."""
    notes = [note for name in SETS for note in load_set(data, name, sample)]
    if not notes:
        raise EvalError(f"no labelled set found under {data} (expected folders {', '.join(SETS)})")
    root = Path(tempfile.mkdtemp(prefix="diag-eval-"))
    try:
        output = run_offline_job(notes, root, timeout_s=120.0 + 2.0 * len(notes), say=say)
        return {"data": str(data), "sample": sample, "sets": score(notes, output)}
    finally:
        if keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


_LABELS = {
    "organ_precision": "organ precision", "organ_recall": "organ recall", "organ_f1": "organ F1",
    "abnormal_no_organ_share": "abnormal reports with no organ",
    "event_recall": "finding-event recall", "event_precision": "finding-event precision",
    "status_accuracy": "status accuracy (matched)", "symptom_span_recall": "symptom-span recall",
    "no_finding_share": "notes with no finding", "findings_per_note": "findings per note",
    "ungrounded_quotes": "ungrounded quotes", "organs_outside_vocabulary": "organs outside vocabulary",
    "locations_outside_vocabulary": "locations outside vocabulary", "not_done": "notes not done",
}


def format_eval(result: dict[str, Any]) -> list[str]:
    """The figures as printed lines, one block per set."""
    lines = [f"evaluation of the offline teacher on {result['data']}"
             + (f" (sample of {result['sample']} per set)" if result["sample"] else "")]
    for name, figures in result["sets"].items():
        lines.append(f"{name}: {figures['notes']} notes")
        for key, label in _LABELS.items():
            if key in figures:
                value = figures[key]
                shown = "n/a" if value is None else (f"{value:.1%}" if key.endswith("share") else f"{value}")
                lines.append(f"  {label + ':':32s}{shown}")
    return lines
