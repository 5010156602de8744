from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from distill.core.errors import OutputWriteError, StateDirError
from distill.results.atomic import (
    TMP_MARK,
    forget_recycling,
    read_json,
    recycling_slots,
    remove_stale_temporaries,
    write_atomic,
    write_json,
    write_recycled,
)


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


def test_a_recycled_write_replaces_the_file_with_no_new_inode_after_the_first_two(tmp_path: Path) -> None:
    path = tmp_path / "claims.json"
    inodes = set()
    for i in range(6):
        write_recycled(path, f'{{"counter": {i}}}\n'.encode())
        assert read_json(path) == {"counter": i}
        inodes.add(path.stat().st_ino)
    assert len(inodes) == 2 and {s.stat().st_ino for s in recycling_slots(path)} == inodes
    assert path.stat().st_mode & 0o777 == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_MARK)]


def test_a_shorter_rewrite_leaves_nothing_of_the_longer_one(tmp_path: Path) -> None:
    path = tmp_path / "claims.json"
    for text in (b'{"leases": {"1": "a", "2": "b"}}\n', b"{}\n", b'{"leases": {"3": "c"}}\n', b"[]\n"):
        write_recycled(path, text)
        assert path.read_bytes() == text


def test_a_reader_of_the_old_document_keeps_it_whole_and_a_read_only_file_stays_read_only(tmp_path: Path) -> None:
    path = tmp_path / "counter.txt"
    write_recycled(path, b"41\n", mode=0o400)
    with path.open("rb") as reader:
        write_recycled(path, b"42\n", mode=0o400)
        assert reader.read() == b"41\n"
    assert path.read_bytes() == b"42\n" and path.stat().st_mode & 0o777 == 0o400
    write_recycled(path, b"43\n", mode=0o400)
    assert path.read_bytes() == b"43\n"


def test_a_recycled_write_cut_short_leaves_the_document_as_it_was(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "claims.json"
    write_recycled(path, b'{"counter": 1}\n')
    write_recycled(path, b'{"counter": 2}\n')
    real_pwrite = os.pwrite

    def half_then_full(fd: int, data: bytes, offset: int) -> int:
        real_pwrite(fd, bytes(data)[:3], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_full)
    with pytest.raises(OutputWriteError, match="disk full"):
        write_recycled(path, b'{"counter": 3}\n')
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert read_json(path) == {"counter": 2}
    write_recycled(path, b'{"counter": 4}\n')
    assert read_json(path) == {"counter": 4}


def test_without_hard_links_a_recycled_write_falls_back_to_a_new_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refused)
    path = tmp_path / "claims.json"
    write_recycled(path, b'{"counter": 5}\n')
    assert read_json(path) == {"counter": 5}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_MARK)]


def test_forgetting_a_recycled_file_removes_its_slots_and_keeps_it_when_asked(tmp_path: Path) -> None:
    kept, dropped = tmp_path / "counter.txt", tmp_path / "claims.json"
    for path in (kept, dropped):
        write_recycled(path, b"1\n")
        write_recycled(path, b"2\n")
    forget_recycling(kept, keep=True)
    forget_recycling(dropped)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter.txt"] and kept.read_bytes() == b"2\n"
