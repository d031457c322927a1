"""Presence in Redis: who is online (a hub stream is open), and who plays where (a game server says so).

Two sources, both with TTLs so that a crashed hub or server stops claiming anybody:

- hub connections: `{p}pres:hub:{account}` is a ZSET of connection keys scored by their expiry (ms);
  the hub holding a connection refreshes it every third of the TTL;
- game servers: `{p}pres:game:{account}` holds `{"campaign", "server"}` while the account plays,
  refreshed by the server's heartbeat.

The status of an account is `in_campaign` (with the campaign) when a game server claims it, else
`online` when a hub connection is live, else `offline`. Changes are announced on the bus
(persistence/redis_bus.py) by whoever makes them, as `{"t": "presence", "account", "status", "campaign"}`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import redis.asyncio as aioredis

from persistence.redis_layout import RedisKeys

OFFLINE: Final = "offline"
ONLINE: Final = "online"
IN_CAMPAIGN: Final = "in_campaign"

# KEYS[1] the account's hub ZSET. ARGV: member, now ms, expiry ms, key TTL ms. Returns the live count before.
_CONNECT: Final = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local before = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return before
"""
# ARGV: member, now ms. Returns the live count after.
_DISCONNECT: Final = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
return redis.call('ZCARD', KEYS[1])
"""
# KEYS[1] the account's game key. ARGV: server. Deletes it only if this server still claims it.
_GAME_LEAVE: Final = """
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['server'] == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""


@dataclass(frozen=True, slots=True)
class Status:
    status: str
    campaign: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"status": self.status, "campaign": self.campaign}


class Presence:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._connect = redis.register_script(_CONNECT)
        self._disconnect = redis.register_script(_DISCONNECT)
        self._game_leave = redis.register_script(_GAME_LEAVE)

    # -- hub side ----------------------------------------------------------------------------------
    async def hub_connected(self, account: str, conn: str, ttl_s: float) -> bool:
        """Record a live stream; True when it is the account's first live one."""
        now = _ms()
        before = await self._connect(
            keys=[self.keys.presence_hub(account)], args=[conn, now, now + int(ttl_s * 1000), int(ttl_s * 2000)]
        )
        return int(before) == 0

    async def hub_disconnected(self, account: str, conn: str) -> bool:
        """Forget a stream; True when the account has no live stream left."""
        left = await self._disconnect(keys=[self.keys.presence_hub(account)], args=[conn, _ms()])
        return int(left) == 0

    async def hub_refresh(self, conns: Iterable[tuple[str, str]], ttl_s: float) -> None:
        """Extend every (account, connection) this hub holds, in one round trip."""
        expiry = _ms() + int(ttl_s * 1000)
        async with self.redis.pipeline(transaction=False) as p:
            for account, conn in conns:
                key = self.keys.presence_hub(account)
                p.zadd(key, {conn: expiry})
                p.pexpire(key, int(ttl_s * 2000))
            await p.execute()

    # -- game side ---------------------------------------------------------------------------------
    async def game_set(self, accounts: Iterable[str], campaign: str, server: str, ttl_s: float) -> None:
        """These accounts play `campaign` on `server` (a join, or the heartbeat's refresh)."""
        value = json.dumps({"campaign": campaign, "server": server}, separators=(",", ":"))
        px = max(1, int(ttl_s * 1000))
        async with self.redis.pipeline(transaction=False) as p:
            for account in accounts:
                p.set(self.keys.presence_game(account), value, px=px)
            await p.execute()

    async def game_left(self, accounts: Iterable[str], server: str) -> None:
        async with self.redis.pipeline(transaction=False) as p:
            for account in accounts:
                await self._game_leave(keys=[self.keys.presence_game(account)], args=[server], client=p)
            await p.execute()

    # -- reading -----------------------------------------------------------------------------------
    async def status(self, accounts: Sequence[str]) -> dict[str, Status]:
        if not accounts:
            return {}
        now = _ms()
        async with self.redis.pipeline(transaction=False) as p:
            for account in accounts:
                p.get(self.keys.presence_game(account))
                p.zcount(self.keys.presence_hub(account), now, "+inf")
            raw = await p.execute()
        out: dict[str, Status] = {}
        for i, account in enumerate(accounts):
            game, hubs = raw[2 * i], int(raw[2 * i + 1] or 0)
            campaign = _campaign_of(game)
            if campaign is not None:
                out[account] = Status(IN_CAMPAIGN, campaign)
            elif hubs > 0:
                out[account] = Status(ONLINE)
            else:
                out[account] = Status(OFFLINE)
        return out


def _campaign_of(raw: object) -> str | None:
    if not isinstance(raw, str):
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    campaign = value.get("campaign") if isinstance(value, dict) else None
    return campaign if isinstance(campaign, str) else None


def _ms() -> int:
    return int(time.time() * 1000)
