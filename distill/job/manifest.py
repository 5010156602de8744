"""One job per output folder: the folder's job manifest and the lock its supervisor holds.

Every supervisor keeps two files in its output folder:

- ``.diag_job.lock``, a filelock held for the supervisor's whole life. It is
  never deleted (another process may be waiting on it) and is created 0600.
- ``diag_job.json``, the manifest: job id, input folder, output folder, the
  state directory, START, the teachers, when it started, and one entry per
  host running it, each renewed every ``RENEW_S``. Written atomically, kept
  after the job ends (``ended_at`` set) as the folder's record of who wrote it.

The folder is taken when its lock is held by another process, or when the
manifest names a live holder: on this host a process whose identity (pid and
start time) is alive, on another host an entry renewed within
``STALE_AFTER_S``. The manifest is needed because a filelock does not reach
across NFS clients and says nothing about which job holds it; the lock is
needed because a manifest alone has a window between reading and writing.
A manifest whose holders are all dead blocks nothing.

Several hosts of one Redis job share one output folder: a start whose job id
(the one Redis holds) is the manifest's joins; any other job is refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import filelock

from distill.core.clock import utc_now
from distill.core.config import Settings
from distill.core.errors import ConfigError, JobAlreadyRunning
from distill.job.claims_backend import host_name
from distill.job.state import JOB_FILE, StateDir, identity_alive, my_identity
from distill.results.atomic import read_json, refuse_symlink, write_json
from distill.results.teachers import endpoint_teacher

MANIFEST_FILE = "diag_job.json"
LOCK_FILE = ".diag_job.lock"
RENEW_S = 30.0
#: An entry of another host not renewed for this long belongs to a job that is gone.
STALE_AFTER_S = 120.0


def manifest_path(output_dir: Path) -> Path:
    return output_dir / MANIFEST_FILE


def read_manifest(output_dir: Path) -> dict[str, Any] | None:
    """The output folder's manifest, or ``None`` when there is none (or it cannot be parsed)."""
    data = read_json(manifest_path(output_dir))
    return data if isinstance(data, dict) else None


def _hosts(manifest: dict[str, Any]) -> dict[str, Any]:
    hosts = manifest.get("hosts")
    return hosts if isinstance(hosts, dict) else {}


def live_hosts(manifest: dict[str, Any], *, now: float, this_host: str) -> list[str]:
    """The hosts whose entry in ``manifest`` belongs to a supervisor still running."""
    alive = []
    for host, entry in _hosts(manifest).items():
        if not isinstance(entry, dict):
            continue
        if host == this_host:
            if identity_alive(entry.get("identity")):
                alive.append(host)
            continue
        renewed = entry.get("renewed_at")
        if isinstance(renewed, (int, float)) and now - float(renewed) < STALE_AFTER_S:
            alive.append(host)
    return alive


def describe_holder(output_dir: Path, manifest: dict[str, Any] | None) -> str:
    """The one line that refuses a second job on ``output_dir``."""
    if not manifest:
        return (f"output folder {output_dir} is in use by another diag-distill job (it holds "
                f"{output_dir / LOCK_FILE}); stop that job, or give this job another output folder")
    hosts = _hosts(manifest)
    entry: Any = next(iter(hosts.values()), {})
    pid = entry.get("pid", "?") if isinstance(entry, dict) else "?"
    state_dir = manifest.get("state_dir", "?")
    where = f", hosts {', '.join(sorted(hosts))}" if len(hosts) > 1 else (f", host {next(iter(hosts))}" if hosts else "")
    return (f"output folder {output_dir} is in use by diag-distill job {manifest.get('job_id', '?')} "
            f"(state directory {state_dir}{where}, supervisor pid {pid}, started {manifest.get('started_at', '?')}, "
            f"reports from {manifest.get('start', '?')}); stop it with DIAG_STATE_DIR={state_dir} diag-distill stop, "
            f"or give this job another output folder")


class OutputFolderClaim:
    """This supervisor's hold on one output folder: ``hold`` at start, ``renew`` now and then, ``release`` at the end."""

    def __init__(self, output_dir: Path, *, clock: Callable[[], float] = time.time, host: str | None = None) -> None:
        self.output_dir = output_dir
        self.clock = clock
        self.host = host or host_name()
        self.me = my_identity()
        self.lock: filelock.BaseFileLock | None = None
        self.job_id = ""
        self.state_dir = ""
        self._renew_at = 0.0

    # --- is the folder taken? ------------------------------------------------------

    def _take_lock(self) -> bool:
        """Try the folder's lock once; ``True`` when this process holds it now (or the filesystem has no locks)."""
        path = self.output_dir / LOCK_FILE
        refuse_symlink(path)
        lock = filelock.FileLock(str(path), timeout=0, mode=0o600, preserve_lock_file=True)
        try:
            lock.acquire()
        except filelock.Timeout:
            return False
        except PermissionError:
            owner = _owner(path)
            raise ConfigError(f"cannot open {path}: permission denied (it belongs to uid {owner}); this output "
                              f"folder is another user's: give this job its own output folder") from None
        except (OSError, NotImplementedError):
            return True  # no locks on this filesystem (some NFS mounts): the manifest alone decides
        self.lock = lock
        return True

    def check(self, job_id: str | None, *, state_dir: Path | None = None) -> None:
        """Raise ``JobAlreadyRunning`` unless job ``job_id`` of ``state_dir`` may use the folder; takes nothing.

        ``job_id`` is the shared id of a Redis job (``""`` for one not created yet),
        ``None`` for a job of one host.
        """
        try:
            self._decide(job_id, state_dir)
        finally:
            self._drop_lock()

    def _decide(self, job_id: str | None, state_dir: Path | None) -> None:
        if not self.output_dir.is_dir():
            return
        locked_here = self._take_lock()
        manifest = read_manifest(self.output_dir)
        alive = live_hosts(manifest, now=self.clock(), this_host=self.host) if manifest else []
        same_job = bool(job_id) and manifest is not None and manifest.get("job_id") == job_id
        if (alive or not locked_here) and not same_job:
            current = manifest if manifest is not None and (alive or not manifest.get("ended_at")) else None
            raise JobAlreadyRunning(describe_holder(self.output_dir, current))
        if manifest is not None and not alive and not same_job:
            _refuse_orphans(self.output_dir, manifest, state_dir)

    def hold(self, record: dict[str, Any], *, shared_job_id: str | None = None) -> None:
        """Take the folder for the job ``record`` describes, or raise ``JobAlreadyRunning`` naming the holder.

        ``record`` holds ``job_id``, ``input_dir``, ``state_dir``, ``start``, ``end``,
        ``teachers``; ``shared_job_id`` is a Redis job's id (its hosts join one manifest).
        """
        self.output_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._decide(shared_job_id, Path(str(record.get("state_dir", ""))) if record.get("state_dir") else None)
        except BaseException:
            self._drop_lock()
            raise
        self.job_id, self.state_dir = str(record["job_id"]), str(record.get("state_dir", ""))
        manifest = read_manifest(self.output_dir)
        if not (shared_job_id and manifest and manifest.get("job_id") == shared_job_id):
            manifest = {**record, "output_dir": str(self.output_dir), "started_at": utc_now(), "hosts": {}}
        manifest.pop("ended_at", None)
        self._write(manifest, durable=True)

    def adopt(self, job_id: str) -> None:
        """Another host created the Redis job at the same moment: the manifest takes the id Redis holds."""
        manifest = read_manifest(self.output_dir) or {}
        self.job_id = manifest["job_id"] = job_id
        self._write(manifest, durable=True)

    def renew(self) -> None:
        """Refresh this host's entry (other hosts go by its age); cheap to call every tick."""
        now = self.clock()
        if not self.job_id or now < self._renew_at:
            return
        manifest = read_manifest(self.output_dir)
        if manifest is None or manifest.get("job_id") != self.job_id:
            return  # the folder's manifest was replaced by hand: nothing of ours to renew
        self._write(manifest, durable=False)

    def _write(self, manifest: dict[str, Any], *, durable: bool) -> None:
        now = self.clock()
        hosts = _hosts(manifest)
        hosts[self.host] = {"identity": self.me, "pid": os.getpid(), "state_dir": self.state_dir,
                            "renewed_at": round(now, 3), "renewed": utc_now()}
        manifest["hosts"] = hosts
        write_json(manifest_path(self.output_dir), manifest, durable=durable)
        self._renew_at = now + RENEW_S

    def release(self) -> None:
        """Take this host's entry out (the manifest stays, with ``ended_at`` once no host runs it); free the lock."""
        try:
            manifest = read_manifest(self.output_dir) if self.job_id else None
            if manifest is not None and manifest.get("job_id") == self.job_id:
                hosts = _hosts(manifest)
                hosts.pop(self.host, None)
                manifest["hosts"] = hosts
                if not live_hosts(manifest, now=self.clock(), this_host=self.host):
                    manifest["ended_at"] = utc_now()
                write_json(manifest_path(self.output_dir), manifest, durable=True)
        finally:
            self.job_id = ""
            self._drop_lock()

    def _drop_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _refuse_orphans(output_dir: Path, manifest: dict[str, Any], state_dir: Path | None) -> None:
    """A killed supervisor's workers may still write the folder: only that job's own state directory may take
    it over (its next start closes their sessions); any other job is refused until they are stopped."""
    theirs = manifest.get("state_dir")
    if not isinstance(theirs, str) or not theirs or (state_dir is not None and Path(theirs) == state_dir):
        return
    state = StateDir(Path(theirs))
    job = read_json(state.path(JOB_FILE))
    if not isinstance(job, dict) or job.get("output_dir") != str(output_dir):
        return  # that state directory's last job wrote elsewhere
    orphans = state.orphaned_workers()
    if orphans:
        raise JobAlreadyRunning(
            f"output folder {output_dir} is still written by {len(orphans)} worker(s) of diag-distill job "
            f"{manifest.get('job_id', '?')} whose supervisor is gone (state directory {theirs}); stop them with "
            f"DIAG_STATE_DIR={theirs} diag-distill stop, or give this job another output folder")


def _owner(path: Path) -> str:
    try:
        return str(path.stat().st_uid)
    except OSError:
        return "?"


def output_job_state_dir(output_dir: Path) -> Path | None:
    """The state directory of the job the output folder's manifest names, or ``None`` when it names none."""
    manifest = read_manifest(output_dir)
    state_dir = manifest.get("state_dir") if manifest else None
    return Path(state_dir) if isinstance(state_dir, str) and state_dir else None


def shared_job_id(book: object) -> str | None:
    """The id of the job a shared claims backend (Redis) holds (``""`` before one exists); ``None`` for files."""
    stored = getattr(book, "stored_job_id", None)
    return str(stored()) if callable(stored) else None


def check_output_folder(output_dir: Path, url: str | None, *, state_dir: Path | None = None) -> None:
    """Refuse, before anything starts, a job on an output folder another job uses (``url``: a Redis job's)."""
    job_id: str | None = None
    if url:
        from distill.job.claims_redis import RedisClaimBook
        from distill.results.store import OutputStore

        job_id = RedisClaimBook(url, OutputStore(output_dir), output_dir).stored_job_id()
    OutputFolderClaim(output_dir).check(job_id, state_dir=state_dir)


def hold_for_job(folder: OutputFolderClaim, book: object, *, job_id: str, settings: Settings, apis: list[str],
                 start: int, end: int | None) -> None:
    """Take ``folder`` for a job starting now; the hosts of one Redis job share it under the id Redis holds."""
    shared = shared_job_id(book)
    if shared == "":  # this host creates the Redis job: under the id its manifest names
        book.proposed_job_id = job_id  # type: ignore[attr-defined]
    folder_id = shared or job_id
    teachers = sorted({endpoint_teacher(is_local=e.is_local, model=e.model)
                       for api, e in settings.endpoints.items() if api in apis})
    folder.hold({"job_id": folder_id, "input_dir": str(settings.input_dir), "state_dir": str(settings.state_dir),
                 "start": start, "end": end, "teachers": teachers, "claims": "file" if shared is None else "redis"},
                shared_job_id=None if shared is None else folder_id)


def follow_shared_id(folder: OutputFolderClaim, book: object) -> None:
    """After ``begin``: when another host created the Redis job first, the manifest names that job."""
    stored = getattr(book, "job_id", None)
    if isinstance(stored, str) and stored and stored != folder.job_id:
        folder.adopt(stored)
