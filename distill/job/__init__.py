"""Running a job: claims and leases, the worker loop, heartbeats, the committer thread, the supervisor,
tmux sessions, the state directory's layout and the status file.

Imports ``distill.results``, ``distill.extraction`` and ``distill.core``.
"""
