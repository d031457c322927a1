"""Seats of a campaign in Redis: reservations for join tokens in flight, and the waitlist.

A seat is taken by a player the game server reports in the campaign, or by a reservation: a join
token handed out and not used yet (it expires with the token). `claim` is one Lua call, so two hub
processes never give the last seat twice. When the campaign is full the account goes on the
waitlist, first come first served; a waiter who stops asking for longer than `stale_s` loses its
place, so the list does not fill with players who left.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

import redis.asyncio as aioredis

from persistence.redis_layout import RedisKeys

GRANTED: Final = 0
WAITLIST_FULL: Final = -1

# KEYS: reservations, waitlist, waitseen. ARGV: account, max players, now ms, reservation expiry ms,
# stale ms, waitlist cap, live accounts... Returns 0 (seat granted), -1 (waitlist full) or the position.
_CLAIM: Final = """
local acct = ARGV[1]
local max = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local stale = tonumber(ARGV[5])
local cap = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local seen = redis.call('HGETALL', KEYS[3])
for i = 1, #seen, 2 do
  if tonumber(seen[i + 1]) < now - stale then
    redis.call('HDEL', KEYS[3], seen[i])
    redis.call('ZREM', KEYS[2], seen[i])
  end
end
local seats = {}
local count = 0
for i = 7, #ARGV do
  if not seats[ARGV[i]] then seats[ARGV[i]] = true; count = count + 1 end
end
for _, a in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if not seats[a] then seats[a] = true; count = count + 1 end
end
local function grant()
  redis.call('ZADD', KEYS[1], ARGV[4], acct)
  redis.call('PEXPIRE', KEYS[1], 3600000)
  redis.call('ZREM', KEYS[2], acct)
  redis.call('HDEL', KEYS[3], acct)
  return 0
end
if seats[acct] then return grant() end
local free = max - count
local rank = redis.call('ZRANK', KEYS[2], acct)
if free > 0 then
  if (rank and rank < free) or ((not rank) and redis.call('ZCARD', KEYS[2]) < free) then return grant() end
end
if not rank then
  if redis.call('ZCARD', KEYS[2]) >= cap then return -1 end
  redis.call('ZADD', KEYS[2], now, acct)
  rank = redis.call('ZRANK', KEYS[2], acct)
end
redis.call('HSET', KEYS[3], acct, now)
redis.call('PEXPIRE', KEYS[2], 86400000)
redis.call('PEXPIRE', KEYS[3], 86400000)
return rank + 1
"""


class Seats:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, *, stale_s: float = 120.0, cap: int = 1000) -> None:
        self.redis = redis
        self.keys = keys
        self.stale_ms = int(stale_s * 1000)
        self.cap = cap
        self._claim = redis.register_script(_CLAIM)

    def _keys(self, campaign: str) -> list[str]:
        k = self.keys
        return [k.reservations(campaign), k.waitlist(campaign), k.waitseen(campaign)]

    async def claim(self, campaign: str, account: str, max_players: int, playing: Sequence[str], hold_s: float) -> int:
        """GRANTED (a seat reserved for `hold_s`), WAITLIST_FULL, or the account's waitlist position."""
        now = int(time.time() * 1000)
        args: list[str | int] = [account, max_players, now, now + int(hold_s * 1000), self.stale_ms, self.cap]
        return int(await self._claim(keys=self._keys(campaign), args=[*args, *playing]))

    async def leave(self, campaign: str, account: str) -> None:
        k = self._keys(campaign)
        async with self.redis.pipeline(transaction=False) as p:
            p.zrem(k[1], account)
            p.hdel(k[2], account)
            await p.execute()

    async def waiting(self, campaign: str, n: int) -> list[str]:
        """The first `n` accounts on the waitlist."""
        return [str(a) for a in await self.redis.zrange(self.keys.waitlist(campaign), 0, max(0, n - 1))]
