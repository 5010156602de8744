"""The job's DIAG_* settings, handed to its processes through a private file.

Values given to ``tmux new-session -e`` are on tmux's command line, visible to
every user in ``ps``, and stay in the session's environment; a tmux server
also keeps the environment it was started with, so a session could hand a
worker a key the user no longer has set. The job's processes therefore get
only key-free variables from tmux and read the job's DIAG_* settings from a
0600 file in the state directory, removed when the job ends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from distill.core.errors import StateDirError
from distill.job.state import ENV_FILE
from distill.results.atomic import refuse_symlink, write_atomic

#: Set to "1" on a process the supervisor started: its DIAG_* settings come from the file only.
HANDOFF_ENV = "DIAG_JOB_ENV"
#: Key-free variables that tmux may carry: where the job's files and sessions are.
KNOBS = ("DIAG_STATE_DIR", "DIAG_SESSION_PREFIX", "DIAG_TMUX_SOCKET", "DIAG_SUPERVISOR_SESSION", HANDOFF_ENV)


def env_file(state_dir: Path) -> Path:
    return state_dir / ENV_FILE


def job_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The DIAG_* variables that configure the job (keys included), without the isolation knobs."""
    return {k: v for k, v in environ.items() if k.startswith("DIAG_") and k not in KNOBS}


def write_job_env(state_dir: Path, environ: Mapping[str, str]) -> None:
    """Write the job's settings where only this user can read them."""
    path = env_file(state_dir)
    refuse_symlink(path)
    write_atomic(path, json.dumps(job_settings(environ), sort_keys=True).encode(), mode=0o600, durable=False,
                 mask_keys=False)  # the one file meant to hold the keys
    os.chmod(path, 0o600)


def remove_job_env(state_dir: Path) -> None:
    path = env_file(state_dir)
    refuse_symlink(path)
    path.unlink(missing_ok=True)


def adopt_job_env(environ: MutableMapping[str, str] | None = None) -> None:
    """In a process the supervisor started, replace every inherited DIAG_* setting by the job's file.

    Outside such a process (``HANDOFF_ENV`` unset) the environment is the user's own and stays.
    """
    env = os.environ if environ is None else environ
    if env.get(HANDOFF_ENV) != "1":
        return
    state_dir = env.get("DIAG_STATE_DIR")
    if not state_dir:
        raise StateDirError(f"{HANDOFF_ENV} is set but DIAG_STATE_DIR is not; start the job with diag-distill start")
    path = env_file(Path(state_dir))
    try:
        refuse_symlink(path)
        info = path.lstat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise StateDirError(f"job settings file {path} must belong to you and be private (0600); "
                                f"start the job again with diag-distill start")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StateDirError(f"job settings file {path} is missing (the job has ended); "
                            f"start the job again with diag-distill start") from None
    except (OSError, ValueError) as exc:
        raise StateDirError(f"job settings file {path} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise StateDirError(f"job settings file {path} is not a JSON object")
    for name in [k for k in env if k.startswith("DIAG_") and k not in KNOBS]:
        del env[name]
    env.update({str(k): str(v) for k, v in data.items() if str(k).startswith("DIAG_") and str(k) not in KNOBS})
