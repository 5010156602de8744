"""The one module that talks to tmux.

Every call goes to an explicit server (``-L`` socket name; tmux's ``default``
when ``DIAG_TMUX_SOCKET`` is unset), because inside a tmux pane libtmux would
otherwise drive the enclosing server. Sessions are addressed by object or by
``=name``, never by a prefix that ``continuous_diag_api_1`` shares with
``continuous_diag_api_10``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import libtmux
from libtmux.exc import LibTmuxException

from distill.core.errors import ConfigError

PLACEHOLDER = "sleep 2147483647"


class TmuxError(ConfigError):
    """tmux is missing or refused a command."""


class TmuxSessions:
    """The sessions of one job: ``<prefix>_<role>`` on one tmux server."""

    def __init__(self, socket: str | None, prefix: str) -> None:
        if shutil.which("tmux") is None:
            raise TmuxError("tmux is not installed (install it with your package manager, e.g. apt-get install tmux)")
        self.socket = socket or "default"
        self.prefix = prefix
        self.server = libtmux.Server(socket_name=self.socket)

    def name(self, role: str) -> str:
        return f"{self.prefix}_{role}"

    def _session(self, role: str) -> libtmux.Session | None:
        name = self.name(role)
        try:
            for session in self.server.sessions:
                if session.session_name == name:
                    return session
        except LibTmuxException:
            return None
        return None

    def exists(self, role: str) -> bool:
        return self._session(role) is not None

    def start(self, role: str, command: list[str], *, environment: dict[str, str], cwd: Path) -> None:
        """Create the session (or reuse it) and run ``command`` in it, keeping the pane when it exits.

        The session starts on a placeholder so that ``remain-on-exit`` is set
        before the real command can exit: a worker that fails at once leaves
        its error on screen.
        """
        session = self._session(role)
        try:
            if session is None:
                session = self._new_session(role, environment, cwd)
            else:
                for key, value in environment.items():
                    session.set_environment(key, value)
            window = session.active_window
            window.set_option("remain-on-exit", "on")
            pane = window.active_pane
            assert pane is not None
            self.server.cmd("respawn-pane", "-k", "-c", str(cwd), "-t", str(pane.pane_id), shlex.join(command))
        except LibTmuxException as exc:
            raise TmuxError(f"tmux refused to start session {self.name(role)}: {exc}") from None

    def _new_session(self, role: str, environment: dict[str, str], cwd: Path) -> libtmux.Session:
        """Create the session from an environment without DIAG_* variables.

        The first session starts the tmux server, which keeps the client's
        environment as its global one for its whole life: keys there would
        reach every later session.
        """
        command = ["tmux", "-L", self.socket, "new-session", "-d", "-s", self.name(role), "-x", "200", "-y", "50",
                   "-c", str(cwd)]
        for key, value in environment.items():
            command += ["-e", f"{key}={value}"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DIAG_") and k not in ("TMUX", "TMUX_PANE")}
        result = subprocess.run([*command, PLACEHOLDER], env=clean, capture_output=True, text=True, check=False)
        session = self._session(role)
        if result.returncode != 0 or session is None:
            raise LibTmuxException(result.stderr.strip() or "new-session failed")
        return session

    def pane_state(self, role: str) -> tuple[bool, int | None]:
        """(running, pane pid) of the session's pane; (False, None) when the session is gone."""
        session = self._session(role)
        if session is None:
            return False, None
        try:
            pane = session.active_window.active_pane
            assert pane is not None
            pane.refresh()
            dead = pane.pane_dead == "1"
            pid = int(pane.pane_pid) if pane.pane_pid and pane.pane_pid.isdigit() else None
        except (LibTmuxException, AssertionError):
            return False, None
        return not dead, pid

    def capture(self, role: str, lines: int = 50) -> list[str]:
        """The last ``lines`` lines of the pane, including a dead pane's last words."""
        session = self._session(role)
        if session is None:
            return []
        try:
            pane = session.active_window.active_pane
            assert pane is not None
            captured = pane.capture_pane(start="-", end="-") or []
        except (LibTmuxException, AssertionError):
            return []
        text = [line for line in captured if line.strip() and not line.startswith("Pane is dead")]
        return text[-lines:]

    def kill(self, role: str) -> bool:
        """Kill exactly this session (its processes get SIGHUP); False when it was not there."""
        session = self._session(role)
        if session is None:
            return False
        try:
            session.kill()
        except LibTmuxException:
            return False
        return True

    def owner_state_dir(self, role: str) -> str | None:
        """The ``DIAG_STATE_DIR`` the session was started with (its job), if it says."""
        session = self._session(role)
        if session is None:
            return None
        try:
            value = session.getenv("DIAG_STATE_DIR")
        except LibTmuxException:
            return None
        return value if isinstance(value, str) else None

    def foreign_sessions(self, state_dir: Path) -> list[str]:
        """Live sessions with this prefix that belong to the job of another state directory."""
        foreign = []
        for role in self.roles():
            owner = self.owner_state_dir(role)
            if owner and Path(owner) != state_dir and self.pane_state(role)[0]:
                foreign.append(f"{self.name(role)} (state directory {owner})")
        return foreign

    def roles(self) -> list[str]:
        """Roles of this job's sessions that exist now (``api_3``, ``supervisor``)."""
        pattern = re.compile(rf"^{re.escape(self.prefix)}_(api_\d+|supervisor)$")
        try:
            names = [s.session_name or "" for s in self.server.sessions]
        except LibTmuxException:
            return []
        return [m.group(1) for name in names if (m := pattern.match(name))]
