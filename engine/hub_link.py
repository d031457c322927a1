"""A game server's side of the hub: registration, presence, leaderboard scores, control requests.

`arbiter serve --hub-redis URL --public-url ws://HOST:{port}/` runs a `HubLink` next to the server.
Game servers never import the hub; they meet it only through Redis (persistence/redis_*.py,
layout in docs/hub.md) and through the join tokens the hub signs with the same key ring.

Every `heartbeat_s`, off the tick (its own task; nothing on the tick awaits Redis):
- publishes the server's record (id, URL, capacity, its campaign with CCU and players, health) with a
  TTL of `ttl_s`, so a server that dies drops out of the registry by itself;
- diffs the set of connected accounts with the last beat: joins and leaves become presence keys
  (`in_campaign`, refreshed every beat) and presence events on the bus;
- computes each connected player's score from its progress (persistence/redis_leaderboard.py) and
  pushes the ones that changed to the campaign and global leaderboards; newly earned achievements
  become notifications for the player.
It also answers control requests (persistence/redis_registry.py): `stop` and `kick` for its campaign;
`start` succeeds for its own campaign only (one campaign per process; `arbiter host`, issue #12, runs
many).

Losing Redis: every beat fails quietly (counted, logged once per outage) and the tick goes on; the
first beat after Redis is back pushes everything again (record, presence, every score), so a flushed
Redis gets the live state back within one heartbeat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from persistence.redis_bus import Bus
from persistence.redis_layout import DEFAULT_PREFIX, REDIS_DOWN, RedisKeys, check_prefix, finish, open_redis, pause
from persistence.redis_leaderboard import Leaderboards, progress_score
from persistence.redis_presence import IN_CAMPAIGN, Presence
from persistence.redis_registry import (
    CampaignLoad,
    CampaignSpec,
    PlacementError,
    Registry,
    ServerRecord,
    serve_control,
)

if TYPE_CHECKING:
    from engine.server import GameServer

log = logging.getLogger("arbiter.hub_link")


@dataclass(slots=True)
class HubLinkConfig:
    redis_url: str
    prefix: str = DEFAULT_PREFIX
    public_url: str = ""  # "" = ws://HOST:PORT/ of the listener; "{port}" is replaced by the bound port
    server_id: str = ""  # "" = generated
    heartbeat_s: float = 1.0
    ttl_s: float = 5.0


def add_hub_link_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("hub link (docs/hub.md)")
    g.add_argument("--hub-redis", default=os.environ.get("ARBITER_HUB_REDIS", ""), metavar="URL",
                   help="register with the hub through this Redis (default $ARBITER_HUB_REDIS)")  # fmt: skip
    prefix = os.environ.get("ARBITER_REDIS_PREFIX", DEFAULT_PREFIX)
    g.add_argument("--hub-prefix", default=prefix, type=_prefix,
                   help="Redis key prefix shared with the hub ($ARBITER_REDIS_PREFIX)")  # fmt: skip
    g.add_argument("--public-url", default="", help="URL players connect to ({port} = the bound port)")
    g.add_argument("--server-id", default="", help="registry id (default: generated)")


def _prefix(text: str) -> str:
    try:
        return check_prefix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def start_hub_link(server: GameServer, args: argparse.Namespace) -> HubLink | None:
    """The link `arbiter serve` asked for (None without --hub-redis)."""
    if not args.hub_redis:
        return None
    link = HubLink(server, HubLinkConfig(args.hub_redis, args.hub_prefix, args.public_url,
                                         args.server_id))  # fmt: skip
    await link.start()
    return link


class HubLink:
    def __init__(self, server: GameServer, cfg: HubLinkConfig) -> None:
        from engine.progress import player_progress  # here, not at import: the CLI's parser imports this module

        self.server = server
        self.cfg = cfg
        self._progress = player_progress
        self.keys = RedisKeys(cfg.prefix)
        self.id = cfg.server_id or f"srv-{socket.gethostname()}-{secrets.token_hex(4)}"
        self.campaign = server.cfg.campaign
        root = Path(server.cfg.data_dir).resolve() if server.cfg.data_dir else None
        self.data = f"{socket.gethostname()}:{root}" if root is not None else ""
        self.redis = open_redis(cfg.redis_url)
        self.blocking = open_redis(cfg.redis_url, blocking=2.0)
        self.registry = Registry(self.redis, self.keys)
        self.presence = Presence(self.redis, self.keys)
        self.boards = Leaderboards(self.redis, self.keys)
        self.bus = Bus(self.redis, self.keys)
        self._present: set[str] = set()
        self._scores: dict[str, int] = {}
        self._achievements: dict[str, int] = {}
        self._synced = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.beats = 0
        self.failures = 0

    @property
    def url(self) -> str:
        s = self.server
        template = self.cfg.public_url or f"ws://{s.cfg.host}:{{port}}/"
        return template.replace("{port}", str(s.port))

    def record(self) -> ServerRecord:
        s = self.server
        accounts = sorted({c.account for c in s.by_eid.values() if c.account})
        load = CampaignLoad(ccu=len(s.by_eid), max_players=s.campaign.game.max_players, game=s.cfg.game,
                            accounts=accounts)  # fmt: skip
        health = s.http_request("/health")
        stopping = health is None or health[0] != 200
        return ServerRecord(id=self.id, url=self.url, kind="serve", accepts=False, capacity=1, data=self.data,
                            health="stopping" if stopping else "ok", campaigns={self.campaign: load},
                            games=[s.cfg.game])  # fmt: skip

    async def start(self) -> None:
        """Register (waiting at most a second: a Redis outage must not keep the server from starting)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.beat(), 1.0)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._beats()),
            loop.create_task(serve_control(self.redis, self.blocking, self.keys, self.id, self, self._stop)),
        ]
        log.info("registered with the hub as %s (%s)", self.id, self.url)

    async def close(self) -> None:
        await finish(self._tasks, self._stop, grace=3.0)
        with contextlib.suppress(*REDIS_DOWN, TimeoutError):
            async with asyncio.timeout(2.0):
                await self.registry.withdraw(self.record())
                await self.presence.game_left(self._present, self.id)
                for account in self._present:
                    await self._announce(account, left=True)
        for client in (self.redis, self.blocking):
            with contextlib.suppress(*REDIS_DOWN):
                await client.aclose()

    async def _beats(self) -> None:
        while not await pause(self._stop, self.cfg.heartbeat_s):
            await self.beat()

    async def beat(self) -> None:
        """One heartbeat; never raises for Redis trouble."""
        try:
            await self._beat()
        except REDIS_DOWN as exc:
            self.failures += 1
            if self._synced:
                log.warning("hub link: Redis unavailable (%s); play goes on, the link retries", type(exc).__name__)
            self._synced = False

    async def _beat(self) -> None:
        s = self.server
        players = {c.account: c.eid for c in s.by_eid.values() if c.account}
        await self.registry.publish(self.record(), self.cfg.ttl_s)
        now = set(players)
        joined = now if not self._synced else now - self._present
        left = self._present - now
        await self.presence.game_set(now, self.campaign, self.id, self.cfg.ttl_s)
        if left:
            await self.presence.game_left(left, self.id)
        for account in sorted(joined):
            await self._announce(account, left=False)
        for account in sorted(left):
            await self._announce(account, left=True)
            self._scores.pop(account, None)
            self._achievements.pop(account, None)
        self._present = now
        await self._push_scores(players, resync=not self._synced)
        self._synced = True
        self.beats += 1

    async def _announce(self, account: str, *, left: bool) -> None:
        if left:
            status = (await self.presence.status([account]))[account].to_json()
        else:
            status = {"status": IN_CAMPAIGN, "campaign": self.campaign}
        await self.bus.publish({"t": "presence", "account": account, **status})

    async def _push_scores(self, players: dict[str, int], *, resync: bool) -> None:
        changed: dict[str, int] = {}
        for account, eid in players.items():
            p = self._progress(self.server.campaign, eid)
            # Games declare their durable fields (sim/game_api.py); one without buildings scores none.
            achievements = int(p.get("achievements", 0))
            score = progress_score(p["resources"], int(p.get("buildings", 0)), achievements)
            if resync or self._scores.get(account) != score:
                changed[account] = score
            # Achievements held before this link first saw the player are not news.
            earned = achievements & ~self._achievements.get(account, achievements)
            self._achievements[account] = achievements
            for bit in range(64):
                if earned >> bit & 1:
                    await self.bus.publish({"t": "notify", "account": account, "kind": "achievement",
                                            "campaign": self.campaign, "achievement": bit})  # fmt: skip
        if changed:
            await self.boards.set_scores(self.campaign, changed)
            self._scores.update(changed)

    # -- ControlHandler ----------------------------------------------------------------------------
    async def start_campaign(self, spec: CampaignSpec) -> tuple[str, str]:
        if spec.campaign != self.campaign:
            raise PlacementError("this server runs one campaign (arbiter serve); it cannot start another")
        return self.url, self.id

    async def stop_campaign(self, campaign: str, reason: str) -> bool:
        if campaign != self.campaign:
            return False
        log.info("the hub stops this campaign: %s", reason)
        self.server.request_stop()
        return True

    async def kick(self, campaign: str, account: str, reason: str) -> bool:
        if campaign != self.campaign:
            return False
        return self.server.fairplay.kick_by_admin(account, reason, "hub")
