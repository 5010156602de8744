from __future__ import annotations

from pathlib import Path

from distill.results.atomic import read_json
from distill.results.store import OutputStore


def make_store(tmp_path: Path) -> OutputStore:
    store = OutputStore(tmp_path / "out")
    store.prepare()
    return store


def test_prepare_creates_private_folders(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    for name in ("diagnostic_results", "diagnostic_results_normalized", "logs", "failed", "checkpoints"):
        assert (store.root / name).stat().st_mode & 0o777 == 0o700
    assert store.root.stat().st_mode & 0o777 == 0o700


def test_commit_done_writes_the_three_documented_files(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.save_checkpoint(7, "findings", {"output": {}})
    store.commit_done(7, {"format": "raw"}, [{"s_symptom": "x"}], "log line\n")
    assert read_json(store.raw_path(7)) == {"format": "raw"}
    assert read_json(store.normalized_path(7)) == [{"s_symptom": "x"}]
    assert store.log_path(7).read_text() == "log line\n"
    assert store.is_done(7)
    assert store.load_checkpoints(7) == {}


def test_a_log_that_holds_every_line_is_kept_in_place_and_one_that_lost_a_line_is_rewritten(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    for line in ("claimed\n", "step findings: ok\n"):
        store.append_log(9, line)
    inode = store.log_path(9).stat().st_ino
    store.commit_done(9, {"format": "raw"}, [], "claimed\nstep findings: ok\n")
    assert store.log_path(9).stat().st_ino == inode  # no second copy
    assert store.log_path(9).read_text() == "claimed\nstep findings: ok\n"
    store.append_log(10, "claimed\n")  # the next line was lost to a full disk
    store.commit_done(10, {"format": "raw"}, [], "claimed\nstep findings: ok\n")
    assert store.log_path(10).read_text() == "claimed\nstep findings: ok\n"
    assert not [p for p in (store.root / "logs").iterdir() if p.name.startswith(".tmp-")]


def test_a_report_is_not_done_until_the_raw_file_exists(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    (store.normalized_path(3)).write_text("[]")
    assert not store.is_done(3)


def test_commit_failed_keeps_checkpoints_for_a_retry(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.save_checkpoint(4, "findings", {"output": {"findings": []}})
    store.commit_failed(4, {"error_class": "invalid_output"}, "failed\n")
    assert store.is_failed(4)
    assert "findings" in store.load_checkpoints(4)


def test_a_report_s_checkpoints_are_one_file_and_the_last_line_of_a_step_wins(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.save_checkpoint(5, "findings", {"output": {"n": 1}})
    store.save_checkpoint(5, "organs", {"output": {"n": 2}})
    store.save_checkpoint(5, "findings", {"output": {"n": 3}})  # the same step saved again
    assert sorted(p.name for p in (store.root / "checkpoints").iterdir()) == ["5.jsonl"]
    assert store.checkpoint_path(5).stat().st_mode & 0o777 == 0o600
    assert store.load_checkpoints(5) == {"findings": {"output": {"n": 3}}, "organs": {"output": {"n": 2}}}


def test_a_checkpoint_line_cut_short_by_a_crash_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.save_checkpoint(6, "findings", {"output": {"n": 1}})
    with store.checkpoint_path(6).open("ab") as handle:
        handle.write(b'{"step": "organs", "output": {"n"')  # killed in the middle of the write
    assert store.load_checkpoints(6) == {"findings": {"output": {"n": 1}}}
    with store.checkpoint_path(6).open("ab") as handle:
        handle.write(b"\nnot json\n[1]\n")  # a corrupt line, and a line that is no object
    store.save_checkpoint(6, "mapping", {"output": {"n": 4}})
    assert store.load_checkpoints(6) == {"findings": {"output": {"n": 1}}, "mapping": {"output": {"n": 4}}}


def test_checkpoints_an_earlier_version_kept_a_file_per_step_are_read_and_cleared(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    legacy = store.root / "checkpoints" / "8"
    legacy.mkdir()
    (legacy / "findings.json").write_text('{"output": {"n": 1}}')
    assert store.load_checkpoints(8) == {"findings": {"output": {"n": 1}}}
    assert store.checkpoint_files(8) == [legacy]
    store.commit_done(8, {"format": "raw"}, [], "log\n")
    assert not legacy.exists() and store.load_checkpoints(8) == {}


def _spares(store: OutputStore) -> list[str]:
    return sorted(p.name for p in (store.root / "checkpoints").iterdir() if p.name.startswith(".spare-"))


def test_a_committed_report_s_emptied_checkpoint_file_becomes_the_next_report_s(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.save_checkpoint(11, "findings", {"output": {"n": 1}})
    inode = store.checkpoint_path(11).stat().st_ino
    store.commit_done(11, {"format": "raw"}, [], "log\n")
    assert not store.checkpoint_path(11).exists() and store.load_checkpoints(11) == {}
    assert len(_spares(store)) == 1  # hidden, and empty: never a report's lines
    assert (store.root / "checkpoints" / _spares(store)[0]).stat().st_size == 0
    store.save_checkpoint(12, "findings", {"output": {"n": 2}})
    assert store.checkpoint_path(12).stat().st_ino == inode  # the same file: no inode freed and taken again
    assert store.load_checkpoints(12) == {"findings": {"output": {"n": 2}}}
    assert _spares(store) == []


def test_a_spare_never_replaces_checkpoints_a_report_already_has(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.save_checkpoint(21, "findings", {"output": {"n": 1}})  # an earlier attempt's finished step
    store.save_checkpoint(20, "findings", {"output": {"n": 0}})
    store.commit_done(20, {"format": "raw"}, [], "log\n")
    store.save_checkpoint(21, "organs", {"output": {"n": 2}})  # resumed: appended to its own file
    assert store.load_checkpoints(21) == {"findings": {"output": {"n": 1}}, "organs": {"output": {"n": 2}}}
    assert len(_spares(store)) == 1  # still there for the next new report
    store.save_checkpoint(22, "findings", {"output": {"n": 3}})
    assert _spares(store) == [] and store.load_checkpoints(22) == {"findings": {"output": {"n": 3}}}


def test_a_job_start_removes_spares_and_a_missing_spare_means_a_new_file(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.save_checkpoint(30, "findings", {"output": {"n": 1}})
    store.commit_done(30, {"format": "raw"}, [], "log\n")
    store.prepare()  # a worker's start leaves other workers' spares alone
    assert len(_spares(store)) == 1
    store.prepare(job_start=True)
    assert _spares(store) == []
    store.save_checkpoint(31, "findings", {"output": {"n": 2}})  # the spare it held is gone: created anew
    assert store.load_checkpoints(31) == {"findings": {"output": {"n": 2}}}


def test_a_symbolic_link_at_a_checkpoint_path_is_removed_at_the_commit_and_its_target_left_alone(
        tmp_path: Path) -> None:
    store = make_store(tmp_path)
    target = tmp_path / "elsewhere.txt"
    target.write_text("not ours\n")
    store.checkpoint_path(40).symlink_to(target)
    store.commit_done(40, {"format": "raw"}, [], "log\n")
    assert target.read_text() == "not ours\n"
    assert not store.checkpoint_path(40).is_symlink() and _spares(store) == []


def test_release_failed_archives_records_instead_of_deleting(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.commit_failed(4, {"error_class": "api_unavailable"}, "failed\n")
    assert store.release_failed() == [4]
    assert not store.is_failed(4)
    archived = list((store.root / "failed" / "retried").iterdir())
    assert len(archived) == 1 and archived[0].name.startswith("diagnostic_4.")


def test_success_after_failure_archives_the_old_failure(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.commit_failed(5, {"error_class": "api_unavailable"}, "failed\n")
    store.commit_done(5, {}, [], "ok\n")
    assert store.is_done(5) and not store.is_failed(5)
    assert len(list((store.root / "failed" / "retried").glob("diagnostic_5.*.json"))) == 1


def test_number_listings_ignore_temporaries_and_other_files(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.commit_done(1, {}, [], "")
    (store.root / "diagnostic_results" / ".tmp-diagnostic_2.json.1").write_text("{")
    (store.root / "diagnostic_results" / "notes.txt").write_text("x")
    assert store.done_numbers() == {1}
    assert store.counts() == {"raw": 1, "normalized": 1, "failed": 0, "logs": 1}


def test_log_lines_land_in_order_across_reports_and_after_a_commit_in_the_new_file(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.append_log(1, "attempt 1\n")
    store.append_log(2, "report 2 starts\n")  # another report's line closes the first report's file
    store.append_log(1, "step findings: ok\n")
    assert store.read_log(1) == "attempt 1\nstep findings: ok\n"
    store.commit_done(1, {"report": {"number": 1}}, [], store.read_log(1) + "saved\n")
    store.append_log(1, "after the commit\n")  # lands in the committed file, not in the one it replaced
    assert store.log_path(1).read_text(encoding="utf-8") == "attempt 1\nstep findings: ok\nsaved\nafter the commit\n"
    store.append_log(2, "report 2 ends\n")
    store.commit_failed(2, {"report_number": 2}, store.read_log(2))
    store.append_log(2, "retried\n")
    assert store.read_log(2) == "report 2 starts\nreport 2 ends\nretried\n"
