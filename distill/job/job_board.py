"""What the hosts of a shared job tell each other through Redis: each host's status, and the stop request.

Keys (under the claims prefix, ``diag:``):

- ``hosts``: hash host -> that host's latest status document (its endpoints' rows and heartbeats);
- ``stop``: ``graceful`` or ``now`` once any host was asked to stop; every supervisor copies it
  into its own state directory, so its workers stop as they would on one host.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.exceptions import RedisError

from distill.core.errors import ClaimsUnavailable
from distill.job.claims_backend import URL_SETTING, shown_url
from distill.job.claims_redis import PREFIX

GRACEFUL, NOW = "graceful", "now"
#: A host whose status is older than this is shown as silent (its supervisor is dead or cut off).
SILENT_AFTER_S = 60.0


class JobBoard:
    """Each host's status and the job's stop request, shared by every host of one job."""

    def __init__(self, url: str, *, prefix: str = PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        # Typed Any: redis-py annotates every reply as "value or Awaitable" for its asyncio twin.
        self.client: Any = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0,
                                                socket_connect_timeout=2.0)

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise ClaimsUnavailable(f"claims store {shown_url(self.url)} is unreachable ({exc}) "
                                    f"({URL_SETTING})") from None

    def publish(self, host: str, status: dict[str, Any]) -> None:
        """Put this host's status where every host's monitor reads it."""
        with self._reachable():
            self.client.hset(self.prefix + "hosts", host, json.dumps({**status, "host": host}))

    def hosts(self) -> dict[str, dict[str, Any]]:
        """host -> its latest status, each marked ``silent`` when it is older than ``SILENT_AFTER_S``."""
        with self._reachable():
            raw = self.client.hgetall(self.prefix + "hosts")
        now = time.time()
        board: dict[str, dict[str, Any]] = {}
        for host, text in sorted(raw.items()):
            try:
                status = json.loads(text)
            except ValueError:
                continue  # a half-written entry from another version: the next publish replaces it
            age = now - float(status.get("last_update_epoch") or 0.0)
            board[host] = {**status, "silent": status.get("state") != "stopped" and age > SILENT_AFTER_S}
        return board

    def request_stop(self, *, now: bool = False) -> None:
        """Ask every host to stop (``now``: checkpoint and exit within seconds); a stop now is never weakened."""
        with self._reachable():
            if now:
                self.client.set(self.prefix + "stop", NOW)
            else:
                self.client.set(self.prefix + "stop", GRACEFUL, nx=True)

    def stop_request(self) -> str:
        """``""``, ``"graceful"`` or ``"now"``."""
        with self._reachable():
            return str(self.client.get(self.prefix + "stop") or "")

    def clear_stop(self) -> None:
        """A host starting the job again means run: the old stop request goes."""
        with self._reachable():
            self.client.delete(self.prefix + "stop")


def share_stop(board: JobBoard, *, local_stop: bool, local_now: bool) -> str:
    """Bring this host's stop flags and the job's together; returns what this host must add locally.

    A stop asked on this host (stop script, ``stop``, Ctrl-C) goes to the board; one asked on
    another host comes back as ``"graceful"`` or ``"now"`` for the caller to write locally.
    """
    remote = board.stop_request()
    if local_now and remote != NOW:
        board.request_stop(now=True)
    elif local_stop and not remote:
        board.request_stop(now=False)
    if remote == NOW and not local_now:
        return NOW
    if remote and not local_stop:
        return GRACEFUL
    return ""
