"""The state directory: its layout, the job lock, the stop flag, worker heartbeats.

Everything a running job shares between its processes lives here
(``DIAG_STATE_DIR``, ``/tmp`` by default). Files are private (0600, folders
0700), written atomically, and a symlink planted at any of their paths is
refused rather than followed.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock

from distill.core.errors import JobAlreadyRunning, OutputWriteError, StateDirError
from distill.job.job_lock import JobLock, bind_abstract, job_socket_name
from distill.results.atomic import (
    TMP_MARK,
    dumps,
    forget_recycling,
    read_json,
    read_json_folder,
    refuse_symlink,
    remove_stale_temporaries,
    write_atomic,
    write_json,
    write_recycled,
)

STATUS_FILE = "continuous_diag_distillation_status.json"
COUNTER_FILE = "current_diag_processing_number.txt"
STOP_FLAG = "stop_diag_distillation.flag"
STOP_SCRIPT = "stop_diag_distillation.sh"
STOP_NOW_FLAG = "stop_diag_distillation.now"
#: First word of the stop flag: the job runs, or a graceful stop was asked for.
RUNNING_MARK = "running"
STOP_MARK = "stop"
JOB_FILE = "continuous_diag_job.json"
JOB_LOCK = "continuous_diag_job.lock"
CLAIMS_FILE = "continuous_diag_claims.json"
CLAIMS_LOCK = "continuous_diag_claims.lock"
INDEX_FILE = "continuous_diag_index.bin"
#: The job's DIAG_* settings (keys included), 0600, for the processes the supervisor starts.
ENV_FILE = "continuous_diag_job_env.json"
WORKERS_DIR = "continuous_diag_workers"
#: The folders and range of the last job started here; kept after it ends, so commands find its folders.
LAST_JOB_FILE = "continuous_diag_last_job.json"


def proc_stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (``[0]`` is the state), ``None`` when gone.

    The command name may hold spaces and parentheses, so the split is after its last ``)``.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def process_identity(pid: int) -> str | None:
    """``"<pid>:<start time>"`` of a live process, ``None`` when it is gone.

    The start time defeats pid reuse: a lease whose pid now belongs to some
    other process is recognised as dead.
    """
    fields = proc_stat_fields(pid)
    # fields[0] is the state; a zombie has finished running.
    if not fields or fields[0] == "Z":
        return None
    return f"{pid}:{fields[19]}" if len(fields) > 19 else str(pid)


def identity_alive(identity: object) -> bool:
    """Whether ``identity`` (from ``process_identity``) names a process still running; ``False`` for non-strings."""
    if not isinstance(identity, str) or not identity:
        return False
    pid_text = identity.split(":", 1)[0]
    return pid_text.isdigit() and process_identity(int(pid_text)) == identity


def worker_pid(beat: dict[str, Any], job_id: str) -> int | None:
    """The pid of the live worker of job ``job_id`` that wrote heartbeat ``beat``, or ``None``.

    The pid's identity (pid and start time) must be the heartbeat's and its
    command line that worker's, so a reused or planted pid is never signalled.
    """
    identity, pid = beat.get("identity"), beat.get("pid")
    if (not job_id or beat.get("job_id") != job_id or not isinstance(pid, int) or isinstance(pid, bool)
            or not identity_alive(identity) or not str(identity).startswith(f"{pid}:")):
        return None
    return pid if _is_worker_command(pid, str(beat.get("api", "")), job_id) else None


def _is_worker_command(pid: int, api: str, job_id: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        owner = Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return False
    words = [w.decode(errors="replace") for w in argv]
    wanted = ("worker", "--api", api, "--job-id", job_id)
    return owner == os.getuid() and all(w in words for w in wanted) and "distill" in " ".join(words)


def my_identity() -> str:
    return process_identity(os.getpid()) or str(os.getpid())


@dataclass(frozen=True)
class StateDir:
    """Paths and small operations on one state directory."""

    root: Path

    def ensure(self) -> None:
        """Create the directory (0700 when we make it) and the workers folder; refuse symlinks."""
        if self.root.is_symlink():
            raise StateDirError(f"DIAG_STATE_DIR {self.root} is a symbolic link; refusing to use it")
        if not self.root.exists():
            self.root.mkdir(parents=True, mode=0o700)
        if not self.root.is_dir():
            raise StateDirError(f"DIAG_STATE_DIR {self.root} is not a directory")
        workers = self.path(WORKERS_DIR)
        refuse_symlink(workers)
        workers.mkdir(exist_ok=True, mode=0o700)

    def path(self, name: str) -> Path:
        return self.root / name

    def remove_stale_temporaries(self) -> int:
        """Delete temporaries of our own state files left by a writer that died; return how many.

        Only names this package writes are touched: the state directory may be
        ``/tmp``, shared with everything else on the machine.
        """
        ours = (STATUS_FILE, COUNTER_FILE, STOP_FLAG, STOP_SCRIPT, STOP_NOW_FLAG, JOB_FILE, CLAIMS_FILE, INDEX_FILE,
                ENV_FILE, LAST_JOB_FILE)
        removed = 0
        for name in ours:
            for stale in self.root.glob(f"{TMP_MARK}{name}.*"):
                pid = stale.name.rsplit(".", 1)[-1]
                if pid.isdigit() and process_identity(int(pid)) is None:
                    stale.unlink(missing_ok=True)
                    removed += 1
        return removed + remove_stale_temporaries(self.path(WORKERS_DIR))

    @property
    def status_path(self) -> Path:
        return self.path(STATUS_FILE)

    @property
    def stop_flag(self) -> Path:
        return self.path(STOP_FLAG)

    @property
    def stop_now_flag(self) -> Path:
        return self.path(STOP_NOW_FLAG)

    @property
    def stop_script(self) -> Path:
        return self.path(STOP_SCRIPT)

    def lock(self, name: str, timeout: float = -1) -> filelock.FileLock:
        """A filelock on ``name``; its file is created 0600 and never deleted while in use."""
        path = self.path(name)
        refuse_symlink(path)
        # preserve_lock_file: never unlink a lock file another process may be waiting on.
        return filelock.FileLock(str(path), timeout=timeout, mode=0o600, preserve_lock_file=True)

    # --- the stop request ----------------------------------------------------

    def stop_requested(self) -> bool:
        """A graceful stop was asked for: the flag says so, or a running job's flag was deleted."""
        try:
            text = self.stop_flag.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return self.running_job() is not None
        except OSError:
            return True  # an unreadable flag is no reason to go on paying for calls
        return text.startswith(STOP_MARK)

    def stop_now_requested(self) -> bool:
        return self.stop_now_flag.exists()

    def arm_stop_flag(self, job_id: str) -> None:
        """The flag that exists while job ``job_id`` runs; deleting it, or the stop script, stops the job."""
        self._write_flag(f"{RUNNING_MARK} {job_id}\n"
                         f"# delete this file, or run {self.stop_script}, to stop the job gracefully\n")

    def request_stop(self, *, now: bool = False) -> None:
        try:
            self._write_flag(f"{STOP_MARK} {self._flag_job_id()}\n"
                             f"# withdraw with: diag-distill stop --cancel (DIAG_STATE_DIR={self.root})\n")
        except OutputWriteError:
            if now:
                raise
            # A full disk refuses the write, not an unlink: a running job's missing flag asks for a stop too.
            self.stop_flag.unlink(missing_ok=True)
            return
        if now:
            write_atomic(self.stop_now_flag, b"stop now\n", mode=0o600, durable=False)

    def cancel_stop(self) -> bool:
        """Withdraw a graceful stop of the running job; ``False`` when no job runs to go on."""
        job = self.running_job()
        if job is None:
            return False
        self.arm_stop_flag(str(job.get("job_id", "")))
        return True

    def _flag_job_id(self) -> str:
        job = self.running_job() or {}
        return str(job.get("job_id", ""))

    def _write_flag(self, text: str) -> None:
        refuse_symlink(self.stop_flag)
        write_atomic(self.stop_flag, text.encode(), mode=0o600, durable=False)
        os.chmod(self.stop_flag, 0o600)

    def clear_stop(self) -> None:
        for flag in (self.stop_flag, self.stop_now_flag):
            refuse_symlink(flag)
            flag.unlink(missing_ok=True)

    def write_stop_script(self, python: str) -> None:
        """The executable ``stop_diag_distillation.sh``: ``diag-distill stop`` for this state directory.

        It runs the same code as ``diag-distill stop`` (``python`` is the job's
        interpreter), so with no job running it says so and writes nothing.
        """
        script = (
            "#!/bin/sh\n"
            "# Ask the diag-distill job of this state directory to stop gracefully:\n"
            "# workers finish their current report, then exit. Withdraw with: diag-distill stop --cancel\n"
            f"DIAG_STATE_DIR={shlex.quote(str(self.root))} exec {shlex.quote(python)} -m distill stop \"$@\"\n"
        )
        refuse_symlink(self.stop_script)
        write_atomic(self.stop_script, script.encode(), mode=0o700, durable=False)
        os.chmod(self.stop_script, 0o700)

    # --- the job record --------------------------------------------------------

    def running_job(self) -> dict[str, Any] | None:
        """The record of the live job holding this state directory, or ``None``."""
        job = read_json(self.path(JOB_FILE))
        if isinstance(job, dict) and identity_alive(job.get("identity")):
            return job
        return None

    def write_job(self, record: dict[str, Any]) -> None:
        write_json(self.path(JOB_FILE), record, durable=False)

    def last_job(self) -> dict[str, Any] | None:
        """The running job's record, else the record of the last job started here (``None`` when neither exists)."""
        job = self.running_job() or read_json(self.path(LAST_JOB_FILE))
        return job if isinstance(job, dict) else None

    def write_last_job(self, record: dict[str, Any]) -> None:
        refuse_symlink(self.path(LAST_JOB_FILE))
        write_json(self.path(LAST_JOB_FILE), record, durable=False)

    def acquire_job_lock(self) -> JobLock:
        """Hold the job lock for this process's lifetime; refuse when another job holds it.

        Two locks: the filelock users know, and a name in the kernel's abstract socket
        namespace derived from the directory's path. Deleting the lock file (or the whole
        directory) cannot release the second: only the holder's exit does.
        """
        name = self.job_socket_name()
        try:
            held = bind_abstract(name)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise StateDirError(f"DIAG_STATE_DIR {self.root}: cannot take the job lock: {exc.strerror}") from None
            raise JobAlreadyRunning(describe_running_job(self)) from None
        try:
            lock = self.lock(JOB_LOCK, timeout=0)
            lock.acquire()
        except filelock.Timeout:
            held.close()
            raise JobAlreadyRunning(describe_running_job(self)) from None
        except BaseException:
            held.close()
            raise
        return JobLock(lock, held)

    def job_lock_free(self) -> bool:
        try:
            bind_abstract(self.job_socket_name()).close()
        except OSError:
            return False
        lock = self.lock(JOB_LOCK, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            return False
        lock.release()
        return True

    def job_socket_name(self) -> bytes:
        return job_socket_name(self.root)

    # --- heartbeats --------------------------------------------------------------

    def heartbeat_path(self, api: str) -> Path:
        return self.path(WORKERS_DIR) / f"{api}.json"

    def drop_job_files(self) -> None:
        """The end of a job: its index, claims file (with its slots) and job record go; the counter stays."""
        for name in (INDEX_FILE, JOB_FILE):
            self.path(name).unlink(missing_ok=True)
        forget_recycling(self.path(CLAIMS_FILE))
        forget_recycling(self.path(COUNTER_FILE), keep=True)

    def write_heartbeat(self, api: str, record: dict[str, Any]) -> None:
        path, data = self.heartbeat_path(api), dumps(record, compact=True)
        try:
            write_recycled(path, data)  # at most once a second per worker, all job long: no new inode each time
        except OutputWriteError:
            if path.parent.is_dir() or not self.root.is_dir():
                raise
            self.ensure()  # the workers folder was deleted under a running job: make it again
            write_recycled(path, data)

    def read_heartbeat(self, api: str) -> dict[str, Any] | None:
        data = read_json(self.heartbeat_path(api))
        return data if isinstance(data, dict) else None

    def read_heartbeats(self) -> dict[str, dict[str, Any]]:
        return read_json_folder(self.path(WORKERS_DIR))

    def untrusted(self) -> str | None:
        """Why the files a stop acts on cannot be trusted (one line naming the path), or ``None``.

        As ssh does with its files: the state directory, the job record, the
        workers folder and every heartbeat must belong to this user and be writable by nobody else;
        otherwise another user could make us signal a pid of their choosing. A
        sticky world-writable directory (``/tmp``) is allowed as the state
        directory itself, since nobody else can replace what we made in it.
        """
        folder = self.path(WORKERS_DIR)
        paths = [self.root, self.path(JOB_FILE), folder, *(sorted(folder.glob("*.json")) if folder.is_dir() else [])]
        for path in paths:
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            sticky = path == self.root and info.st_mode & stat.S_ISVTX
            if stat.S_ISLNK(info.st_mode):
                return f"{path} is a symbolic link; refusing to trust it"
            if info.st_uid != os.getuid() and not (sticky and info.st_uid == 0):
                return f"{path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); refusing to trust it"
            if info.st_mode & 0o022 and not sticky:
                return f"{path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o}); refusing to trust it"
        return None

    def orphaned_workers(self) -> dict[str, int]:
        """``{api: pid}`` of live workers of this directory's last job whose supervisor is gone.

        A pid counts only when its identity (pid and start time) is the one its
        heartbeat recorded and its command line is that worker's, of that job.
        """
        job = read_json(self.path(JOB_FILE))
        if not isinstance(job, dict) or identity_alive(job.get("identity")):
            return {}
        job_id = str(job.get("job_id", ""))
        found = {}
        for api, beat in self.read_heartbeats().items():
            pid = worker_pid(beat, job_id)
            if pid is not None:
                found[str(beat.get("api", api))] = pid
        return found

    def clear_heartbeats(self) -> None:
        folder = self.path(WORKERS_DIR)
        for name in os.listdir(folder) if folder.is_dir() else []:
            if name.endswith(".json"):
                forget_recycling(folder / name)

    def read_status(self) -> dict[str, Any] | None:
        data = read_json(self.status_path)
        return data if isinstance(data, dict) else None

    def write_status(self, status: dict[str, Any]) -> None:
        write_json(self.status_path, status, durable=False)


def describe_running_job(state: StateDir) -> str:
    job = state.running_job() or read_json(state.path(JOB_FILE)) or {}
    since = job.get("started_at", "an unknown time")
    pid = job.get("pid", "?")
    return (
        f"another diag-distill job is running on state directory {state.root} "
        f"(supervisor pid {pid}, started {since}, reports from {job.get('start', '?')}, "
        f"output {job.get('output_dir', '?')}); stop it with {state.stop_script}, or run a second job beside it "
        f"with its own state directory, session prefix and output folder: {SECOND_JOB_HINT}"
    )


#: What a second job on the same machine needs, as the user would type it.
SECOND_JOB_HINT = ("DIAG_STATE_DIR=/tmp/diag_job2 DIAG_SESSION_PREFIX=diag_job2 "
                   ".venv/bin/diag-distill start START --output-dir OTHER_FOLDER")

