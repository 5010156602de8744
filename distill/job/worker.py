"""The worker: one endpoint's loop of claim -> process -> commit -> release.

A worker runs in its own tmux session and prints a readable live log there.
It keeps a heartbeat file in the state directory (state, current report and
step, counts, tokens, last error) and writes its own exit record into it.

Signals: the first SIGTERM, SIGHUP or SIGINT asks for a graceful stop (finish
the current report, then exit). A second one, or any signal while the
stop-now flag exists, stops at once: the finished steps stay checkpointed and
the claim goes back to the pool.

When the endpoint gives up on a report, ``EndpointWatch`` decides: an outage
hands the report back with its checkpoints and the worker probes until the
endpoint is up again (``distill.job.endpoint_watch``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from distill.core.clock import utc_now
from distill.core.config import Settings
from distill.core.errors import (
    ClaimsUnavailable,
    ConfigError,
    DistillError,
    EndpointAuthError,
    EndpointUnavailable,
    InputDirMissing,
    OutputWriteError,
    StateDirError,
    StopRequested,
)
from distill.core.redact import mask_known
from distill.core.teacher_id import TEACHER_ID_KEY
from distill.core.words import counted
from distill.extraction.extractor import Extractor
from distill.extraction.identity import endpoint_teacher
from distill.extraction.pipeline import Outcome, StagedCommit, process_report
from distill.job.claims import Claim
from distill.job.claims_backend import claims_url, host_name, open_claims
from distill.job.committer import Committer
from distill.job.endpoint_watch import EndpointWatch
from distill.job.extractors import make_extractor
from distill.job.heartbeat import Heartbeat, WorkerStats
from distill.job.releases import IdleLines, Releases
from distill.job.state import StateDir, my_identity
from distill.results.atomic import write_atomic
from distill.results.store import OutputStore

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_DISABLED = 3
EXIT_CRASHED = 70
#: States a worker re-enters while it waits; their ``since`` is when it entered the first time.
STEADY_STATES = ("idle", "paused", "disabled", "down")
#: How an exit record begins when a signal, not the job, stopped the worker (its session was closed by hand).
SIGNALLED_REASON = "stopped by signal"

#: When set, each worker writes its claim timings there at exit (``<api>.<pid>.json``), for ``diag-distill bench``.
TIMINGS_ENV = "DIAG_BENCH_DIR"
#: When set, the worker runs under cProfile and writes its statistics there at exit (``<api>.<pid>.prof``).
PROFILE_ENV = "DIAG_PROFILE_DIR"


class Worker:
    """One endpoint's worker. ``run()`` returns the process exit code."""

    def __init__(self, api: str, settings: Settings, *, job_id: str, until_drained: bool = False,
                 follow_symlinks: bool = False,
                 out: TextIO = sys.stdout, sleep: Callable[[float], None] = time.sleep,
                 extractor_factory: Callable[..., Extractor] = make_extractor) -> None:
        self.api = api
        self.endpoint = settings.endpoint(api)
        self.settings = settings
        self.job_id = job_id
        self.until_drained = until_drained
        self.follow_symlinks = follow_symlinks
        self.out = out
        self.sleep = sleep
        self.state = StateDir(settings.state_dir)
        self.store = OutputStore(settings.output_dir, host=host_name() if claims_url() else "")
        self.book = open_claims(self.state, self.store, settings.input_dir, check_interval=settings.check_interval,
                                settle_s=settings.settle_s)
        self.identity = my_identity()
        self.extractor_factory = extractor_factory
        self.teacher_id = endpoint_teacher(self.endpoint).spelling
        self.stop_after_current = False
        self.stop_now = False
        self.signalled = ""
        self.started = utc_now()
        self.started_epoch = time.time()
        self.stats = self._previous_stats()
        self.status: dict[str, Any] = {"state": "idle", "since": time.time()}
        self.last_error = ""
        self._lock = threading.Lock()
        self.heartbeat = Heartbeat(self.state, api, self._beat, self.say)
        self.committer: Committer | None = None
        self._commit_error = ""  # set by the committer thread when finishing a commit failed
        self._timings_dir = os.environ.get(TIMINGS_ENV) or None
        self.claim_times: list[float] = []  # seconds per claim_next that handed out a report (benchmark only)
        self.cpu_at_first_claim: float | None = None  # process CPU seconds once start-up was over (benchmark only)
        self.system_at_first_claim: float | None = None  # of which in the kernel (benchmark only)
        self._claims_away = ""  # why the claims store cannot be reached, while it cannot
        self.releases = Releases(self.book, self.say)  # kept when the state directory refuses them (a full disk)
        self.idle = IdleLines(self.book, settings.settle_s, set_state=self.set_state, say=self.say, wait=self._wait)
        self.watch = EndpointWatch(self.endpoint, self.book, say=self.say, set_state=self.set_state,
                                   wait=self._wait, stop_wanted=self._stop_wanted)
        self.health = self.watch.health

    # --- heartbeat --------------------------------------------------------------------

    def _previous_stats(self) -> WorkerStats:
        old = self.state.read_heartbeat(self.api)
        if old and old.get("job_id") == self.job_id:
            return WorkerStats.from_dict(old.get("stats", {}))
        return WorkerStats()

    def set_state(self, state: str, **details: Any) -> None:
        with self._lock:
            # An idle worker looks again every check interval: its idle time runs from when it became idle.
            same = self.status.get("state") == state and state in STEADY_STATES
            since = self.status["since"] if same and "since" in self.status else time.time()
            self.status = {"state": state, "since": since, **details}
        self.heartbeat.soon()

    def _beat(self) -> dict[str, Any]:
        """The heartbeat renews this worker's leases (shared backends expire the leases of the dead)."""
        with contextlib.suppress(ClaimsUnavailable):
            self.book.renew()
        return self._record()

    def _record(self) -> dict[str, Any]:
        with self._lock:
            return {
                "api": self.api, "job_id": self.job_id, "pid": os.getpid(), "identity": self.identity,
                "endpoint": self.endpoint.describe(), "model": self.endpoint.model,
                "teacher": "local" if self.endpoint.is_local else "llm",
                TEACHER_ID_KEY: self.teacher_id,
                **self.status, **self.health.to_dict(), "last_error": self.last_error, "started": self.started,
                "started_epoch": self.started_epoch, "updated": time.time(), "stats": self.stats.to_dict(),
            }

    # --- console ----------------------------------------------------------------------

    def say(self, message: str) -> None:
        line = f"{datetime.now().strftime('%H:%M:%S')} [{self.api}] {message}\n"
        try:
            self.out.write(mask_known(line))
            self.out.flush()
        except (OSError, ValueError):
            pass  # the pane is gone (kill-session): keep working, the heartbeat still tells

    def on_event(self, event: str, details: dict[str, Any]) -> None:
        if event == "log":
            self.say(details["message"])
        elif event == "step":
            with self._lock:
                self.status.update(step=details["step"], step_since=time.time())
            self.heartbeat.soon()
        elif event == "repair":
            self.say(f"step {details.get('step')}: asking again after an unusable answer: {details.get('problem')}")
        elif event == "response_format_down":
            self.say(f"the endpoint refused response_format {details.get('from')}; "
                     f"asking with {details.get('to')} from now on")
        elif event == "note_limit":
            self.say(f"the request did not fit the endpoint's context window; notes go in parts of "
                     f"{details.get('note_chars')} characters from now on")
        elif event == "backing_off":
            until = float(details.get("until", time.time()))
            reason = details.get("reason", "")
            self.say(f"backing off {max(0.0, until - time.time()):.1f} s: {reason}")
            with self._lock:
                self.status.update(backing_off_until=until, backoff_reason=reason)
            self.heartbeat.soon()

    # --- signals ----------------------------------------------------------------------

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = signal.Signals(signum).name
        if self.stop_after_current or self.state.stop_now_requested():
            self.stop_now = True
            raise StopRequested(f"stopped now by signal {signal.Signals(signum).name}")
        self.stop_after_current = True

    def should_stop_now(self) -> bool:
        return self.stop_now

    def _stop_wanted(self) -> bool:
        return self.stop_after_current or self.stop_now or self.state.stop_requested()

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Claim and process reports until stopped, drained or disabled."""
        self.state.ensure()
        self.store.prepare()
        self.heartbeat.start()
        # Any stop, graceful too, ends a backoff or Retry-After wait: the report goes back with its checkpoints.
        extractor = self.extractor_factory(self.endpoint, events=self.on_event, should_stop=self._stop_wanted)
        self.teacher_id = extractor.info.teacher.spelling  # what its records will name
        self.say(f"started: {self.endpoint.describe()}, teacher {self.teacher_id}, output {self.settings.output_dir}")
        self.committer = Committer(self._committed, self._commit_failed)
        code, reason = EXIT_CRASHED, "crashed"
        try:
            code, reason = self._loop(extractor)
        except StopRequested:
            code, reason = EXIT_OK, "stopped now" if self.stop_now else "stop requested"
        except ConfigError as exc:
            self.last_error = str(exc)
            code, reason = EXIT_CONFIG, str(exc)
        finally:
            self.committer.close()
            with contextlib.suppress(DistillError):
                self.book.flush()
            extractor.close()
            self.watch.close()
            self.heartbeat.stop()
            self._write_timings()
            self.set_state("exited", exit_code=code, reason=reason)
            self.say(f"exited ({reason})")
        return code

    def _loop(self, extractor: Extractor) -> tuple[int, str]:
        profile_dir = os.environ.get(PROFILE_ENV)
        if not profile_dir:
            return self._claim_and_process(extractor)
        import cProfile

        profiler = cProfile.Profile(time.thread_time)  # CPU time of this thread: the figure that matters
        try:
            return profiler.runcall(self._claim_and_process, extractor)
        finally:
            profiler.dump_stats(str(Path(profile_dir) / f"{self.api}.{os.getpid()}.prof"))

    def _claim_and_process(self, extractor: Extractor) -> tuple[int, str]:
        while True:
            if self._stop_wanted():
                if self.signalled and not self.state.stop_requested():
                    return EXIT_OK, f"{SIGNALLED_REASON} {self.signalled}"
                return EXIT_OK, "stop requested"
            if self._commit_error:
                error, self._commit_error = self._commit_error, ""
                self.say(f"{error}; pausing until writes succeed")
                self._pause_until_writable(error)
                continue
            try:
                self.releases.send_kept()
                claim = self._next_claim()
                drained = claim is None and self.until_drained and self.book.drained()
            except ClaimsUnavailable as exc:  # the report in hand is finished; claim again once it is back
                self._wait_for_claims(str(exc))
                continue
            except OutputWriteError as exc:  # the state directory's disk is full: as with the output disk
                self.say(f"{exc}; pausing claims until the state directory is writable")
                self._pause_until_writable(str(exc), self.state.root)
                continue
            except (InputDirMissing, StateDirError) as exc:  # a folder gone, /tmp wiped, a malformed claims file
                self.last_error = str(exc)
                self.idle.wait(str(exc), self.settings.check_interval)
                continue
            if self._claims_away:
                self._claims_away = ""
                self.say("claims store reachable again; claiming resumes")
            if claim is None:
                if drained:
                    return EXIT_OK, "drained"
                self.idle.nothing_to_claim(self.settings.check_interval if not self.until_drained else 0.5)
                continue
            self.idle.said = ""
            result = self._process(claim, extractor)
            if result is not None:
                return result

    def _wait_for_claims(self, reason: str) -> None:
        if not self._claims_away:
            self.say(f"{reason}; pausing claims")
        self._claims_away = reason
        self.last_error = reason
        self.set_state("paused", reason=reason)
        self._wait(1.0)

    def _next_claim(self) -> Claim | None:
        asked = time.perf_counter()
        claim = self.book.claim_next(self.api, self.identity)
        if claim is not None and self._timings_dir:
            self.claim_times.append(time.perf_counter() - asked)
            if self.cpu_at_first_claim is None:
                self.cpu_at_first_claim, self.system_at_first_claim = time.process_time(), os.times().system
        return claim

    def _write_timings(self) -> None:
        if not self._timings_dir:
            return
        from distill.results.atomic import write_json

        path = Path(self._timings_dir) / f"{self.api}.{os.getpid()}.json"
        with contextlib.suppress(OutputWriteError, OSError):
            write_json(path, {"api": self.api, "claim_s": self.claim_times, "cpu_s": time.process_time(),
                              "cpu_at_first_claim_s": self.cpu_at_first_claim, "system_s": os.times().system,
                              "system_at_first_claim_s": self.system_at_first_claim}, durable=False)

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop_wanted():
            self.sleep(min(0.25, max(0.0, deadline - time.monotonic())))

    def _process(self, claim: Claim, extractor: Extractor) -> tuple[int, str] | None:
        self.set_state("working", report=claim.number, step="read", step_since=time.time())
        again = " (handed back)" if claim.handed_back else ""
        self.say(f"report {claim.number}: claimed {claim.path.name}{again}")
        handed_off = False

        def publish(pending: StagedCommit, outcome: Outcome) -> None:
            nonlocal handed_off
            assert self.committer is not None
            self.committer.submit(pending, outcome)
            handed_off = True  # from here the committer releases the claim

        finished = False
        write_error = ""
        try:
            outcome = process_report(claim.path, extractor=extractor, store=self.store, publish=publish,
                                     max_bytes=self.settings.max_report_bytes, events=self.on_event,
                                     follow_symlinks=self.follow_symlinks,
                                     on_unavailable=lambda exc: self.watch.judge(claim.number, exc))
            finished = True
        except EndpointUnavailable as exc:
            self.last_error = f"report {claim.number}: {exc}"
            self.say(f"report {claim.number}: {exc}; report handed back with its checkpoints")
            outcome = None
        except EndpointAuthError as exc:
            self.last_error = str(exc)
            self.say(f"report {claim.number}: endpoint disabled: {exc}; report handed back")
            self.set_state("disabled", reason=str(exc))
            return EXIT_DISABLED, f"disabled: {exc}"
        except OutputWriteError as exc:
            write_error = str(exc)
        except StopRequested:
            how = "stopped now" if self.stop_now else "stop requested while waiting on the endpoint"
            self.say(f"report {claim.number}: {how}; report handed back, finished steps kept")
            raise
        finally:
            if not handed_off:
                self.releases.release(claim.number, finished=finished)
        if write_error:
            # Handed back before the pause, so the report does not wait on this worker.
            self.last_error = write_error
            self.say(f"report {claim.number}: {write_error}; report handed back, pausing until writes succeed")
            self._pause_until_writable(write_error)
            return None
        if outcome is None:
            return None if self.health.up else self._wait_until_up()
        if any(call.status == "ok" for call in outcome.calls):
            self.health.succeeded()
        if outcome.status == "failed":
            self._count(outcome, 0)
            self.last_error = f"report {claim.number}: {outcome.error_class}: {outcome.message}"
            self.say(f"report {claim.number}: FAILED {outcome.error_class}: {outcome.message}")
        self.set_state("idle")
        return None

    def _count(self, outcome: Outcome, size: int) -> None:
        with self._lock:
            self.stats.add(outcome, size, self.endpoint.price)

    def _committed(self, pending: StagedCommit, outcome: Outcome) -> None:
        """On the committer thread: the report is done; release its claim and say so."""
        try:
            self.book.release(outcome.number, finished=True, defer=True)
        except DistillError as exc:  # the claim stays with this live worker; the next start recomputes it
            self.say(f"report {outcome.number}: saved, but its claim could not be released: {exc}")
        self._count(outcome, pending.size)
        self.say(f"report {outcome.number}: saved, {counted(outcome.findings, 'finding')}, {counted(outcome.units, 'unit')}, "
                 f"{len(outcome.calls)} call(s), {outcome.tokens} tokens, {outcome.duration_s:.2f} s")
        self.heartbeat.soon()

    def _commit_failed(self, pending: StagedCommit, outcome: Outcome, error: OutputWriteError) -> None:
        """On the committer thread: nothing was published; hand the report back and pause the worker."""
        self.releases.release(outcome.number, finished=False)
        self.last_error = f"report {outcome.number}: {error}; report handed back"
        self._commit_error = self.last_error

    def _pause_until_writable(self, reason: str, folder: Path | None = None) -> None:
        probe = (folder or self.settings.output_dir) / f".continuous_diag_write_probe.{self.api}"
        self.last_error = reason
        while not self._stop_wanted():
            self.set_state("paused", reason=reason)
            self._wait(self.settings.check_interval)
            try:
                write_atomic(probe, b"x" * 65536)
                probe.unlink(missing_ok=True)
                self.say("writes succeed again; resuming")
                return
            except OutputWriteError:
                continue

    def _wait_until_up(self) -> tuple[int, str] | None:
        """The endpoint is down: probe it until it is up (``None``: claim again) or the worker must exit."""
        ended = self.watch.wait_until_up(until_drained=self.until_drained)
        if ended is None:
            return None
        if ended.startswith("disabled"):
            self.last_error = ended
            return EXIT_DISABLED, ended
        return EXIT_OK, ended
