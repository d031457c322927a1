"""What one hub process holds: its settings, stores, Redis services and background parts.

`Hub` is built by hub/app.py and reached by the route handlers through `request.app[HUB_KEY]`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from engine.security.auth import TokenIssuer
from hub.config import HubConfig
from hub.metrics import HubMetrics
from hub.sessions import AccessTokens, Passwords, RevokedSessions
from persistence.pg_fairplay import PgFairplayStore
from persistence.pg_hub_accounts import AccountStore
from persistence.pg_hub_campaigns import CampaignStore
from persistence.pg_hub_social import SocialStore
from persistence.redis_bus import Bus
from persistence.redis_layout import REDIS_DOWN, RedisKeys
from persistence.redis_leaderboard import Leaderboards
from persistence.redis_limits import Backoff, FixedWindow
from persistence.redis_presence import Presence
from persistence.redis_registry import Registry
from persistence.redis_seats import Seats

if TYPE_CHECKING:
    from hub.placement import Placement
    from hub.spawner import LocalSpawner
    from hub.stream import Streams
    from hub.upkeep import Upkeep

log = logging.getLogger("arbiter.hub")

LOG_EVERY_S: Final = 10.0


@dataclass(slots=True)
class Limits:
    login_ip: FixedWindow
    login_account: Backoff
    register_ip: FixedWindow
    chat: FixedWindow
    social: FixedWindow  # friend requests and reports


@dataclass(slots=True, eq=False)
class Hub:
    cfg: HubConfig
    hub_id: str
    keys: RedisKeys
    redis: aioredis.Redis
    blocking: aioredis.Redis  # for BLPOP (its socket timeout outlasts the wait)
    pool: asyncpg.Pool
    accounts: AccountStore
    campaigns: CampaignStore
    social: SocialStore
    fairplay: PgFairplayStore  # bans and the audit log, shared with the game servers
    passwords: Passwords
    revoked: RevokedSessions
    access: AccessTokens
    join_tokens: TokenIssuer
    limits: Limits
    presence: Presence
    bus: Bus
    registry: Registry
    boards: Leaderboards
    seats: Seats
    metrics: HubMetrics
    streams: Streams = field(init=False)
    placement: Placement = field(init=False)
    upkeep: Upkeep = field(init=False)
    spawner: LocalSpawner | None = None
    _unpublished: int = 0
    _warned_at: float = -1e9

    async def publish(self, event: dict[str, Any]) -> bool:
        """Best effort: an event lost while Redis is down is made good by the subscribers' resync."""
        try:
            await self.bus.publish(event)
            return True
        except REDIS_DOWN as exc:
            self.metrics.redis_errors.inc()
            self._unpublished += 1
            now = time.monotonic()
            if now - self._warned_at >= LOG_EVERY_S:  # an outage must not flood the log
                self._warned_at = now
                log.warning("%d bus events not published so far: Redis unavailable (%s)", self._unpublished,
                            type(exc).__name__)  # fmt: skip
            return False

    async def names(self, account_ids: list[str]) -> dict[str, dict[str, str]]:
        got = await self.accounts.names(sorted(set(account_ids)))
        return {a: {"handle": h, "display_name": d} for a, (h, d) in got.items()}


HUB_KEY: Final = web.AppKey("arbiter_hub", Hub)
