"""The supervisor's look at its state directory, every check interval: a file gone or spoiled is noticed.

What the supervisor holds in memory is written again (the job record, the stop script,
the job's settings file, the workers folder); the index and counter files are rebuilt
by the claims backend. The claims themselves cannot be rebuilt while workers hold
leases: their loss stops the job, with a status that says why. The stop flag is not
remade: deleting it is one of the two documented ways to stop a job.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from distill.core.errors import OutputWriteError, StateDirError
from distill.job.claims_backend import ClaimsBackend
from distill.job.job_env import env_file, write_job_env
from distill.job.state import JOB_FILE, WORKERS_DIR, StateDir

#: How a stop for a lost state file ends its reason: what the user does next.
RESUME_HINT = "the job stops (nothing is lost: start it again to resume)"


class StateWatch:
    """``check()`` repairs what can be repaired and returns the reason the job must stop, if any."""

    def __init__(self, state: StateDir, book: ClaimsBackend, job: dict[str, Any],
                 out: Callable[[str], None], *, check_interval: float = 5.0) -> None:
        self.state = state
        self.book = book
        self.job = job
        self.out = out
        self.check_interval = check_interval
        self._status_failing = False

    def write_status(self, status: dict[str, Any], *, final: bool) -> bool:
        """Write the status file; on a full disk say so once and go on (``False``). A ``final`` status that
        cannot be written removes the old one: a status saying "running" must not outlive the job."""
        try:
            self.state.write_status(status)
        except OutputWriteError as exc:
            if not self._status_failing:
                self.out(f"cannot write the status file: {exc}; retrying every {self.check_interval:g} s")
            self._status_failing = True
            if final:
                self.state.status_path.unlink(missing_ok=True)
            return False
        if self._status_failing:
            self.out("status file written again")
        self._status_failing = False
        return True

    def check(self) -> str | None:
        try:
            fatal = self._check()
        except (OutputWriteError, StateDirError) as exc:  # a full disk: the workers pause; this is said once there
            fatal = None
            self.book.notices.append(f"state directory check: {exc}")
        notices, self.book.notices[:] = list(self.book.notices), []
        for line in notices:
            self.out(line)
        return fatal

    def _check(self) -> str | None:
        root = self.state.root
        if not root.is_dir():
            self.state.ensure()
            self._rewrite()
            return f"state directory {root} was deleted while the job ran; {RESUME_HINT}"
        if not self.state.path(WORKERS_DIR).is_dir():
            self.state.ensure()
            self.out(f"workers folder in {root} was deleted; made it again")
        self._rewrite()
        problem = self.book.check()
        return f"{problem}; {RESUME_HINT}" if problem else None

    def _rewrite(self) -> None:
        job = self.state.running_job()
        if job is None or job.get("job_id") != self.job.get("job_id"):
            self.state.write_job(self.job)
            self.out(f"job record {self.state.path(JOB_FILE)} was missing or not this job's; wrote it again")
        if not self.state.stop_script.exists():
            self.state.write_stop_script(sys.executable)
            self.out(f"stop script {self.state.stop_script} was missing; wrote it again")
        if not env_file(self.state.root).exists():
            write_job_env(self.state.root, os.environ)
            self.out(f"job settings file {env_file(self.state.root)} was missing; wrote it again")
