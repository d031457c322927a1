"""Leaderboards in Redis sorted sets: one per campaign and one global, rebuildable from PostgreSQL.

A player's score in a campaign comes from its durable progress (`progress_score`), so the same number
is computed live by the game server (engine/hub_link.py pushes it) and from `game_progress` rows by the
hub when Redis has lost the boards. The global board holds, per account, the sum of its campaign
scores: `set_scores` updates a campaign board and moves the global one by the difference, atomically
(one Lua call), so pushing the same score twice changes nothing.

Rebuild: `{p}lb:built` is set once the boards are complete. A flushed (or new) Redis has no marker;
the hub then reloads every score from PostgreSQL with `only_missing=True`, which never overwrites a
score a game server has pushed meanwhile (that one is newer), and sets the marker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import redis.asyncio as aioredis

from persistence.redis_layout import RedisKeys

# What progress is worth: achievements first, then what was built, then what is held.
ACHIEVEMENT_POINTS: Final = 100
BUILDING_POINTS: Final = 25

# KEYS[1] campaign board, KEYS[2] global board. ARGV: account, score, "nx" or "". Returns 1 if written.
_SET: Final = """
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if ARGV[3] == 'nx' and old then return 0 end
local new = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], new, ARGV[1])
local delta = new - (tonumber(old) or 0)
if delta ~= 0 or not old then redis.call('ZINCRBY', KEYS[2], delta, ARGV[1]) end
return 1
"""


def progress_score(resources: Mapping[str, int], buildings: int, achievements: int) -> int:
    """The leaderboard score of one player in one campaign, from its progress row."""
    held = sum(max(0, int(v)) for v in resources.values())
    earned = bin(int(achievements) % (1 << 64)).count("1")
    return earned * ACHIEVEMENT_POINTS + max(0, int(buildings)) * BUILDING_POINTS + held


class Leaderboards:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._set = redis.register_script(_SET)

    def board(self, campaign: str | None) -> str:
        """The key of a campaign's board, or of the global one (None)."""
        return self.keys.lb_global if campaign is None else self.keys.leaderboard(campaign)

    async def set_scores(self, campaign: str, scores: Mapping[str, int], *, only_missing: bool = False) -> None:
        if not scores:
            return
        board = self.keys.leaderboard(campaign)
        nx = "nx" if only_missing else ""
        async with self.redis.pipeline(transaction=False) as p:
            for account, score in scores.items():
                await self._set(keys=[board, self.keys.lb_global], args=[account, int(score), nx], client=p)
            await p.execute()

    async def load(self, rows: Iterable[tuple[str, str, int]]) -> int:
        """Rebuild from (campaign, account, score) rows without overwriting live scores."""
        by_campaign: dict[str, dict[str, int]] = {}
        n = 0
        for campaign, account, score in rows:
            by_campaign.setdefault(campaign, {})[account] = score
            n += 1
        for campaign, scores in by_campaign.items():
            await self.set_scores(campaign, scores, only_missing=True)
        return n

    async def built(self) -> bool:
        return bool(await self.redis.exists(self.keys.lb_built))

    async def mark_built(self) -> None:
        await self.redis.set(self.keys.lb_built, "1")

    async def top(self, campaign: str | None, n: int) -> list[tuple[int, str, int]]:
        """The first `n` as (rank from 1, account, score), best first."""
        rows: list[Any] = await self.redis.zrevrange(self.board(campaign), 0, max(0, n - 1), withscores=True)
        return [(i + 1, str(a), int(s)) for i, (a, s) in enumerate(rows)]

    async def around(self, campaign: str | None, account: str, n: int) -> tuple[int | None, list[tuple[int, str, int]]]:
        """The account's rank (None when it has no score) and the `n` entries either side of it."""
        board = self.board(campaign)
        rank: Any = await self.redis.zrevrank(board, account)
        if rank is None:
            return None, []
        start = max(0, int(rank) - n)
        rows: list[Any] = await self.redis.zrevrange(board, start, int(rank) + n, withscores=True)
        return int(rank) + 1, [(start + i + 1, str(a), int(s)) for i, (a, s) in enumerate(rows)]
