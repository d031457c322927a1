"""Rate limits in Redis, shared by every hub process: fixed windows and per-subject backoff.

- `FixedWindow`: at most `limit` events per `window_s` per subject (a counter whose TTL is the window,
  started by the first event). `peek` says whether the subject is over without counting; `hit`
  counts one event; `undo` takes one back. The login limit counts attempts per IP as they start (so a
  burst of concurrent guesses is counted before any is checked) and takes back the ones that succeed.
- `Backoff`: after `free` failures for a subject, each further failure locks it for
  base·2^(n−free) seconds (capped); a success clears it. `begin` lets one attempt at a time in (the
  next waits for its outcome), so concurrent guesses cannot all pass before the first failure is
  counted. The login uses it per account (keyed by the login name, whether or not an account has
  it, so it reveals nothing).

Every call raises when Redis is down; callers decide to fail closed (the login does, with a 503).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import redis.asyncio as aioredis

from persistence.redis_layout import RedisKeys

# KEYS[1] counter. ARGV: window ms. Returns {count, ttl ms}.
_HIT: Final = """
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
"""
# KEYS[1] counter. Decrements it, never below 0.
_UNDO: Final = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""
# KEYS[2] lock, KEYS[3] attempt in flight. ARGV: in-flight ms. Returns the lock's ms left, -1 when an
# attempt is in flight, 0 when this one may go (it is now in flight).
_BEGIN: Final = """
local lock = redis.call('PTTL', KEYS[2])
if lock > 0 then return lock end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then return 0 end
return -1
"""
# KEYS[1] failure counter, KEYS[2] lock. ARGV: window ms, free failures, base ms, cap ms. Returns lock ms.
_FAIL: Final = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local free = tonumber(ARGV[2])
if n <= free then return 0 end
local ms = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * (2 ^ (n - free - 1)))
redis.call('SET', KEYS[2], '1', 'PX', math.floor(ms))
return math.floor(ms)
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    count: int
    retry_after_s: float  # 0 when allowed


class FixedWindow:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, name: str, limit: int, window_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.name = name
        self.limit = limit
        self.window_ms = max(1, int(window_s * 1000))
        self._hit = redis.register_script(_HIT)
        self._undo = redis.register_script(_UNDO)

    async def peek(self, subject: str) -> Verdict:
        key = self.keys.rate(self.name, subject)
        async with self.redis.pipeline(transaction=False) as p:
            p.get(key)
            p.pttl(key)
            raw, ttl = await p.execute()
        n = int(raw or 0)
        if n >= self.limit:
            return Verdict(False, n, max(0.001, int(ttl) / 1000.0) if int(ttl) > 0 else self.window_ms / 1000.0)
        return Verdict(True, n, 0.0)

    async def hit(self, subject: str) -> Verdict:
        """Count one event; not allowed when this one went over the limit."""
        n, ttl = await self._hit(keys=[self.keys.rate(self.name, subject)], args=[self.window_ms])
        n, ttl = int(n), int(ttl)
        if n > self.limit:
            return Verdict(False, n, max(0.001, ttl / 1000.0))
        return Verdict(True, n, 0.0)

    async def undo(self, subject: str) -> None:
        """Take back one counted event (an attempt that turned out not to count)."""
        await self._undo(keys=[self.keys.rate(self.name, subject)])


class Backoff:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: RedisKeys,
        name: str,
        *,
        free: int = 3,
        base_s: float = 1.0,
        cap_s: float = 900.0,
        window_s: float = 3600.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.name = name
        self.free = free
        self.base_ms = max(1, int(base_s * 1000))
        self.cap_ms = max(1, int(cap_s * 1000))
        self.window_ms = max(1, int(window_s * 1000))
        self._fail = redis.register_script(_FAIL)
        self._begin = redis.register_script(_BEGIN)

    def _keys(self, subject: str) -> list[str]:
        return [self.keys.rate(self.name, subject), self.keys.rate(self.name + "-lock", subject),
                self.keys.rate(self.name + "-busy", subject)]  # fmt: skip

    async def begin(self, subject: str, max_s: float = 30.0) -> float:
        """Start an attempt: 0 when it may go (call `end` after), else the seconds to wait: the lock's
        (after too many failures), or a second when another attempt of the subject is in flight.
        `max_s` bounds how long a crashed attempt keeps the next one out."""
        ms = int(await self._begin(keys=self._keys(subject), args=[max(1, int(max_s * 1000))]))
        return 0.0 if ms == 0 else (1.0 if ms < 0 else ms / 1000.0)

    async def end(self, subject: str) -> None:
        await self.redis.delete(self._keys(subject)[2])

    async def failed(self, subject: str) -> float:
        """Count a failure; returns the lock it caused, in seconds (0: none yet)."""
        ms = await self._fail(keys=self._keys(subject)[:2], args=[self.window_ms, self.free, self.base_ms, self.cap_ms])
        return int(ms) / 1000.0

    async def clear(self, subject: str) -> None:
        await self.redis.delete(*self._keys(subject))
