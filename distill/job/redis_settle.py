"""What the Redis claims backend adds for notes still being written and for files that are not reports."""

from __future__ import annotations

from typing import Any

#: A claimed note still being written: the lease goes, the note waits in ``settling`` until ARGV[4]
#: (the claim script moves it to ``returned`` then).
SETTLE_SCRIPT = """
local p, n, owner = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', p .. 'lease:' .. n) == owner then
  redis.call('DEL', p .. 'lease:' .. n)
  redis.call('SREM', p .. 'leased', n)
end
redis.call('ZADD', p .. 'settling', ARGV[4], n)
return 1
"""


def first_told(client: Any, prefix: str, unused: dict[str, str]) -> list[str]:
    """The lines for the names in ``unused`` that no process of the job (on any host) has told yet."""
    if not unused:
        return []
    pipe = client.pipeline(transaction=False)
    for name, reason in unused.items():
        pipe.hsetnx(prefix + "unused", name, reason)
    return [f"{name}: not used: {reason}"
            for (name, reason), new in zip(unused.items(), pipe.execute(), strict=True) if new]
