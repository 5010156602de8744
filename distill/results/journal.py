"""Files appended to rather than replaced: a report's checkpoints (JSON Lines) and its log.

Appending creates no temporary file and no inode per record; what a crash can leave is a last line
cut short, which ``read_records`` skips.
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
