"""The supervisor: runs one tmux session per endpoint, watches them, writes the status file.

It holds the job lock of its state directory for its whole life, so a second
job on the same directory is refused. Workers claim reports themselves; the
supervisor only starts them, respawns a worker that died (growing, capped,
jittered delay; an endpoint whose worker keeps failing fast is marked
``failed``), and carries a stop request through to the end.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from distill.core.clock import utc_now
from distill.core.config import Settings, project_root
from distill.core.errors import ClaimsUnavailable, ConfigError, DistillError, InputDirMissing, StateDirError
from distill.job.claims import require_input_dir, scan_range
from distill.job.claims_backend import host_name, open_board, open_claims
from distill.job.job_env import HANDOFF_ENV, remove_job_env, write_job_env
from distill.job.manifest import OutputFolderClaim, follow_shared_id, hold_for_job
from distill.job.state import (
    SECOND_JOB_HINT,
    StateDir,
    identity_alive,
    my_identity,
    worker_pid,
)
from distill.job.state_watch import StateWatch
from distill.job.status import Throughput, build_status
from distill.job.survey import ChangedNotes
from distill.job.tmux import TmuxSessions
from distill.job.worker import EXIT_CONFIG, EXIT_DISABLED, EXIT_OK, SIGNALLED_REASON
from distill.job.worker_view import WorkerView
from distill.results.provenance import release_for_redo
from distill.results.store import OutputStore

TICK_S = 1.0
STARTUP_GRACE_S = 30.0
FAST_FAILURE_S = 30.0
MAX_FAST_FAILURES = 5
RESPAWN_BASE_S = 1.0
RESPAWN_CAP_S = 60.0
STOP_NOW_GRACE_S = 10.0

PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "PYTHONPATH", "VIRTUAL_ENV", "USER",
              "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
              "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "TMPDIR")


@dataclass(frozen=True)
class JobSpec:
    """What the user asked for."""

    start: int
    end: int | None = None
    apis: tuple[str, ...] = ()
    until_drained: bool = False
    retry_failed: bool = False
    max_cost: float | None = None  # stop claiming once the job's calls cost this much
    follow_symlinks: bool = False
    redo: tuple[str, ...] = ()  # teachers (``local`` or a model name) whose done reports run again
    redo_changed: bool = False  # done reports whose note changed since run again


def worker_environment(settings: Settings) -> dict[str, str]:
    """The key-free environment each process of the job gets from tmux; its DIAG_* settings come from the job file."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
    env[HANDOFF_ENV] = "1"
    env["DIAG_STATE_DIR"] = str(settings.state_dir)
    env["DIAG_SESSION_PREFIX"] = settings.session_prefix
    if settings.tmux_socket:
        env["DIAG_TMUX_SOCKET"] = settings.tmux_socket
    env["PYTHONUNBUFFERED"] = "1"
    return env


def refuse_foreign_sessions(sessions: TmuxSessions, settings: Settings) -> None:
    """Two jobs that share a session prefix on one tmux server would close each other's sessions."""
    foreign = sessions.foreign_sessions(settings.state_dir)
    if foreign:
        shown = ", ".join(foreign[:2]) + (f" and {len(foreign) - 2} more" if len(foreign) > 2 else "")
        raise ConfigError(f"{len(foreign)} tmux session(s) with the prefix {settings.session_prefix!r} belong to "
                          f"another job ({shown}); give this job its own DIAG_SESSION_PREFIX (and, for a second "
                          f"job, its own DIAG_STATE_DIR and output folder: {SECOND_JOB_HINT})")


class Supervisor:
    """Runs one job to its end. ``run()`` returns the process exit code."""

    def __init__(self, settings: Settings, spec: JobSpec, *, out: Callable[[str], None] = print,
                 sessions: TmuxSessions | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None) -> None:
        unknown = [api for api in spec.apis if api not in settings.endpoints and api not in settings.endpoint_problems]
        if unknown:
            raise ConfigError(f"--apis: unknown endpoint(s) {', '.join(unknown)} (known: {', '.join(settings.endpoints)})")
        self.settings = settings
        self.spec = spec
        self.apis = list(spec.apis or [*settings.endpoints, *settings.endpoint_problems])
        self.out = out
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.state = StateDir(settings.state_dir)
        self.store = OutputStore(settings.output_dir)
        self.book = open_claims(self.state, self.store, settings.input_dir, check_interval=settings.check_interval,
                                settle_s=settings.settle_s)
        self.board = open_board()  # shared by the hosts of a Redis job: their statuses and the stop request
        self.folder = OutputFolderClaim(settings.output_dir)
        self.sessions = sessions or TmuxSessions(settings.tmux_socket, settings.session_prefix)
        self.views = {api: WorkerView() for api in self.apis}
        for api, problem in settings.endpoint_problems.items():
            if api in self.views:  # never started: its row says why
                self.views[api] = WorkerView(state="failed", reason=problem, finished=True)
        self.throughput = Throughput()
        self.signals = 0
        self.stop_reason = ""
        self.job: dict[str, Any] = {}
        self.begin_scan: dict[str, Any] = {}
        self.begin_outputs: dict[str, int] = {}
        self.watch = StateWatch(self.state, self.book, self.job, self.out, check_interval=settings.check_interval)
        self.changed: ChangedNotes | None = None  # set once the job's range is known

    # --- set-up -------------------------------------------------------------------------

    def prepare(self) -> None:
        """Everything before the workers start; raises before touching anything when refused."""
        self.state.ensure()
        problem = self.state.untrusted()
        if problem is not None:
            raise StateDirError(f"DIAG_STATE_DIR: {problem}")
        self._lock = self.state.acquire_job_lock()
        refuse_foreign_sessions(self.sessions, self.settings)
        require_input_dir(self.settings.input_dir)
        job_id = uuid.uuid4().hex[:12]
        hold_for_job(self.folder, self.book, job_id=job_id, settings=self.settings, apis=self.apis,
                     start=self.spec.start, end=self.spec.end)
        write_job_env(self.settings.state_dir, os.environ)
        self.store.prepare(job_start=True)
        if self.spec.retry_failed:
            retried = self.store.release_failed()
            self.out(f"retrying {len(retried)} failed report(s)")
        if self.spec.redo or self.spec.redo_changed:
            top = self.spec.end if self.spec.end is not None else sys.maxsize
            in_range = [n for n in self.store.done_numbers() if self.spec.start <= n <= top]
            redone = release_for_redo(self.store, self.settings.input_dir, in_range, teachers=self.spec.redo,
                                      changed=self.spec.redo_changed)
            for line in redone.lines(self.store.root) or ["nothing to redo: no done report matches --redo"]:
                self.out(line)
        self.job = {
            "job_id": job_id, "pid": os.getpid(), "identity": my_identity(),
            "started_at": utc_now(), "start": self.spec.start, "end": self.spec.end, "apis": self.apis,
            "until_drained": self.spec.until_drained, "input_dir": str(self.settings.input_dir),
            "output_dir": str(self.settings.output_dir), "state_dir": str(self.settings.state_dir),
            "tmux_socket": self.sessions.socket, "session_prefix": self.settings.session_prefix,
            "check_interval": self.settings.check_interval, "max_cost": self.spec.max_cost,
        }
        self.state.clear_stop()
        self.state.arm_stop_flag(str(self.job["job_id"]))  # before the job record: no worker sees a missing flag
        self.state.write_job(self.job)
        self.state.write_last_job(self.job)
        self.state.remove_stale_temporaries()
        if self.board is not None:
            self.board.clear_stop()
        self.state.write_stop_script(sys.executable)
        self.state.clear_heartbeats()
        self.begin_scan = self.book.begin(self.spec.start, self.spec.end)
        follow_shared_id(self.folder, self.book)
        self.watch.job = self.job
        self.watch.check()  # says what the first scan found (files not used, a leftover claims file replaced)
        self.begin_outputs = self.store.counts()
        self.changed = ChangedNotes(self.store, self.settings.input_dir, self.spec.start, self.spec.end)
        self._retire_stale_sessions()

    def _retire_stale_sessions(self) -> None:
        """Sessions left by a job whose supervisor died: their workers get SIGHUP and finish gracefully."""
        for role in self.sessions.roles():
            if role.startswith("api_"):
                self.out(f"closing session {self.sessions.name(role)} left by an earlier job")
                self.sessions.kill(role)

    def worker_command(self, api: str) -> list[str]:
        command = [sys.executable, "-m", "distill", "worker", "--api", api, "--job-id", self.job["job_id"],
                   "--input-dir", str(self.settings.input_dir), "--output-dir", str(self.settings.output_dir)]
        if self.spec.until_drained:
            command.append("--until-drained")
        if self.spec.follow_symlinks:
            command.append("--follow-symlinks")
        return command

    def _spawn(self, api: str) -> None:
        view = self.views[api]
        view.state, view.started_at, view.respawn_at = "starting", self.clock(), None
        self.sessions.start(api, self.worker_command(api), environment=worker_environment(self.settings),
                            cwd=project_root())

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.prepare()
        except BaseException:
            self.folder.release()
            raise
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            for api in self.apis:
                if not self.views[api].finished:
                    self._spawn(api)
            started = [api for api in self.apis if not self.views[api].finished]
            self.out(f"started {len(started)} worker session(s): "
                     f"{', '.join(self.sessions.name(api) for api in started[:2])} ...")
            for api, view in self.views.items():
                if view.state == "failed":
                    self.out(f"{api}: not started: {view.reason}")
            self._watch()
        finally:
            self._finish()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        self.state.request_stop(now=self.signals > 1)

    def _watch(self) -> None:
        next_status = 0.0
        now_sent: float | None = None
        while True:
            now = self.clock()
            beats = self.state.read_heartbeats()
            for api in self.apis:
                self._check_worker(api, beats.get(api), now)
            self._share_stop()
            with contextlib.suppress(DistillError, OSError):  # a full disk must not end the job here
                self.folder.renew()
            self._check_budget(beats)
            stopping = self.state.stop_requested()
            if self.state.stop_now_requested() and now_sent is None:
                now_sent = now
                self._signal_workers(beats, signal.SIGTERM)
            if now >= next_status:
                self._check_state()
                stopping = self.state.stop_requested()
                self._write_status("stopping" if stopping else "running", beats, now)
                next_status = now + self.settings.check_interval
            if all(v.finished for v in self.views.values()):
                return
            if now_sent is not None and now - now_sent > STOP_NOW_GRACE_S:
                self._signal_workers(self.state.read_heartbeats(), signal.SIGKILL)
                return
            self.sleep(TICK_S)

    def _share_stop(self) -> None:
        """A stop asked on any host of a shared job reaches this one, and one asked here reaches the others."""
        if self.board is None:
            return
        from distill.job.job_board import NOW, share_stop

        with contextlib.suppress(ClaimsUnavailable):  # Redis away: this host's own stop still works
            add = share_stop(self.board, local_stop=self.state.stop_requested(),
                             local_now=self.state.stop_now_requested())
            if add:
                self.state.request_stop(now=add == NOW)

    def _check_state(self) -> None:
        """A state file deleted or spoiled: remade when it can be, else a graceful stop that says why."""
        fatal = self.watch.check()
        if fatal and not self.stop_reason:
            self.stop_reason = fatal
            self.out(fatal)
            self.state.request_stop()

    def _check_budget(self, beats: dict[str, dict[str, Any]]) -> None:
        """A graceful stop once the workers' spend reaches ``--max-cost``: they finish their current report."""
        budget = self.spec.max_cost
        if budget is None or self.stop_reason:
            return
        spent = sum(float((b.get("stats") or {}).get("cost") or 0.0) for b in beats.values())
        if spent >= budget:
            self.stop_reason = f"budget reached: spent {spent:.4f} of --max-cost {budget:g}"
            self.out(f"{self.stop_reason}; workers finish their current report, then exit")
            self.state.request_stop()

    def _check_worker(self, api: str, beat: dict[str, Any] | None, now: float) -> None:
        view = self.views[api]
        if view.finished:
            return
        if view.respawn_at is not None:
            if now >= view.respawn_at and not self.state.stop_requested():
                self._spawn(api)
            elif self.state.stop_requested():
                view.state, view.finished = "stopped", True
            return
        fresh = (beat is not None and beat.get("job_id") == self.job["job_id"]
                 and float(beat.get("started_epoch", 0)) >= view.started_at - 1)
        if beat is not None and fresh:
            if beat.get("state") == "exited":
                self._on_exit(api, int(beat.get("exit_code", 1)), str(beat.get("reason", "")), now)
            elif identity_alive(beat.get("identity")):
                view.state = "running"
            else:
                self._on_exit(api, -1, "killed without writing an exit record", now)
            return
        # No heartbeat from this run of the worker yet: ask tmux whether it is still starting.
        running, _pid = self.sessions.pane_state(api)
        if not running:
            last = " | ".join(self.sessions.capture(api, 3))
            self._on_exit(api, -1, f"exited at start{': ' + last if last else ''}", now)
        elif now - view.started_at > STARTUP_GRACE_S:
            view.reason = f"no heartbeat after {STARTUP_GRACE_S:.0f} s"

    def _on_exit(self, api: str, code: int, reason: str, now: float) -> None:
        view = self.views[api]
        if code == EXIT_OK and reason.startswith(SIGNALLED_REASON) and not self.state.stop_requested():
            # Someone closed the session by hand (kill-session sends SIGHUP): the job still wants this endpoint.
            view.state, view.restarts, view.respawn_at = "respawning", view.restarts + 1, now
            view.reason = f"session closed by hand ({reason.removeprefix(SIGNALLED_REASON).strip()}); restarted"
            self.out(f"{api}: its session was closed by hand; restarting it")
            return
        if code == EXIT_OK:
            view.state, view.reason, view.finished = "exited", reason, True
            return
        if code == EXIT_DISABLED:
            view.state, view.reason, view.finished = "disabled", reason, True
            self.out(f"{api}: disabled: {reason}")
            return
        if code == EXIT_CONFIG:
            view.state, view.reason, view.finished = "failed", reason, True
            self.out(f"{api}: failed: {reason}")
            return
        lived = now - view.started_at
        view.fast_failures = view.fast_failures + 1 if lived < FAST_FAILURE_S else 0
        if view.fast_failures >= MAX_FAST_FAILURES:
            view.state, view.finished = "failed", True
            view.reason = f"worker failed {view.fast_failures} times in a row within {FAST_FAILURE_S:.0f} s: {reason}"
            self.out(f"{api}: {view.reason}")
            return
        delay = min(RESPAWN_CAP_S, RESPAWN_BASE_S * 2 ** view.fast_failures) * (0.5 + self.rng.random() / 2)
        view.state, view.reason, view.restarts = "respawning", reason, view.restarts + 1
        view.respawn_at = now + delay
        self.out(f"{api}: worker exited ({reason}); restarting in {delay:.1f} s")

    def _signal_workers(self, beats: dict[str, dict[str, Any]], sig: signal.Signals) -> None:
        for beat in beats.values():
            pid = worker_pid(beat, str(self.job.get("job_id", "")))
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    def _write_status(self, state: str, beats: dict[str, dict[str, Any]], now: float) -> None:
        claims = self.book.snapshot()
        # A done report's lease may linger until its worker's next claim (deferred release): not in flight.
        claims["leases"] = {n: lease for n, lease in claims.get("leases", {}).items()
                            if not self.store.is_done(int(n))}
        status = build_status(job=self.job, state=state, claims=claims, begin_scan=self.begin_scan,
                              begin_outputs=self.begin_outputs, beats=beats,
                              views={api: v.as_dict() for api, v in self.views.items()},
                              throughput=self.throughput, now=now)
        if self.stop_reason:
            status["stop_reason"] = self.stop_reason
        if self.changed is not None:
            self.changed.add_to(status)
        if state == "stopped":
            self._recount(status)
        if not self.watch.write_status(status, final=state == "stopped"):
            return
        if self.board is not None:
            with contextlib.suppress(ClaimsUnavailable):
                self.board.publish(host_name(), status)

    def _recount(self, status: dict[str, Any]) -> None:
        """Final counts from the outputs themselves (one listing each, once per job).

        Heartbeats miss a report committed by a worker killed before its next
        beat; the last status of a job must still add up.
        """
        try:
            scan = scan_range(self.settings.input_dir, self.store, self.spec.start, self.spec.end).counts()
        except InputDirMissing:
            return
        counts = status["counts"]
        done_job = max(0, scan["done"] - int(self.begin_scan.get("done", 0)))
        failed_job = max(0, scan["failed"] - int(self.begin_scan.get("failed", 0)))
        counts.update(**scan, in_flight=0, done_this_job=done_job, failed_this_job=failed_job)
        status["total_processed"] = done_job + failed_job

    # --- the end ------------------------------------------------------------------------

    def _finish(self) -> None:
        beats = self.state.read_heartbeats()
        if self.job:
            self._write_status("stopped", beats, self.clock())
        for api in self.apis:
            self.sessions.kill(api)
        self.state.clear_stop()
        self.state.drop_job_files()  # claims are recomputed from the outputs at the next start
        self.store.clear_spares()
        self.state.clear_heartbeats()
        remove_job_env(self.settings.state_dir)
        self.state.remove_stale_temporaries()  # writes cut short by a worker killed during the job
        with contextlib.suppress(DistillError, OSError):
            self.folder.release()
        self.out("job ended")
