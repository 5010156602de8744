"""Which input and output folders a command works on when its command line names none.

Commands that act on an earlier job (``start --retry-failed``, ``stop``,
``monitor``, ``stats``, ``export``) use the folders of the last job started on
this state directory, not the configuration's, so that a retry never runs on
another folder than the one whose failures it means. Each says in one line
which folders it uses (``JobFolders.line``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.core.config import DEFAULT_STATE_DIR
from distill.job.manifest import read_manifest
from distill.job.state import StateDir

OUTPUT_DIR_ENV = "DIAG_OUTPUT_DIR"  # set by the user, it names the output folder as --output-dir does


@dataclass(frozen=True)
class JobFolders:
    """The folders a command uses; ``None`` means the configuration's. ``source`` is empty when none was looked up."""

    input_dir: Path | None
    output_dir: Path | None
    job_id: str = ""
    source: str = ""

    def line(self) -> str | None:
        """``using the folders of job …``, or ``None`` when every folder came from the command line."""
        if not self.source:
            return None
        shown_input = str(self.input_dir) if self.input_dir is not None else "the configuration's INPUT_DIR"
        job = f"job {self.job_id}" if self.job_id else "the earlier job"
        return f"using the folders of {job} ({self.source}): input {shown_input}, output {self.output_dir}"


def state_dir_in_effect() -> Path:
    return Path(os.environ.get("DIAG_STATE_DIR") or DEFAULT_STATE_DIR)


def _path(record: dict[str, Any] | None, key: str) -> Path | None:
    value = record.get(key) if record else None
    return Path(value) if isinstance(value, str) and value else None


def job_folders(input_dir: Path | None, output_dir: Path | None, *, state_dir: Path | None = None) -> JobFolders:
    """Fill in the folders the command line left out from the job that used them.

    An output folder given without an input folder takes the input folder its
    manifest names. With no output folder given (nor ``DIAG_OUTPUT_DIR``), both
    come from the last job on the state directory, unless a different input
    folder was given; with no such job, the configuration's are used.
    """
    if output_dir is None and os.environ.get(OUTPUT_DIR_ENV):
        output_dir = Path(os.environ[OUTPUT_DIR_ENV])
    if input_dir is not None and output_dir is not None:
        return JobFolders(input_dir, output_dir)
    if output_dir is not None:
        manifest = read_manifest(output_dir)
        found = _path(manifest, "input_dir")
        if found is None or manifest is None:
            return JobFolders(None, output_dir)
        return JobFolders(found, output_dir, job_id=str(manifest.get("job_id", "")),
                          source=f"the manifest of {output_dir}")
    root = state_dir or state_dir_in_effect()
    job = StateDir(root).last_job()
    last_input, last_output = _path(job, "input_dir"), _path(job, "output_dir")
    if job is None or last_output is None:
        return JobFolders(input_dir, None)
    if input_dir is not None and input_dir.resolve() != last_input:
        return JobFolders(input_dir, None)
    return JobFolders(input_dir or last_input, last_output, job_id=str(job.get("job_id", "")),
                      source=f"the last job on state directory {root}")
