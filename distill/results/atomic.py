"""Atomic, private file writes.

Every file diag-distill writes goes through ``write_atomic``: a temporary
name in the same folder, flush, fsync, rename, fsync of the folder. A reader
sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

from distill.core.errors import OutputWriteError, StateDirError
from distill.core.redact import mask_known_bytes

TMP_MARK = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def refuse_symlink(path: Path) -> None:
    """Raise ``StateDirError`` when ``path`` is a symlink (never follow one we did not make)."""
    if path.is_symlink():
        raise StateDirError(f"{path} is a symbolic link; refusing to follow it (remove it and start again)")


def write_error(path: Path, exc: OSError) -> OutputWriteError:
    reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return OutputWriteError(f"cannot write {path}: {reason}")


def temporary_name(path: Path) -> Path:
    """The temporary a writer in this thread uses for ``path``: same folder, hidden, ending in our pid.

    One per thread (a worker's heartbeat thread writes the file its main thread writes); the pid
    stays last, for ``remove_stale_temporaries``.
    """
    return path.with_name(f"{TMP_MARK}{path.name}.{threading.get_native_id()}.{os.getpid()}")


class StagedFile:
    """A file written under a temporary name in its folder, not yet visible.

    ``publish`` makes it durable (fsync) and visible (rename); ``discard``
    removes it. Writing and publishing may happen on different threads, so a
    slow fsync can run while the caller goes on. Any OS error raises
    ``OutputWriteError`` and leaves no temporary behind.
    """

    def __init__(self, path: Path, data: bytes, *, mode: int = 0o600, mask_keys: bool = True) -> None:
        refuse_symlink(path)
        if mask_keys:  # a key an endpoint echoed must not reach any file
            data = mask_known_bytes(data)
        self.path = path
        self.size = len(data)
        self.tmp = temporary_name(path)
        self._fd: int | None = None
        try:
            self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self.discard()
            raise write_error(path, exc) from None

    def publish(self, *, durable: bool = True) -> None:
        """fsync (when ``durable``), close and rename over the real name."""
        try:
            if self._fd is not None:
                if durable:
                    os.fsync(self._fd)
                fd, self._fd = self._fd, None
                os.close(fd)
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            raise write_error(self.path, exc) from None

    def discard(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self.tmp.unlink()


class SettledFile:
    """A file that already holds, at its real name, the bytes a commit would write (a log appended to as
    it happened): publishing only makes it durable, with no second copy and no rename."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path, self.size = path, size
        self._fd: int | None = fd

    def publish(self, *, durable: bool = True) -> None:
        try:
            if self._fd is not None and durable:
                os.fsync(self._fd)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        finally:
            self.discard()

    def discard(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


def stage_file(path: Path, data: bytes) -> StagedFile | SettledFile:
    """``path`` ready to publish with ``data`` (keys masked): the file itself when it holds exactly those
    bytes already, else a ``StagedFile``."""
    data = mask_known_bytes(data)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return StagedFile(path, data, mask_keys=False)
    try:
        same = os.fstat(fd).st_size == len(data) and os.read(fd, len(data) + 1) == data
    except OSError:
        same = False
    if same:
        return SettledFile(path, fd, len(data))
    os.close(fd)
    return StagedFile(path, data, mask_keys=False)


def fsync_folders(paths: list[Path]) -> None:
    """fsync each distinct folder of ``paths`` once, so their renames survive a power loss."""
    for folder in dict.fromkeys(path.parent for path in paths):
        _fsync_dir(folder)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, durable: bool = True, mask_keys: bool = True,
                 ) -> None:
    """Replace ``path`` with ``data`` atomically; raise ``OutputWriteError`` on any OS error.

    On failure the temporary file is removed and ``path`` is left as it was.
    ``durable=False`` skips the fsyncs, for state that a reboot wipes anyway
    (heartbeats, claims in /tmp) or that only has to outlive the process
    (checkpoints): the rename alone keeps readers from torn files.
    """
    StagedFile(path, data, mode=mode, mask_keys=mask_keys).publish(durable=durable)
    if durable:
        _fsync_dir(path.parent)


def recycling_slots(path: Path) -> tuple[Path, Path]:
    """The two hidden names beside ``path`` whose files ``write_recycled`` takes turns writing."""
    return path.with_name(f".{path.name}.slot-1"), path.with_name(f".{path.name}.slot-2")


def write_recycled(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` as atomically as ``write_atomic(durable=False)``, with no new inode.

    For state rewritten all job long (the claims document, the counter, heartbeats). Two files live under
    hidden names beside ``path``; the one that is not ``path`` now is rewritten in place (no reader
    opens it by that name), hard-linked under a temporary name and renamed over ``path``. The file
    ``path`` held stays linked as the other slot, so nothing is freed and nothing allocated: on ext4
    creating and freeing an inode per write costs more CPU than the write itself. A reader sees the
    old document or the new one; a writer killed mid-write leaves ``path`` as it was. Threads of one
    process are serialized here; writers in several processes must be serialized by the caller (a
    file lock). Raises ``OutputWriteError`` on any OS error.
    """
    refuse_symlink(path)
    data = mask_known_bytes(data)
    with _RECYCLING:
        _write_recycled(path, data, mode)


_RECYCLING = threading.Lock()  # two threads of one process never write the same slot at once


def _write_recycled(path: Path, data: bytes, mode: int) -> None:
    try:
        current: int | None = os.stat(path).st_ino
    except FileNotFoundError:
        current = None
    except OSError as exc:
        raise write_error(path, exc) from None
    slots = [(slot, _lstat(slot)) for slot in recycling_slots(path)]
    slot, info = next(((s, i) for s, i in slots if i is None or i.st_ino != current), slots[0])
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise StateDirError(f"{slot} is a symbolic link; refusing to follow it (remove it and start again)")
    tmp = temporary_name(path)
    try:
        if not mode & 0o200 and info is not None:
            os.chmod(slot, mode | 0o200)  # a read-only document: its owner makes it writable for the rewrite
        # Overwritten, then cut to length: truncating first would free the file's blocks and take new ones.
        fd = os.open(slot, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode | 0o200)
        try:
            view, offset = memoryview(data), 0
            while offset < len(data):
                offset += os.pwrite(fd, view[offset:], offset)
            os.ftruncate(fd, len(data))
            if not mode & 0o200:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)
        try:
            os.link(slot, tmp)
        except FileExistsError:  # left by a write of this thread that was cut short
            os.unlink(tmp)
            os.link(slot, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.errno in _NO_HARD_LINKS:  # a file system without hard links: a new file per write, as before
            write_atomic(path, data, mode=mode, durable=False, mask_keys=False)
            return
        raise write_error(path, exc) from None


_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}


def forget_recycling(path: Path, *, keep: bool = False) -> None:
    """Remove ``path``'s slots (and ``path`` itself unless ``keep``): the end of a job's document."""
    for name in ((*recycling_slots(path),) if keep else (path, *recycling_slots(path))):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


#: Containers this deep or shallower get a line per item in the files people read; deeper ones stay on one line.
READABLE_DEPTH = 2

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # the C encoder
_spaced = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode  # the C encoder, as people read


def _readable(obj: Any, depth: int, pad: str) -> str:
    """``obj`` indented two spaces per level down to ``READABLE_DEPTH``, each item below on one line.

    Python's ``indent`` runs its pure-Python encoder, several times slower than the C one; here
    the C encoder writes every leaf and the few containers near the top are laid out by hand.
    """
    if depth >= READABLE_DEPTH or not isinstance(obj, (dict, list)) or not obj:
        return _spaced(obj)
    inner = pad + "  "
    if isinstance(obj, dict):
        items = [f"{inner}{_compact(str(key))}: {_readable(value, depth + 1, inner)}" for key, value in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    return "[\n" + ",\n".join(inner + _readable(value, depth + 1, inner) for value in obj) + "\n" + pad + "]"


def dumps(obj: Any, *, compact: bool = False) -> bytes:
    """The JSON encoding of every file we write: UTF-8, keys in given order; indented near the top for people
    to read, compact for machine state."""
    if compact:
        return (_compact(obj) + "\n").encode("utf-8")
    return (_readable(obj, 0, "") + "\n").encode("utf-8")


def write_json(path: Path, obj: Any, *, mode: int = 0o600, durable: bool = True, compact: bool = False) -> None:
    write_atomic(path, dumps(obj, compact=compact), mode=mode, durable=durable)


def read_json(path: Path) -> Any:
    """Parse a JSON file; ``None`` when it is missing, unreadable or corrupt."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return None


def read_json_folder(folder: Path) -> dict[str, dict[str, Any]]:
    """Every ``<name>.json`` object in ``folder`` by name, sorted; temporaries and corrupt files skipped."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            data = read_json(folder / name)
            if isinstance(data, dict):
                found[name[: -len(".json")]] = data
    return found


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporary files left in ``folder`` by a writer that died; return how many."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(TMP_MARK):
            pid_text = entry.name.rsplit(".", 1)[-1]
            if pid_text.isdigit() and _pid_alive(int(pid_text)):
                continue
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
