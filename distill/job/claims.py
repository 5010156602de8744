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
import os
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.core.errors import JobNotStarted, StateDirError
from distill.job.claims_file import (
    CLAIMS_QUEUE,
    ClaimsQueue,
    counter_problem,
    index_bytes,
    leftover_problem,
    live_leases,
    parse_index,
    read_claims,
    shape_problem,
)
from distill.job.inputs import (  # noqa: F401 - callers import the input scan from here too
    UNUSED_KEPT,
    RangeScan,
    SettleCheck,
    missing_input,
    report_path,
    require_input_dir,
    scan_input,
    scan_range,
)
from distill.job.state import CLAIMS_FILE, CLAIMS_LOCK, COUNTER_FILE, INDEX_FILE, StateDir, identity_alive
from distill.results.atomic import dumps, read_json, write_atomic, write_recycled
from distill.results.store import OutputStore

ALIVE_TTL_S = 2.0  # a dead owner's report is handed out again at most this much later
#: Notes still being written that a claim keeps track of at most; the ones above them wait above the counter
#: until these settle (a folder copied in just before the start would otherwise be walked, and kept in
#: the claims document, note by note at every claim).
SETTLING_HELD = 64


@dataclass(frozen=True)
class Claim:
    """A report handed to one worker."""

    number: int
    path: Path
    handed_back: bool  # it had been handed out before (owner died or released it)


def _hand_back(doc: dict[str, Any], number: int) -> None:
    """Put ``number`` among the reports handed out again before any new number."""
    if number not in doc["returned"]:
        doc["returned"] = sorted([*doc["returned"], number])


class ClaimBook:
    """The claim state of one job. Every method is safe across processes."""

    def __init__(self, state: StateDir, store: OutputStore, input_dir: Path, *,
                 check_interval: float = 5.0, clock: Callable[[], float] = time.time, settle_s: float = 0.0) -> None:
        self.state = state
        self.store = store
        self.input_dir = input_dir
        self.check_interval = check_interval
        self.clock = clock
        self.settle = SettleCheck(settle_s, clock=clock)
        #: Lines for people (a file not used, a state file rebuilt); the worker says and clears them.
        self.notices: list[str] = []
        #: Notes that exist but are still changing, as of the last claim: number -> earliest claim time.
        self.settling: dict[int, float] = {}
        self._lock = state.lock(CLAIMS_LOCK)
        self._index: array[int] = array("q")
        self._generation = -1
        self._queue = ClaimsQueue(state.path(CLAIMS_QUEUE))
        self._finished: list[int] = []  # done reports whose leases go at the next write (release(defer=True))
        self._finished_lock = threading.Lock()
        self._dropped: set[int] = set()  # deferred releases applied to the document being written
        self._alive_until: dict[str, float] = {}  # lease owner identity -> trusted alive until (monotonic)
        self._loaded_counter: int | None = None  # the counter as read: the counter file is rewritten only on change

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the claims filelock, after waiting for it in the kernel's queue rather than by polling."""
        with self._queue.held(), self._lock:
            yield

    # --- persistence (always under the lock) ----------------------------------

    def _load(self) -> dict[str, Any]:
        doc = read_claims(self.state.path(CLAIMS_FILE), self.state.root)
        doc.setdefault("settling", {})
        self._loaded_counter = doc.get("counter")
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        write_recycled(self.state.path(CLAIMS_FILE), dumps(doc, compact=True))  # rewritten at every claim
        with self._finished_lock:  # written: the deferred releases applied to ``doc`` are done with
            self._finished = [n for n in self._finished if n not in self._dropped]
            self._dropped = set()
        if doc["counter"] != self._loaded_counter:
            self._write_counter(doc["counter"])
            self._loaded_counter = doc["counter"]

    def _write_counter(self, counter: int) -> None:
        write_recycled(self.state.path(COUNTER_FILE), f"{counter}\n".encode(),
                       mode=0o400)  # information for people: editing it by hand changes nothing

    def _index_for(self, doc: dict[str, Any]) -> array[int]:
        generation = doc["scan"]["generation"]
        if generation != self._generation:
            path = self.state.path(INDEX_FILE)
            try:
                with open(path, "rb") as handle:
                    index = parse_index(handle.read())
                why = "malformed"
            except FileNotFoundError:
                index, why = None, "missing"
            except OSError as exc:
                index, why = None, f"unreadable ({exc.strerror})"
            if index is None:  # rebuilt from the folder: the index is only a cache of a scan
                self.notices.append(f"index file {path} was {why}; rebuilt it from the input folder")
                self._rescan(doc)
            else:
                self._index, self._generation = index, generation
        return self._index

    def _rescan(self, doc: dict[str, Any]) -> None:
        """Rebuild the index from the folder and the outputs; hand back unclaimed numbers below the counter."""
        mtime = self._input_mtime()
        scan = scan_range(self.input_dir, self.store, doc["start"], doc["end"])
        pending = scan.pending()
        write_atomic(self.state.path(INDEX_FILE), index_bytes(pending), durable=False)
        leased = {int(n) for n in doc["leases"]}
        below = pending[: bisect.bisect_right(pending, doc["counter"])]
        doc["returned"] = sorted(set(doc["returned"]) | {n for n in below if n not in leased})
        generation = doc["scan"]["generation"] + 1
        doc["scan"] = {"generation": generation, "mtime_ns": mtime, "at": self.clock(), **scan.counts()}
        told = doc.setdefault("unused", {})
        for name, reason in scan.unused.items():  # said once per job, by the process whose scan found it
            if name not in told and len(told) < UNUSED_KEPT:
                told[name] = reason
                self.notices.append(f"{name}: not used: {reason}")
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
            path = self.state.path(CLAIMS_FILE)
            problem = leftover_problem(path)
            if problem is not None:
                self.notices.append(problem)
            old = read_json(path)
            leases = {n: lease for n, lease in live_leases(old).items() if identity_alive(lease.get("identity"))}
            strikes = old["strikes"] if isinstance(old, dict) and isinstance(old.get("strikes"), dict) else {}
            doc: dict[str, Any] = {
                "start": start, "end": end, "input_dir": str(self.input_dir), "counter": start - 1,
                "leases": leases, "returned": [], "settling": {},
                "scan": {"generation": 0, "mtime_ns": 0, "at": 0.0}, "strikes": strikes,
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
        """Apply the deferred releases to ``doc``; True when there were any. They are forgotten only once
        ``doc`` is written (``_save``): a write refused (a full disk) keeps them for the next one."""
        with self._finished_lock:
            finished = list(self._finished)
            self._dropped = set(finished)
        for number in finished:
            doc["leases"].pop(str(number), None)
            doc.get("strikes", {}).pop(str(number), None)
        return bool(finished)

    def drained(self) -> bool:
        """True when nothing is claimable, handed back, settling, or in flight."""
        with self._locked():
            doc = self._load()
            generation = doc["scan"]["generation"]
            self._drop_finished(doc)
            self._reap_dead(doc)
            busy = bool(doc["leases"] or doc["settling"]) or self._pick(doc, dry_run=True) is not None
            if not busy and self._folder_changed(doc, force=True):
                self._rescan(doc)
                busy = self._pick(doc, dry_run=True) is not None
            if self._dropped or doc["scan"]["generation"] != generation:
                self._save(doc)
            return not busy

    def snapshot(self) -> dict[str, Any]:
        """Counter, leases and scan figures, for the status file (no lock: a read of one file); ``{}`` when
        the file is missing or malformed (``check`` says which)."""
        doc = read_json(self.state.path(CLAIMS_FILE))
        return doc if shape_problem(doc) is None else {}

    def check(self) -> str | None:
        """``None`` while the claims state is whole, else one line saying what was lost (the job cannot go on).

        A missing or malformed index, and a missing or altered counter file, are rebuilt; ``notices`` says so.
        """
        path = self.state.path(CLAIMS_FILE)
        try:
            with self._locked():
                doc = self._load()
                index = self.state.path(INDEX_FILE)
                try:
                    index_ok = index.stat().st_size % 8 == 0
                except FileNotFoundError:
                    index_ok = False
                if not index_ok:
                    self.notices.append(f"index file {index} was missing or malformed; rebuilt it from the "
                                        f"input folder")
                    self._rescan(doc)
                    self._save(doc)
                self._check_counter(doc["counter"])
        except JobNotStarted:
            return f"claims file {path} was deleted while the job ran"
        except StateDirError as exc:
            return str(exc)
        return None

    def _check_counter(self, counter: int) -> None:
        problem = counter_problem(self.state.path(COUNTER_FILE), counter)
        if problem is not None:
            self.notices.append(problem)
            self._write_counter(counter)

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

    def _unsettled(self, number: int, path: Path, doc: dict[str, Any], dry_run: bool) -> bool:
        """Whether the note is still changing; if so it waits among ``settling`` for a later claim.

        A dry run (``drained``) counts a note that exists as pending, settled or not.
        """
        if dry_run:
            return False
        wait = self.settle.wait_left(path)
        if wait <= 0:
            doc["settling"].pop(str(number), None)
            return False
        doc["settling"][str(number)] = self.clock() + wait
        return True

    def _pick(self, doc: dict[str, Any], *, dry_run: bool = False, api: str = "") -> Claim | None:
        claim = self._pick_from(doc, dry_run, api)
        self.settling = {int(n): float(at) for n, at in doc["settling"].items()}
        return claim

    def _pick_from(self, doc: dict[str, Any], dry_run: bool, api: str) -> Claim | None:
        leases = doc["leases"]
        returned: list[int] = doc["returned"]
        strikes = doc.get("strikes", {})
        for number in list(returned):
            if api and api in strikes.get(str(number), ()):
                continue  # it failed on this endpoint: left for the others
            path = self._claimable(number, leases)
            if not dry_run:
                returned.remove(number)  # claimed now, or finished / gone: either way no longer handed back
            if path is not None and not self._unsettled(number, path, doc, dry_run):
                return Claim(number, path, True)
        now = self.clock()
        for key, ready in sorted(doc["settling"].items(), key=lambda item: int(item[0])):
            number = int(key)
            if ready > now or str(number) in leases or (api and api in strikes.get(key, ())):
                continue
            path = self._claimable(number, leases)
            if path is None:  # done, failed or gone meanwhile
                doc["settling"].pop(key, None)
            elif not self._unsettled(number, path, doc, dry_run):
                return Claim(number, path, True)
        index = self._index_for(doc)
        position = bisect.bisect_right(index, doc["counter"])
        while position < len(index):
            number = index[position]
            path = self._claimable(number, leases)
            if path is not None and not self._unsettled(number, path, doc, dry_run):
                if not dry_run:
                    doc["counter"] = number
                return Claim(number, path, False)
            position += 1
            if not dry_run:
                doc["counter"] = number
                if len(doc["settling"]) >= SETTLING_HELD:
                    return None  # enough notes are settling: the ones above wait above the counter
        return None
