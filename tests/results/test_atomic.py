from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from distill.core.errors import OutputWriteError, StateDirError
from distill.results.atomic import TMP_MARK, read_json, remove_stale_temporaries, write_atomic, write_json


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_json(target, {"x": 1})
    write_json(target, {"x": 2})
    assert read_json(target) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_written_files_are_private(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_json(target, [])
    assert target.stat().st_mode & 0o777 == 0o600


def test_disk_full_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.json"
    write_json(target, {"old": True})

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OutputWriteError, match="disk full"):
        write_json(target, {"new": True})
    monkeypatch.undo()
    assert read_json(target) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_planted_symlink_is_refused_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "status.json"
    link.symlink_to(victim)
    with pytest.raises(StateDirError, match="symbolic link"):
        write_atomic(link, b"overwrite")
    assert victim.read_text() == "keep me"


def test_read_json_returns_none_for_corrupt_or_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"truncated": ')
    assert read_json(bad) is None
    assert read_json(tmp_path / "missing.json") is None


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f"{TMP_MARK}x.json.999999999"
    live = tmp_path / f"{TMP_MARK}y.json.{os.getpid()}"
    dead.write_text("{")
    live.write_text("{")
    assert remove_stale_temporaries(tmp_path) == 1
    assert not dead.exists() and live.exists()
