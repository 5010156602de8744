"""Claims in Redis, so supervisors on several hosts work one job.

Keys (under ``diag:``):

- ``job``: hash of the job's range and folders, written once by the first host;
- ``counter``: the highest new number handed out;
- ``index``: sorted set of the pending numbers above the counter at the last scan;
- ``returned``: sorted set of numbers handed back (released unfinished, lease expired,
  or files that arrived below the counter);
- ``leased``: set of the numbers in flight, and ``lease:<N>``: the owner of ``N``,
  a key with a time to live that the owner's heartbeat renews;
- ``strikes:<N>``: set of the endpoints ``N`` failed on while they were otherwise up;
  those endpoints are not handed ``N`` again (looked for among the first
  ``STRUCK_SKIP`` numbers handed back).

Claim and release are Lua scripts, so each is atomic; both cost O(log n) in the
size of the folder plus one check per lease in flight. A host that dies stops
renewing: its leases expire and their reports are handed out first, to any host.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from distill.core.errors import ClaimsUnavailable, ConfigError, JobNotStarted
from distill.job.claims import Claim, report_path, scan_range
from distill.job.claims_backend import URL_SETTING, host_name, shown_url
from distill.results.store import OutputStore

PREFIX = "diag:"
LEASE_TTL_S = 30.0  # a dead host's reports are handed out again at most this much later
SCAN_CHUNK = 5000  # numbers per rescan script call: keeps each call short for the other claimers
STRUCK_SKIP = 64  # handed-back numbers a claim looks through for one that did not fail on the claimer

_CLAIM = """
local p = ARGV[1]
if redis.call('EXISTS', p .. 'job') == 0 then return {-1} end
for _, n in ipairs(redis.call('SMEMBERS', p .. 'leased')) do
  if redis.call('EXISTS', p .. 'lease:' .. n) == 0 then
    redis.call('SREM', p .. 'leased', n)
    redis.call('ZADD', p .. 'returned', n, n)
  end
end
local back = 1
local got = {}
for _, r in ipairs(redis.call('ZRANGE', p .. 'returned', 0, tonumber(ARGV[5]) - 1)) do
  if redis.call('SISMEMBER', p .. 'strikes:' .. r, ARGV[4]) == 0 then
    redis.call('ZREM', p .. 'returned', r)
    got = {r}
    break
  end
end
if #got == 0 then
  back = 0
  got = redis.call('ZPOPMIN', p .. 'index')
end
if #got == 0 then return {0} end
local n = got[1]
redis.call('SET', p .. 'lease:' .. n, ARGV[2], 'PX', ARGV[3])
redis.call('SADD', p .. 'leased', n)
if back == 0 and tonumber(n) > tonumber(redis.call('GET', p .. 'counter') or '-1') then
  redis.call('SET', p .. 'counter', n)
end
return {1, n, back}
"""

_RELEASE = """
local p, n, owner, finished = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local mine = redis.call('GET', p .. 'lease:' .. n) == owner
if mine then
  redis.call('DEL', p .. 'lease:' .. n)
  redis.call('SREM', p .. 'leased', n)
end
if finished == '1' then
  redis.call('ZREM', p .. 'returned', n)
  redis.call('DEL', p .. 'strikes:' .. n)
elseif mine then
  redis.call('ZADD', p .. 'returned', n, n)
end
return mine and 1 or 0
"""

# A lease lost while Redis was away is taken again when nobody else holds it: the owner is alive and working.
_RENEW = """
local p, ttl = ARGV[1], ARGV[2]
local kept = 0
for i = 3, #ARGV, 2 do
  local n, owner = ARGV[i], ARGV[i + 1]
  local now = redis.call('GET', p .. 'lease:' .. n)
  if now == owner then
    redis.call('PEXPIRE', p .. 'lease:' .. n, ttl)
    kept = kept + 1
  elseif not now then
    redis.call('SET', p .. 'lease:' .. n, owner, 'PX', ttl)
    redis.call('SADD', p .. 'leased', n)
    redis.call('ZREM', p .. 'returned', n)
    kept = kept + 1
  end
end
return kept
"""

_ADD_PENDING = """
local p = ARGV[1]
local counter = tonumber(redis.call('GET', p .. 'counter') or '-1')
for i = 2, #ARGV do
  local n = ARGV[i]
  if tonumber(n) > counter then
    redis.call('ZADD', p .. 'index', n, n)
  elseif redis.call('EXISTS', p .. 'lease:' .. n) == 0 then
    redis.call('ZADD', p .. 'returned', n, n)
  end
end
return 0
"""

_BEGIN = """
local p = ARGV[1]
if redis.call('EXISTS', p .. 'job') == 1 then return 0 end
redis.call('HSET', p .. 'job', 'job_id', ARGV[2], 'start', ARGV[3], 'end', ARGV[4],
           'input_dir', ARGV[5], 'output_dir', ARGV[6])
redis.call('SET', p .. 'counter', tonumber(ARGV[3]) - 1)
redis.call('DEL', p .. 'index', p .. 'returned')
return 1
"""

_SAME_JOB = ("start", "end", "input_dir", "output_dir")


class RedisClaimBook:
    """The claim state of one job in Redis. Every method is safe across processes and hosts."""

    def __init__(self, url: str, store: OutputStore, input_dir: Path, *, check_interval: float = 5.0,
                 lease_ttl: float = LEASE_TTL_S, clock: Callable[[], float] = time.time,
                 host: str | None = None, prefix: str = PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        self.store = store
        self.input_dir = input_dir
        self.check_interval = check_interval
        self.lease_ttl_ms = max(1, int(lease_ttl * 1000))
        self.clock = clock
        self.host = host or host_name()
        # Typed Any: redis-py annotates every reply as "value or Awaitable" for its asyncio twin.
        self.client: Any = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0,
                                                socket_connect_timeout=2.0)
        self._claim = self.client.register_script(_CLAIM)
        self._release = self.client.register_script(_RELEASE)
        self._renew = self.client.register_script(_RENEW)
        self._add_pending = self.client.register_script(_ADD_PENDING)
        self._begin = self.client.register_script(_BEGIN)
        self._held: dict[int, str] = {}  # number -> the lease value this process wrote
        self._unsent: list[tuple[int, bool]] = []  # releases Redis was away for, sent at the next call
        self._lock = threading.Lock()  # a worker claims on one thread and releases on another
        self._next_check = 0.0
        self.job: dict[str, str] = {}
        self.proposed_job_id = ""  # the id ``begin`` gives a job it creates (else a new one)

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise ClaimsUnavailable(f"claims store {shown_url(self.url)} is unreachable ({exc}); "
                                    f"claiming waits until it is back ({URL_SETTING})") from None
        except RedisError as exc:
            raise ClaimsUnavailable(f"claims store {shown_url(self.url)} refused a request: {exc} "
                                    f"({URL_SETTING})") from None

    def forget(self) -> int:
        """Delete every key of this job from Redis (the outputs stay); returns how many went."""
        with self._reachable():
            keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
            return int(self.client.delete(*keys)) if keys else 0

    def ping(self) -> None:
        """Raise ``ConfigError`` naming the setting unless Redis answers."""
        try:
            self.client.ping()
        except (RedisError, OSError) as exc:
            raise ConfigError(f"{URL_SETTING}: cannot reach Redis at {shown_url(self.url)}: {exc}") from None

    # --- the job's life ----------------------------------------------------------

    def begin(self, start: int, end: int | None) -> dict[str, Any]:
        """Create the job in Redis, or join it when it has the same range and folders; then scan the folder.

        A ``ConfigError`` (one line) refuses a host whose START, END or folders differ.
        """
        wanted = {"start": str(start), "end": "" if end is None else str(end),
                  "input_dir": str(self.input_dir), "output_dir": str(self.store.root)}
        with self._reachable():
            job_id = self.proposed_job_id or uuid.uuid4().hex[:12]
            self._begin(args=[self.prefix, job_id, wanted["start"], wanted["end"], wanted["input_dir"],
                              wanted["output_dir"]])
            self.job = dict(self.client.hgetall(self.prefix + "job"))
        differ = [f"{key} {self.job.get(key) or '-'} (this host: {wanted[key] or '-'})"
                  for key in _SAME_JOB if self.job.get(key, "") != wanted[key]]
        if differ:
            raise ConfigError(f"{URL_SETTING}: Redis at {shown_url(self.url)} holds job {self.job.get('job_id')} "
                              f"with {', '.join(differ)}; join it with the same START, --end and folders, "
                              f"or give this job its own Redis database")
        return self._rescan()

    def stored_job_id(self) -> str:
        """The id of the job Redis holds now, ``""`` before any host has started one."""
        with self._reachable():
            return str(self.client.hget(self.prefix + "job", "job_id") or "")

    @property
    def job_id(self) -> str:
        return self.job.get("job_id", "")

    def _rescan(self) -> dict[str, Any]:
        mtime = self._input_mtime()
        job = self.job or self._job()
        start, end = int(job["start"]), int(job["end"]) if job.get("end") else None
        scan = scan_range(self.input_dir, self.store, start, end)
        pending = scan.pending()
        with self._reachable():
            for at in range(0, len(pending), SCAN_CHUNK):
                self._add_pending(args=[self.prefix, *pending[at : at + SCAN_CHUNK]])
            figures = {"mtime_ns": mtime, "at": self.clock(), **scan.counts()}
            self.client.set(self.prefix + "scan", json.dumps(figures))
        self._next_check = time.monotonic() + self.check_interval
        return figures

    def _job(self) -> dict[str, str]:
        with self._reachable():
            job = dict(self.client.hgetall(self.prefix + "job"))
        if not job:
            raise JobNotStarted(f"no job has been started in Redis at {shown_url(self.url)} (run start first)")
        self.job = job
        return job

    def _input_mtime(self) -> int:
        from distill.job.claims import missing_input

        try:
            return os.stat(self.input_dir).st_mtime_ns
        except FileNotFoundError:
            raise missing_input(self.input_dir) from None

    def _folder_changed(self, *, force: bool) -> bool:
        if not force and time.monotonic() < self._next_check:
            return False
        self._next_check = time.monotonic() + self.check_interval
        with self._reachable():
            raw = self.client.get(self.prefix + "scan")
        seen = json.loads(raw).get("mtime_ns") if raw else None
        return seen != self._input_mtime()

    # --- claims ------------------------------------------------------------------------

    def claim_next(self, api: str, identity: str) -> Claim | None:
        """Hand the next report to ``api``'s worker, or ``None`` when nothing is claimable now."""
        with self._lock:
            self._send_unsent()
            rescanned = False
            while True:
                owner = json.dumps({"api": api, "host": self.host, "identity": identity, "since": self.clock()})
                with self._reachable():
                    got = self._claim(args=[self.prefix, owner, self.lease_ttl_ms, api, STRUCK_SKIP])
                if got[0] == -1:
                    raise JobNotStarted(f"no job has been started in Redis at {shown_url(self.url)} "
                                        f"(run start first)")
                if got[0] == 0:
                    if not rescanned and self._folder_changed(force=True):
                        self._rescan()
                        rescanned = True
                        continue
                    return None
                number, handed_back = int(got[1]), got[2] == 1
                path = self._claimable(number)
                if path is None:  # done, failed or gone since the scan: drop it and look further
                    with self._reachable():
                        self._release(args=[self.prefix, number, owner, "1"])
                    continue
                self._held[number] = owner
                if self._folder_changed(force=False):
                    self._rescan()
                return Claim(number, path, handed_back)

    def _claimable(self, number: int) -> Path | None:
        if self.store.is_done(number) or self.store.is_failed(number):
            return None
        return report_path(self.input_dir, number)

    def release(self, number: int, *, finished: bool, defer: bool = False) -> None:
        """Drop this process's lease; an unfinished report goes back ahead of new numbers.

        When Redis is away the release is kept and sent with the next call, so a
        worker finishes the report in hand and nothing is lost (``defer`` is accepted
        for the file backend's callers; a release here is one round trip).
        """
        with self._lock:
            self._unsent.append((number, finished))
            # Kept when Redis is away: a finished report is in the output folder, an unfinished one comes back
            # when the release is sent or, should this process die first, when its lease expires.
            with contextlib.suppress(ClaimsUnavailable):
                self._send_unsent()

    def strike(self, number: int, api: str) -> list[str]:
        """Note that ``number`` failed on ``api`` while ``api`` was otherwise up; every endpoint it failed on
        (on any host). ``api`` is not handed it again."""
        key = self.prefix + f"strikes:{number}"
        with self._reachable():
            pipe = self.client.pipeline(transaction=True)
            pipe.sadd(key, api)
            pipe.smembers(key)
            _added, members = pipe.execute()
        return sorted(members)

    def _send_unsent(self) -> None:
        while self._unsent:
            number, finished = self._unsent[0]
            owner = self._held.get(number, "")
            with self._reachable():
                self._release(args=[self.prefix, number, owner, "1" if finished else "0"])
            self._unsent.pop(0)
            self._held.pop(number, None)

    def flush(self) -> None:
        """Send the releases Redis was away for."""
        with self._lock:
            self._send_unsent()

    def renew(self) -> None:
        """Extend the leases this process holds (from the heartbeat, well within the lease's time to live)."""
        with self._lock:
            self._send_unsent()  # first: a lease released while Redis was away must not be taken again
            held = [item for number, owner in self._held.items() for item in (number, owner)]
        if held:
            with self._reachable():
                self._renew(args=[self.prefix, self.lease_ttl_ms, *held])

    def drained(self) -> bool:
        """True when nothing is claimable, handed back, or in flight, on any host."""
        with self._lock:
            self._send_unsent()
        with self._reachable():
            leased = [n for n in self.client.smembers(self.prefix + "leased")
                      if self.client.exists(self.prefix + f"lease:{n}")]
            waiting = self.client.zcard(self.prefix + "returned") + self.client.zcard(self.prefix + "index")
        if leased or waiting:
            return False
        if self._folder_changed(force=True):
            self._rescan()
            with self._reachable():
                return self.client.zcard(self.prefix + "returned") + self.client.zcard(self.prefix + "index") == 0
        return True

    def snapshot(self) -> dict[str, Any]:
        """Counter, leases (with their host) and scan figures, for the status; ``{}`` when Redis is away."""
        try:
            with self._reachable():
                numbers = sorted(self.client.smembers(self.prefix + "leased"), key=int)
                owners = self.client.mget([self.prefix + f"lease:{n}" for n in numbers]) if numbers else []
                counter, raw_scan = self.client.get(self.prefix + "counter"), self.client.get(self.prefix + "scan")
                job = dict(self.client.hgetall(self.prefix + "job"))
        except ClaimsUnavailable:
            return {}
        leases = {n: json.loads(owner) for n, owner in zip(numbers, owners, strict=True) if owner}
        doc: dict[str, Any] = {"backend": "redis", "job_id": job.get("job_id", ""), "leases": leases,
                               "scan": json.loads(raw_scan) if raw_scan else {}}
        if counter is not None:
            doc["counter"] = int(counter)
        return doc
