"""Which claims backend a job uses, and what every backend offers.

The file backend (``ClaimBook``, file locks in the state directory) is the
default and serves one host. ``DIAG_CLAIMS_URL=redis://host:port/db`` (or
``--claims-url``) puts the claims in Redis, so supervisors on several hosts
work one job.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from distill.core.errors import ConfigError
from distill.job.claims import Claim, ClaimBook
from distill.job.state import StateDir
from distill.results.store import OutputStore

if TYPE_CHECKING:  # redis-py is imported only by jobs that use it
    from distill.job.job_board import JobBoard

CLAIMS_URL_ENV = "DIAG_CLAIMS_URL"
LEASE_TTL_ENV = "DIAG_LEASE_TTL"  # seconds a Redis lease lives unrenewed: how soon a dead host's reports move
HOST_ENV = "DIAG_HOST"  # overrides the host name outputs and leases carry (two "hosts" on one machine)
URL_SETTING = f"{CLAIMS_URL_ENV} / --claims-url"
_SCHEMES = ("redis", "rediss", "unix")


class ClaimsBackend(Protocol):
    """The claim state of one job, safe across processes (and, for shared backends, hosts)."""

    def begin(self, start: int, end: int | None) -> dict[str, Any]:
        """Set up (or join) the job's range; returns the scan figures."""

    def claim_next(self, api: str, identity: str) -> Claim | None:
        """The next report for ``api``'s worker, or ``None`` when nothing is claimable now."""

    def release(self, number: int, *, finished: bool, defer: bool = False) -> None:
        """Drop the lease; an unfinished report is handed out again before new numbers."""

    def strike(self, number: int, api: str) -> list[str]:
        """Note that ``number`` failed on ``api`` while ``api`` was otherwise up; every endpoint it failed on.
        ``api`` is not handed that report again; a finished release forgets its strikes."""

    def flush(self) -> None:
        """Write releases kept back by ``release(..., defer=True)``."""

    def drained(self) -> bool:
        """True when nothing is claimable, handed back, or in flight."""

    def snapshot(self) -> dict[str, Any]:
        """Counter, leases and scan figures, for the status."""

    def renew(self) -> None:
        """Extend this process's leases (called from the worker's heartbeat)."""


def host_name() -> str:
    """The name this host's outputs and leases carry: ``DIAG_HOST``, else the machine's host name."""
    return os.environ.get(HOST_ENV, "").strip() or socket.gethostname()


def shown_url(url: str) -> str:
    """``url`` without its password, for messages."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    return url.replace(f":{parsed.password}@", ":***@", 1)


def claims_url(explicit: str | None = None) -> str | None:
    """The claims URL in effect (``explicit``, else ``DIAG_CLAIMS_URL``), validated; ``None`` for the file backend."""
    url = (explicit if explicit is not None else os.environ.get(CLAIMS_URL_ENV, "")).strip()
    if not url:
        return None
    parsed = urlparse(url)
    if parsed.scheme not in _SCHEMES:
        raise ConfigError(f"{URL_SETTING} must be a redis://host:port/db URL, got {url!r}")
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ConfigError(f"{URL_SETTING} names no host: {url!r} (expected redis://host:port/db)")
    try:
        parsed.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(f"{URL_SETTING} has a malformed port: {url!r}") from None
    path = parsed.path.lstrip("/")
    if parsed.scheme != "unix" and path and not path.isdigit():
        raise ConfigError(f"{URL_SETTING}: the database must be a number, got {path!r} in {url!r}")
    return url


def open_claims(state: StateDir, store: OutputStore, input_dir: Path, *, check_interval: float = 5.0,
                url: str | None = None) -> ClaimsBackend:
    """The backend ``url`` (else ``DIAG_CLAIMS_URL``) names; the file backend when neither is set."""
    chosen = claims_url(url)
    if chosen is None:
        return ClaimBook(state, store, input_dir, check_interval=check_interval)
    from distill.job.claims_redis import LEASE_TTL_S, RedisClaimBook  # only multi-host jobs need redis-py

    return RedisClaimBook(chosen, store, input_dir, check_interval=check_interval,
                          lease_ttl=lease_ttl(default=LEASE_TTL_S))


#: The heartbeat renews leases every few seconds; a shorter lease would expire under a live worker.
MIN_LEASE_TTL_S = 6.0


def lease_ttl(*, default: float) -> float:
    """``DIAG_LEASE_TTL`` in seconds, else ``default``; a ``ConfigError`` for anything but a number >= 6."""
    raw = os.environ.get(LEASE_TTL_ENV, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{LEASE_TTL_ENV} must be a number of seconds, got {raw!r}") from None
    if not value >= MIN_LEASE_TTL_S:
        raise ConfigError(f"{LEASE_TTL_ENV} must be at least {MIN_LEASE_TTL_S:g} s (leases are renewed every "
                          f"few seconds), got {raw!r}")
    return value


def open_board(url: str | None = None) -> JobBoard | None:
    """The shared status and stop board of a Redis job; ``None`` for the file backend (one host)."""
    chosen = claims_url(url)
    if chosen is None:
        return None
    from distill.job.job_board import JobBoard

    return JobBoard(chosen)


def require_claims_store(url: str | None = None) -> str | None:
    """Validate the claims URL and, for Redis, that it answers: a ``ConfigError`` naming the setting otherwise."""
    chosen = claims_url(url)
    if chosen is not None:
        from distill.job.claims_redis import RedisClaimBook

        RedisClaimBook(chosen, OutputStore(Path(".")), Path(".")).ping()
    return chosen
