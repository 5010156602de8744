"""Files appended to rather than replaced: a report's checkpoints (JSON Lines) and its log.

Appending creates no temporary file and no inode per record; what a crash can leave is a last line
cut short, which ``read_records`` skips. ``SpareFile`` keeps a committed report's emptied checkpoint
file for the next report, so the checkpoints of a stream of reports free no inode and take none.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from pathlib import Path
from typing import Any

from distill.core.redact import mask_known_bytes
from distill.results.atomic import dumps, refuse_symlink, write_error


def append_record(path: Path, obj: Any, *, mode: int = 0o600) -> None:
    """Append ``obj`` to the JSON Lines file at ``path`` (created ``mode`` when missing) in one write.

    For saved work that only has to outlive the process (no fsync). One ``write`` of one line to a
    file opened for appending is never interleaved with another writer's, and a process killed
    mid-write loses at most that line, which ``read_records`` skips (a short write is cut off again):
    no temporary file, no rename, no new inode per record. Raises ``OutputWriteError`` on any OS error."""
    refuse_symlink(path)
    data = mask_known_bytes(dumps(obj, compact=True))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        written = os.write(fd, data)
        if written != len(data):  # a short write (disk full): cut the torn line off, so the next one starts clean
            with contextlib.suppress(OSError):
                os.ftruncate(fd, os.fstat(fd).st_size - written)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        os.close(fd)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The whole object lines of a JSON Lines file, in order; a torn or corrupt line is skipped, a missing
    or unreadable file is ``[]``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return []
    records: list[dict[str, Any]] = []
    for line in data.split(b"\n")[:-1]:  # the part after the last newline was never finished
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


#: A spare checkpoint file is named ``<SPARE_MARK><pid>`` in the checkpoint folder: never a report's name.
SPARE_MARK = ".spare-"


class SpareFile:
    """A process's emptied file, kept under a hidden name and linked in as the next file it creates.

    ``keep`` empties a file that is done with (a committed report's checkpoints) and renames it to the
    spare; ``take`` links the spare in under a new name, unless that name exists. Deleting a file and
    creating the next one would free an inode and take another per report, and on ext4 without a
    journal every new inode is searched for past the ones freed in the last minutes.

    A spare is empty whenever it has its hidden name (emptied before the rename), so a spare taken by
    another process that happened to have the same pid, or removed by a job's start, is harmless: the
    link then fails and the file is created as before."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False  # whether this process left a spare (named after its pid) since it last took one

    @staticmethod
    def _spare(path: Path) -> Path:
        return path.with_name(f"{SPARE_MARK}{os.getpid()}")

    def keep(self, path: Path) -> bool:
        """Empty ``path`` and make it the spare; ``False`` when it cannot be (missing, a symbolic link,
        an OS error): then it is left for the caller to remove."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            os.ftruncate(fd, 0)  # before the rename: a spare never holds another report's lines
            os.rename(path, self._spare(path))
        except OSError:
            return False
        finally:
            os.close(fd)
        with self._lock:
            self._ready = True
        return True

    def take(self, path: Path) -> None:
        """Link the spare in as ``path`` if there is one and ``path`` does not exist yet; otherwise nothing."""
        with self._lock:
            if not self._ready:
                return
            self._ready = False
        spare = self._spare(path)
        try:
            os.link(spare, path)
        except FileExistsError:
            with self._lock:
                self._ready = True  # the file was there (a resumed report): the spare waits for the next one
            return
        except OSError:
            return  # gone (a job's start cleared spares): the file is created as before
        with contextlib.suppress(OSError):
            os.unlink(spare)


def clear_spares(folder: Path) -> int:
    """Remove every spare in ``folder`` (a job's start and end); how many were removed."""
    removed = 0
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            if name.startswith(SPARE_MARK):
                with contextlib.suppress(OSError):
                    os.unlink(folder / name)
                    removed += 1
    return removed


class OpenLog:
    """The log file a report's attempt is appending to, kept open from its first line to its commit
    (one open per attempt instead of one per line)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.number: int | None = None
        self.fd: int | None = None

    def fd_for(self, number: int, path_of: Any) -> int | None:
        """The open log of ``number`` (``path_of(number)`` opened on first use); ``None`` if it cannot be opened."""
        if self.number != number:
            self.close()
            try:
                self.fd = os.open(path_of(number), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                return None
            self.number = number
        return self.fd

    def close(self, number: int | None = None) -> None:
        if self.fd is not None and (number is None or number == self.number):
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd, self.number = None, None
