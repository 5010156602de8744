"""The evaluation's answer key (MeSH terms to organs) and its scoring, on notes written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.bench.evaluate import Note, score
from distill.bench.mesh_organs import organ_of_term, organs_of_terms


@pytest.mark.parametrize(("term", "organ"), [
    ("Cardiomegaly/borderline", "Heart (Cor)"),
    ("Pleural Effusion/left/small", "Lung (Pulmo)"),
    ("Aorta/tortuous", "Artery (Arteria)"),
    ("Opacity/lung/base/left", "Lung (Pulmo)"),
    ("Calcinosis/aorta", "Artery (Arteria)"),
    ("Calcinosis", None),
    ("Thoracic Vertebrae/degenerative/mild", None),
    ("normal", None),
    ("Technical Quality of Image Unsatisfactory ", None),
    ("Subcutaneous  Emphysema", None),
])
def test_organ_of_term_files_each_term_under_its_organ(term: str, organ: str | None) -> None:
    assert organ_of_term(term) == organ


def test_organs_of_terms_drops_terms_with_no_organ() -> None:
    assert organs_of_terms(["Cardiomegaly", "Spine/degenerative", "Lung/hypoinflation"]) == {
        "Heart (Cor)", "Lung (Pulmo)"}


def _record(quote: str, status: str, organ: str | None = None) -> dict[str, object]:
    units = [] if organ is None else [{"u_unit": {"d_diagnosis": "x", "o_organ": {
        "organName": organ, "anatomicalLocations": []}, "b_textual_basis": {}}}]
    return {"s_symptom": quote, "status": status, "U_unit_set": units}


def _write(output: Path, number: int, record: list[dict[str, object]]) -> None:
    folder = output / "diagnostic_results_normalized"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"diagnostic_{number}.json").write_text(json.dumps(record), encoding="utf-8")


def test_score_counts_organs_events_spans_and_ungrounded_quotes(tmp_path: Path) -> None:
    notes_dir, output = tmp_path / "in", tmp_path / "out"
    notes_dir.mkdir()
    texts = {1: "FINDINGS: The heart is enlarged. Small left effusion.", 2: "患者腹痛3天，无发热。",
             3: "咳嗽伴咳痰。", 4: "No complaints."}
    for number, text in texts.items():
        (notes_dir / f"report_{number}.txt").write_text(text, encoding="utf-8")
    notes = [Note("iu_xray_dev", 1, notes_dir / "report_1.txt", ["Cardiomegaly", "Pleural Effusion/left"]),
             Note("chip_cdee_train", 2, notes_dir / "report_2.txt", [
                 {"core_name": "疼痛", "tendency": "", "anatomy_list": ["腹"], "character": []},
                 {"core_name": "发热", "tendency": "否定", "anatomy_list": [], "character": []}]),
             Note("ccks2017_dev", 3, notes_dir / "report_3.txt", ["咳嗽", "咳痰"]),
             Note("mtsamples_dev", 4, notes_dir / "report_4.txt")]
    _write(output, 1, [_record("heart is enlarged", "present", "Heart (Cor)"), _record("not in note", "present")])
    _write(output, 2, [_record("腹痛", "present"), _record("发热", "present")])
    _write(output, 3, [_record("咳嗽", "present")])
    _write(output, 4, [])
    figures = score(notes, output)
    assert figures["iu_xray_dev"]["organ_precision"] == 1.0
    assert figures["iu_xray_dev"]["organ_recall"] == 0.5
    assert figures["iu_xray_dev"]["ungrounded_quotes"] == 1
    assert figures["chip_cdee_train"]["event_recall"] == 1.0
    assert figures["chip_cdee_train"]["status_accuracy"] == 0.5
    assert figures["ccks2017_dev"]["symptom_span_recall"] == 0.5
    assert figures["mtsamples_dev"]["no_finding_share"] == 1.0


def test_events_with_the_same_words_are_scored_against_their_own_findings_in_the_notes_order(
        tmp_path: Path) -> None:
    notes_dir, output = tmp_path / "in", tmp_path / "out"
    notes_dir.mkdir()
    (notes_dir / "report_7.txt").write_text("间断咳嗽2年，近3天无咳嗽，无发热。", encoding="utf-8")
    events = [{"core_name": "咳嗽", "tendency": "", "anatomy_list": [], "character": []},
              {"core_name": "咳嗽", "tendency": "否定", "anatomy_list": [], "character": []},
              {"core_name": "发热", "tendency": "否定", "anatomy_list": [], "character": []}]
    # The findings are listed out of the note's order: the denied cough first.
    _write(output, 7, [_record("咳嗽", "absent"), _record("间断咳嗽", "present"), _record("发热", "absent")])
    figures = score([Note("chip_cdee_train", 7, notes_dir / "report_7.txt", events)], output)["chip_cdee_train"]
    assert figures["event_recall"] == 1.0
    assert figures["status_accuracy"] == 1.0
    # A finding said once cannot serve two events with opposite statuses: one of them is scored wrong.
    _write(output, 7, [_record("咳嗽", "present"), _record("发热", "absent")])
    figures = score([Note("chip_cdee_train", 7, notes_dir / "report_7.txt", events)], output)["chip_cdee_train"]
    assert figures["event_recall"] == 1.0
    assert figures["status_accuracy"] == round(2 / 3, 3)
