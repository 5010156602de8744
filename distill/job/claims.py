"""Claiming reports: a file-locked counter plus leases, shared by every worker.

Under one ``filelock`` in the state directory:

- ``current_diag_processing_number.txt`` keeps the highest number handed out;
- ``continuous_diag_claims.json`` keeps the leases (report -> owner identity)
  and the numbers handed back (released unfinished, owner died, or files that
  arrived below the counter), and the endpoints each unfinished report failed on
  while they were otherwise up (``strikes``: such a report goes to other endpoints);
- ``continuous_diag_index.bin`` keeps the sorted numbers that were pending at
  the last scan of the input folder, as little-endian int64.

A claim hands out, in order: a number handed back, else the next number
above the counter in the index. Both are found by bisection, so a claim costs
the same with a million files and gaps of any size. The folder is scanned again
only when its modification time changed (a file arrived or left).
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import os
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.core.errors import InputDirMissing, JobNotStarted, StateDirError
from distill.job.state import CLAIMS_FILE, CLAIMS_LOCK, COUNTER_FILE, INDEX_FILE, StateDir, identity_alive
from distill.results.atomic import read_json, refuse_symlink, write_atomic, write_json
from distill.results.store import OutputStore

_SUFFIXES = (".txt", ".json")
ALIVE_TTL_S = 2.0  # a dead owner's report is handed out again at most this much later
#: Waiters queue here with a blocking flock before taking the claims filelock, which waits by
#: polling (every 50 ms): sleeping in the kernel, the next waiter enters as soon as the holder leaves.
CLAIMS_QUEUE = "continuous_diag_claims.queue"


@dataclass(frozen=True)
class Claim:
    """A report handed to one worker."""

    number: int
    path: Path
    handed_back: bool  # it had been handed out before (owner died or released it)


def missing_input(folder: Path, what: str = "does not exist") -> InputDirMissing:
    return InputDirMissing(f"input folder {folder} {what} (INPUT_DIR / --input-dir)")


def require_input_dir(folder: Path) -> None:
    """Raise ``InputDirMissing`` naming the folder unless it is a folder."""
    if not folder.is_dir():
        raise missing_input(folder, "is not a folder" if folder.exists() else "does not exist")


def scan_input(folder: Path, start: int, end: int | None) -> array[int]:
    """Sorted report numbers in ``folder`` within ``[start, end]`` (one listing)."""
    found = array("q")
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        raise missing_input(folder) from None
    except NotADirectoryError:
        raise missing_input(folder, "is not a folder") from None
    top = end if end is not None else sys.maxsize
    with entries:
        for entry in entries:
            name = entry.name
            if name.startswith("report_") and name.endswith(_SUFFIXES):
                digits = name[7 : name.rindex(".")]
                if digits.isdigit():
                    number = int(digits)
                    if start <= number <= top:
                        found.append(number)
    ordered = array("q", sorted(set(found)))
    return ordered


@dataclass(frozen=True)
class RangeScan:
    """The reports of a range as the folders show them now: in the input folder, done, failed."""

    existing: array[int]
    done: set[int]
    failed: set[int]

    def pending(self) -> array[int]:
        return array("q", (n for n in self.existing if n not in self.done and n not in self.failed))

    def counts(self) -> dict[str, int]:
        done = sum(1 for n in self.existing if n in self.done)
        failed = sum(1 for n in self.existing if n in self.failed and n not in self.done)
        return {"existing": len(self.existing), "pending": len(self.existing) - done - failed,
                "done": done, "failed": failed}


def scan_range(folder: Path, store: OutputStore, start: int, end: int | None) -> RangeScan:
    """One listing of the input folder and of the done and failed outputs."""
    return RangeScan(scan_input(folder, start, end), store.settled_numbers(), store.failed_numbers())


def report_path(folder: Path, number: int) -> Path | None:
    """The file of report ``number`` (``.txt`` preferred), or ``None`` when neither exists."""
    for suffix in _SUFFIXES:
        path = folder / f"report_{number}{suffix}"
        if os.path.lexists(path):
            return path
    return None


def _hand_back(doc: dict[str, Any], number: int) -> None:
    """Put ``number`` among the reports handed out again before any new number."""
    if number not in doc["returned"]:
        doc["returned"] = sorted([*doc["returned"], number])


def _little_endian(numbers: array[int]) -> array[int]:
    """The index file's byte order is little-endian on every machine (a swap is its own inverse)."""
    if sys.byteorder == "little":
        return numbers
    swapped = array("q", numbers)
    swapped.byteswap()
    return swapped


class ClaimBook:
    """The claim state of one job. Every method is safe across processes."""

    def __init__(self, state: StateDir, store: OutputStore, input_dir: Path, *,
                 check_interval: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.store = store
        self.input_dir = input_dir
        self.check_interval = check_interval
        self.clock = clock
        self._lock = state.lock(CLAIMS_LOCK)
        self._index: array[int] = array("q")
        self._generation = -1
        self._queue_fd: int | None = None
        self._thread_lock = threading.Lock()  # a worker claims on one thread and releases on another
        self._finished: list[int] = []  # done reports whose leases go at the next write (release(defer=True))
        self._finished_lock = threading.Lock()
        self._alive_until: dict[str, float] = {}  # lease owner identity -> trusted alive until (monotonic)
        self._loaded_counter: int | None = None  # the counter as read: the counter file is rewritten only on change

    def __del__(self) -> None:
        fd = getattr(self, "_queue_fd", None)  # absent when __init__ raised (a refused symlink)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the claims filelock, after waiting for it in the kernel's queue rather than by polling."""
        if self._queue_fd is None:
            path = self.state.path(CLAIMS_QUEUE)
            refuse_symlink(path)
            try:
                self._queue_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StateDirError(f"cannot open {path}: {exc.strerror}") from None
        with self._thread_lock:
            fcntl.flock(self._queue_fd, fcntl.LOCK_EX)
            try:
                with self._lock:
                    yield
            finally:
                fcntl.flock(self._queue_fd, fcntl.LOCK_UN)

    # --- persistence (always under the lock) ----------------------------------

    def _load(self) -> dict[str, Any]:
        doc = read_json(self.state.path(CLAIMS_FILE))
        if not isinstance(doc, dict) or "start" not in doc:
            raise JobNotStarted(f"no job has been started on state directory {self.state.root} (run start first)")
        self._loaded_counter = doc.get("counter")
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        write_json(self.state.path(CLAIMS_FILE), doc, durable=False, compact=True)
        if doc["counter"] != self._loaded_counter:
            write_atomic(self.state.path(COUNTER_FILE), f"{doc['counter']}\n".encode(), durable=False,
                         mode=0o400)  # information for people: editing it by hand changes nothing

    def _index_for(self, doc: dict[str, Any]) -> array[int]:
        generation = doc["scan"]["generation"]
        if generation != self._generation:
            index = array("q")
            try:
                with open(self.state.path(INDEX_FILE), "rb") as handle:
                    index.frombytes(handle.read())
            except OSError:
                index = array("q")
            self._index, self._generation = _little_endian(index), generation
        return self._index

    def _rescan(self, doc: dict[str, Any]) -> None:
        """Rebuild the index from the folder and the outputs; hand back unclaimed numbers below the counter."""
        mtime = self._input_mtime()
        scan = scan_range(self.input_dir, self.store, doc["start"], doc["end"])
        pending = scan.pending()
        write_atomic(self.state.path(INDEX_FILE), _little_endian(pending).tobytes(), durable=False)
        leased = {int(n) for n in doc["leases"]}
        below = pending[: bisect.bisect_right(pending, doc["counter"])]
        doc["returned"] = sorted(set(doc["returned"]) | {n for n in below if n not in leased})
        generation = doc["scan"]["generation"] + 1
        doc["scan"] = {"generation": generation, "mtime_ns": mtime, "at": self.clock(), **scan.counts()}
        self._index, self._generation = pending, generation

    def _input_mtime(self) -> int:
        try:
            return os.stat(self.input_dir).st_mtime_ns
        except FileNotFoundError:
            raise missing_input(self.input_dir) from None

    # --- the job's life ----------------------------------------------------------

    def begin(self, start: int, end: int | None) -> dict[str, Any]:
        """Set up a new job's range: counter at ``start - 1``, live leases kept, the folder scanned.

        Everything else is recomputed from the output folder, which is the
        truth about what is done.
        """
        with self._locked():
            self._loaded_counter = None
            old = read_json(self.state.path(CLAIMS_FILE))
            leases: dict[str, Any] = {}
            strikes: dict[str, list[str]] = {}
            if isinstance(old, dict):
                leases = {n: lease for n, lease in old.get("leases", {}).items()
                          if identity_alive(lease.get("identity"))}
                strikes = old["strikes"] if isinstance(old.get("strikes"), dict) else {}
            doc: dict[str, Any] = {
                "start": start, "end": end, "input_dir": str(self.input_dir), "counter": start - 1,
                "leases": leases, "returned": [], "scan": {"generation": 0, "mtime_ns": 0, "at": 0.0},
                "strikes": strikes,
            }
            self._rescan(doc)
            self._save(doc)
            return doc["scan"]

    def claim_next(self, api: str, identity: str) -> Claim | None:
        """Hand the next report to ``api``'s worker, or ``None`` when nothing is claimable now."""
        with self._locked():
            doc = self._load()
            self._drop_finished(doc)
            self._reap_dead(doc)
            claim = self._pick(doc, api=api)
            if claim is None and self._folder_changed(doc, force=True):
                self._rescan(doc)
                claim = self._pick(doc, api=api)
            elif claim is not None and self._folder_changed(doc, force=False):
                self._rescan(doc)
            if claim is not None:
                doc["leases"][str(claim.number)] = {"api": api, "identity": identity, "since": self.clock()}
            self._save(doc)
            return claim

    def release(self, number: int, *, finished: bool, defer: bool = False) -> None:
        """Drop the lease; an unfinished report goes back to the pool, ahead of new numbers.

        ``defer`` (for a finished report only) drops the lease at this book's
        next write instead of writing now: a done report is never handed out
        again, so its lease may linger a moment, and a worker saves one write
        of the claims file per report. ``flush`` writes what is deferred.
        """
        if finished and defer:
            with self._finished_lock:
                self._finished.append(number)
            return
        with self._locked():
            doc = self._load()
            self._drop_finished(doc)
            doc["leases"].pop(str(number), None)
            if not finished:
                _hand_back(doc, number)
            else:
                doc.get("strikes", {}).pop(str(number), None)
            self._save(doc)

    def strike(self, number: int, api: str) -> list[str]:
        """Note that ``number`` failed on ``api`` while ``api`` was otherwise up; every endpoint it failed on.

        ``api`` is not handed the report again: other endpoints are.
        """
        with self._locked():
            doc = self._load()
            self._drop_finished(doc)
            struck: list[str] = doc.setdefault("strikes", {}).setdefault(str(number), [])
            if api not in struck:
                struck.append(api)
            self._save(doc)
            return list(struck)

    def flush(self) -> None:
        """Write the releases ``release(..., defer=True)`` kept back."""
        if self._finished:
            with self._locked():
                doc = self._load()
                if self._drop_finished(doc):
                    self._save(doc)

    def _drop_finished(self, doc: dict[str, Any]) -> bool:
        """Apply the deferred releases to ``doc``; True when there were any."""
        with self._finished_lock:
            finished, self._finished = self._finished, []
        for number in finished:
            doc["leases"].pop(str(number), None)
            doc.get("strikes", {}).pop(str(number), None)
        return bool(finished)

    def drained(self) -> bool:
        """True when nothing is claimable, handed back, or in flight."""
        with self._locked():
            doc = self._load()
            if self._drop_finished(doc):
                self._save(doc)
            self._reap_dead(doc)
            if doc["leases"] or self._pick(doc, dry_run=True) is not None:
                return False
            if self._folder_changed(doc, force=True):
                self._rescan(doc)
                self._save(doc)
                return self._pick(doc, dry_run=True) is None
            return True

    def snapshot(self) -> dict[str, Any]:
        """Counter, leases and scan figures, for the status file (no lock: a read of one file)."""
        doc = read_json(self.state.path(CLAIMS_FILE))
        return doc if isinstance(doc, dict) else {}

    def renew(self) -> None:
        """Nothing to renew: a lease here lives as long as its owner's process."""

    # --- internals -----------------------------------------------------------------

    def _owner_alive(self, identity: str | None) -> bool:
        """Whether a lease's owner lives; a live answer is trusted for ``ALIVE_TTL_S`` (one /proc read per owner
        then, not one per lease per claim: with 64 workers that read sat inside the lock)."""
        if not identity:
            return False
        now = time.monotonic()
        if self._alive_until.get(identity, 0.0) > now:
            return True
        if identity_alive(identity):
            self._alive_until[identity] = now + ALIVE_TTL_S
            return True
        self._alive_until.pop(identity, None)
        return False

    def _reap_dead(self, doc: dict[str, Any]) -> None:
        for key, lease in list(doc["leases"].items()):
            if not self._owner_alive(lease.get("identity")):
                del doc["leases"][key]
                if not self.store.is_done(int(key)):
                    _hand_back(doc, int(key))

    def _folder_changed(self, doc: dict[str, Any], *, force: bool) -> bool:
        if self._input_mtime() == doc["scan"]["mtime_ns"]:
            return False
        return force or self.clock() - doc["scan"]["at"] >= self.check_interval

    def _claimable(self, number: int, leases: dict[str, Any]) -> Path | None:
        if str(number) in leases or self.store.is_done(number) or self.store.is_failed(number):
            return None
        return report_path(self.input_dir, number)

    def _pick(self, doc: dict[str, Any], *, dry_run: bool = False, api: str = "") -> Claim | None:
        leases = doc["leases"]
        returned: list[int] = doc["returned"]
        strikes = doc.get("strikes", {})
        for number in list(returned):
            if api and api in strikes.get(str(number), ()):
                continue  # it failed on this endpoint: left for the others
            path = self._claimable(number, leases)
            if not dry_run:
                returned.remove(number)  # claimed now, or finished / gone: either way no longer handed back
            if path is not None:
                return Claim(number, path, True)
        index = self._index_for(doc)
        position = bisect.bisect_right(index, doc["counter"])
        while position < len(index):
            number = index[position]
            path = self._claimable(number, leases)
            if path is not None:
                if not dry_run:
                    doc["counter"] = number
                return Claim(number, path, False)
            position += 1
            if not dry_run:
                doc["counter"] = number
        return None
