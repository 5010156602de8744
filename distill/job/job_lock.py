"""The part of a job lock that no file operation can take away: a name in the abstract socket namespace.

A filelock's file can be deleted while it is held; the next ``start`` then creates a new
file, locks it and runs a second job on the same state directory. A Unix socket bound to
a name in Linux's abstract namespace has no file: the name is released only when the
process holding it exits (or closes it), however the state directory is emptied.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import filelock


def job_socket_name(root: Path) -> bytes:
    """The abstract socket name that stands for ``root``'s job lock (its resolved path, hashed)."""
    path = os.path.realpath(root)
    return b"\0diag-distill-job-" + hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:40].encode()


def bind_abstract(name: bytes) -> socket.socket:
    """A Unix socket bound to ``name`` (abstract namespace): ``OSError(EADDRINUSE)`` while another process holds it.
    The socket is not inherited by children (a tmux server the job starts must not keep the lock)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class JobLock:
    """The job lock of one state directory, held until ``release`` or the process ends."""

    file_lock: filelock.BaseFileLock
    held: socket.socket

    def release(self) -> None:
        self.file_lock.release()
        self.held.close()
