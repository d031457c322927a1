"""Placement: find the server running a campaign, or start it on the one with the most free capacity,
then hand the player a seat (a 60 s join token for that campaign) or a place on the waitlist.

One hub process places a campaign at a time (a Redis lock per campaign); another hub asking at the
same moment waits for the campaign to appear in the registry instead of starting it twice.

Where a campaign may start: the first time, on any placement handler with a free slot that runs its
game. After that, only where its data is (`campaigns.data_at`, the handler's disk id): the campaign
restarts from its SQLite journal there. If that handler is down the campaign is unavailable (503)
until it is back; moving a campaign to another machine needs its data shipped through PostgreSQL,
which is issue #12's relocation.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass

from hub.http import refuse
from hub.sessions import Principal
from hub.state import Hub
from persistence.pg_hub_campaigns import CampaignRow
from persistence.redis_layout import DEL_IF_EQUAL
from persistence.redis_registry import (
    CampaignSpec,
    ServerRecord,
    new_request,
    post_control,
    send_control,
)
from persistence.redis_seats import WAITLIST_FULL

log = logging.getLogger("arbiter.hub.placement")


@dataclass(frozen=True, slots=True)
class Seat:
    url: str
    token: str
    server: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class Waiting:
    position: int


class Placement:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._unlock = hub.redis.register_script(DEL_IF_EQUAL)

    async def join(self, who: Principal, row: CampaignRow, name: str) -> Seat | Waiting:
        hub = self.hub
        cid = row.campaign_id
        record = await hub.registry.locate(cid)
        playing = record.campaigns[cid].accounts if record is not None else []
        pos = await hub.seats.claim(cid, who.account, row.max_players, playing, hold_s=hub.cfg.join_ttl_s)
        if pos == WAITLIST_FULL:
            hub.metrics.joins.labels("waitlist_full").inc()
            refuse(503, "the campaign and its waitlist are full; try later", retry_after=30)
        if pos > 0:
            hub.metrics.joins.labels("waitlisted").inc()
            return Waiting(pos)
        if record is None:
            url, server = await self.start(row)
        else:
            url, server = record.url, record.id
        token = hub.join_tokens.issue(who.account, cid, role="player", ttl=hub.cfg.join_ttl_s, name=name)
        hub.metrics.joins.labels("seated").inc()
        return Seat(url, token, server, hub.cfg.join_ttl_s)

    async def start(self, row: CampaignRow) -> tuple[str, str]:
        """Start the campaign somewhere (or wait for the hub that is starting it): (url, server id)."""
        hub = self.hub
        cid = row.campaign_id
        timeout = hub.cfg.placement_timeout_s
        lock = hub.keys.lock(f"place:{cid}")
        mine = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await hub.redis.set(lock, mine, nx=True, px=int(timeout * 1000)):
            record = await hub.registry.locate(cid)  # another hub is placing it: wait for it to appear
            if record is not None:
                return record.url, record.id
            if loop.time() > deadline:
                refuse(503, "the campaign is being started elsewhere and is not up yet; try again", retry_after=5)
            await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        try:
            record = await hub.registry.locate(cid)
            if record is not None:
                return record.url, record.id
            handler = await self._choose(row)
            spec = CampaignSpec(campaign=cid, game=row.game, seed=row.seed, max_players=row.max_players,
                                config=row.config)  # fmt: skip
            req = new_request("start", cid, timeout, spec=spec)
            log.info("placing campaign %s on %s", cid, handler.id)
            answer = await send_control(hub.redis, hub.blocking, hub.keys, handler.id, req)
            if answer is None:
                hub.metrics.placements.labels("timeout").observe(time.perf_counter() - t0)
                refuse(502, f"server {handler.id} did not start the campaign in {timeout:.0f} s")
            if not answer.get("ok"):
                hub.metrics.placements.labels("refused").observe(time.perf_counter() - t0)
                refuse(502, f"server {handler.id} could not start the campaign: {str(answer.get('error'))[:200]}")
            url = str(answer["url"])
            server = str(answer.get("server") or handler.id)
            await hub.campaigns.set_placement(cid, server, handler.data)
            hub.metrics.placements.labels("ok").observe(time.perf_counter() - t0)
            return url, server
        finally:
            await self._unlock(keys=[lock], args=[mine])

    async def _choose(self, row: CampaignRow) -> ServerRecord:
        servers = [s.record for s in await self.hub.registry.servers(include_down=False) if s.record is not None]
        fits = [
            r for r in servers
            if r.accepts and r.health == "ok" and r.free > 0 and (not r.games or row.game in r.games)
        ]  # fmt: skip
        if row.data_at:
            fits = [r for r in fits if r.data == row.data_at]
            if not fits:
                if any(r.data == row.data_at for r in servers):
                    refuse(503, "the server holding this campaign's data has no free slot; try later", retry_after=10)
                refuse(503, f"this campaign's data is on {row.data_at}, which is down; it is back when that machine "
                       "is (moving campaigns between machines is not available yet)", retry_after=30)  # fmt: skip
        if not fits:
            refuse(503, "no game server has a free slot for this campaign; try later", retry_after=10)
        return max(fits, key=lambda r: (r.free, -r.ccu, r.id))

    async def stop(self, campaign: str, reason: str) -> bool:
        record = await self.hub.registry.locate(campaign)
        if record is None:
            return False
        req = new_request("stop", campaign, 30.0, reason=reason)
        await post_control(self.hub.redis, self.hub.keys, record.id, req)
        return True

    async def kick(self, campaign: str, account: str, reason: str) -> bool:
        record = await self.hub.registry.locate(campaign)
        if record is None:
            return False
        req = new_request("kick", campaign, 30.0, account=account, reason=reason)
        await post_control(self.hub.redis, self.hub.keys, record.id, req)
        return True
