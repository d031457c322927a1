"""A game server's side of the hub: registration, presence, leaderboard scores, control requests.

`arbiter serve|host --hub-redis URL --public-url ws://HOST:{port}/` runs a `HubLink` next to the
server process (engine/host.py: `arbiter serve` is a host of one campaign).
Game servers never import the hub; they meet it only through Redis (persistence/redis_*.py,
layout in docs/hub.md) and through the join tokens the hub signs with the same key ring.

Every `heartbeat_s`, off the tick (its own task; nothing on the tick awaits Redis):
- publishes the server's record (id, URL, kind, campaign capacity, its loaded campaigns with CCU and
  players, health, the games it runs, where its campaigns' data is) with a TTL of `ttl_s`, so a
  server that dies drops out of the registry by itself;
- diffs the set of connected accounts with the last beat: joins and leaves become presence keys
  (`in_campaign`, refreshed every beat) and presence events on the bus;
- computes each connected player's score from its progress (persistence/redis_leaderboard.py) and
  pushes the ones that changed to the campaign and global leaderboards; newly earned achievements
  become notifications for the player.
It also answers control requests (persistence/redis_registry.py): `start` (a host starts the
campaign, restoring it from PostgreSQL when it has no local copy, or wakes it; `arbiter serve` only
"starts" its own), `stop` and `kick`.

A hibernated campaign stays in the record (state "hibernated"): it takes no slot (`free` counts the
loaded ones), and the hub keeps sending its players here, where their hello wakes it. The data id
is where the campaigns' durable copy is: the PostgreSQL database they are shipped to, when they are
(any host on that database can restore one whose host died: relocation, docs/relocation.md), else
this machine's data directory.

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
import urllib.parse
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
from sim.registry import game_names

if TYPE_CHECKING:
    from engine.host import Host
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


async def start_hub_link(host: Host, args: argparse.Namespace) -> HubLink | None:
    """The link `arbiter serve` or `arbiter host` asked for (None without --hub-redis)."""
    if not args.hub_redis:
        return None
    link = HubLink(host, HubLinkConfig(args.hub_redis, args.hub_prefix, args.public_url,
                                       args.server_id))  # fmt: skip
    await link.start()
    return link


def _server_class() -> type[GameServer]:
    from engine.server import GameServer  # here, not at import: the CLI's parser imports this module

    return GameServer


def data_id(dsn: str, data_dir: str, shipped: bool) -> str:
    """Where a server's campaigns' durable copy is: their PostgreSQL database when they are shipped
    there (any server on it can restore them), else this machine's data dir ("" = in memory)."""
    if shipped and dsn:
        u = urllib.parse.urlsplit(dsn)
        return f"pg:{u.hostname or 'localhost'}:{u.port or 5432}{u.path or '/'}"
    if not data_dir:
        return ""
    return f"{socket.gethostname()}:{Path(data_dir).resolve()}"


class HubLink:
    def __init__(self, target: Host | GameServer, cfg: HubLinkConfig) -> None:
        """`target`: the host (or a campaign of `arbiter serve`: its host)."""
        from engine.progress import player_progress  # here, not at import: the CLI's parser imports this module

        host: Host | None = target.host if isinstance(target, _server_class()) else target  # type: ignore[assignment]
        assert host is not None, "the server is not running"
        self.host = host
        self.cfg = cfg
        self._progress = player_progress
        self.keys = RedisKeys(cfg.prefix)
        self.id = cfg.server_id or f"srv-{socket.gethostname()}-{secrets.token_hex(4)}"
        hc = self.host.cfg
        self.data = data_id(hc.pg_dsn, hc.data_dir, bool(hc.data_dir) and hc.ship.enabled)
        self.redis = open_redis(cfg.redis_url)
        self.blocking = open_redis(cfg.redis_url, blocking=2.0)
        self.registry = Registry(self.redis, self.keys)
        self.presence = Presence(self.redis, self.keys)
        self.boards = Leaderboards(self.redis, self.keys)
        self.bus = Bus(self.redis, self.keys)
        self._present: dict[str, str] = {}  # account -> the campaign it plays here
        self._scores: dict[tuple[str, str], int] = {}
        self._achievements: dict[tuple[str, str], int] = {}
        self._published: set[str] = set()  # campaigns in the last record
        self._synced = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.beats = 0
        self.failures = 0

    @property
    def url(self) -> str:
        h = self.host
        template = self.cfg.public_url or f"ws://{h.cfg.host}:{{port}}/"
        return template.replace("{port}", str(h.port))

    def record(self) -> ServerRecord:
        h = self.host
        campaigns: dict[str, CampaignLoad] = {}
        for cid, e in h.entries.items():
            s = e.server
            if e.state == "running" and s is not None:
                accounts = sorted({c.account for c in s.by_eid.values() if c.account})
                campaigns[cid] = CampaignLoad(ccu=len(s.by_eid), max_players=s.campaign.game.max_players,
                                              game=s.cfg.game, accounts=accounts)  # fmt: skip
            elif e.state in ("starting", "waking"):
                campaigns[cid] = CampaignLoad(game=e.spec.game, state="starting")
            elif e.state in ("hibernated", "hibernating"):
                campaigns[cid] = CampaignLoad(game=e.spec.game, state="hibernated")
        single = h.single is not None
        games = [h.cfg.game] if single else game_names()
        return ServerRecord(id=self.id, url=self.url, kind="serve" if single else "host", accepts=not single,
                            capacity=h.capacity, data=self.data, health="ok" if h.accepting else "stopping",
                            campaigns=campaigns, games=games)  # fmt: skip

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
                record = self.record()
                for cid in self._published - set(record.campaigns):
                    record.campaigns[cid] = CampaignLoad()  # withdrawn with the rest
                await self.registry.withdraw(record)
                await self.presence.game_left(self._present, self.id)
                for account, cid in self._present.items():
                    await self._announce(account, cid, left=True)
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
        record = self.record()
        await self.registry.publish(record, self.cfg.ttl_s)
        gone = self._published - set(record.campaigns)
        if gone:  # stopped: its location goes now, not at the TTL
            await self.registry.release(self.id, gone)
        self._published = set(record.campaigns)
        playing: dict[str, dict[str, int]] = {}  # campaign -> account -> ship
        now: dict[str, str] = {}
        for s in self.host.loaded():
            cid = s.cfg.campaign
            for c in s.by_eid.values():
                if c.account:
                    playing.setdefault(cid, {})[c.account] = c.eid
                    now[c.account] = cid
        joined = set(now) if not self._synced else {a for a, cid in now.items() if self._present.get(a) != cid}
        left = set(self._present) - set(now)
        for cid, players in playing.items():
            await self.presence.game_set(players, cid, self.id, self.cfg.ttl_s)
        if left:
            await self.presence.game_left(left, self.id)
        for account in sorted(joined):
            await self._announce(account, now[account], left=False)
        for account in sorted(left):
            cid = self._present[account]
            await self._announce(account, cid, left=True)
            self._scores.pop((cid, account), None)
            self._achievements.pop((cid, account), None)
        self._present = now
        for cid, players in playing.items():
            await self._push_scores(cid, players, resync=not self._synced)
        self._synced = True
        self.beats += 1

    async def _announce(self, account: str, campaign: str, *, left: bool) -> None:
        if left:
            status = (await self.presence.status([account]))[account].to_json()
        else:
            status = {"status": IN_CAMPAIGN, "campaign": campaign}
        await self.bus.publish({"t": "presence", "account": account, **status})

    async def _push_scores(self, campaign: str, players: dict[str, int], *, resync: bool) -> None:
        server = self.host.server(campaign)
        if server is None:
            return
        changed: dict[str, int] = {}
        for account, eid in players.items():
            key = (campaign, account)
            p = self._progress(server.campaign, eid)
            # Games declare their durable fields (sim/game_api.py); one without buildings scores none.
            achievements = int(p.get("achievements", 0))
            score = progress_score(p["resources"], int(p.get("buildings", 0)), achievements)
            if resync or self._scores.get(key) != score:
                changed[account] = score
            # Achievements held before this link first saw the player are not news.
            earned = achievements & ~self._achievements.get(key, achievements)
            self._achievements[key] = achievements
            for bit in range(64):
                if earned >> bit & 1:
                    await self.bus.publish({"t": "notify", "account": account, "kind": "achievement",
                                            "campaign": campaign, "achievement": bit})  # fmt: skip
        if changed:
            await self.boards.set_scores(campaign, changed)
            self._scores.update({(campaign, a): v for a, v in changed.items()})

    # -- ControlHandler ----------------------------------------------------------------------------
    async def start_campaign(self, spec: CampaignSpec) -> tuple[str, str]:
        from engine.host import CampaignSpec as HostSpec
        from engine.host import PlacementRefusedError

        h = self.host
        if h.single is not None and spec.campaign != h.single.cfg.campaign:
            raise PlacementError("this server runs one campaign (arbiter serve); it cannot start another")
        config: dict[str, object] = {**dict(spec.config), "max_players": spec.max_players}
        try:
            await h.start_campaign(HostSpec(spec.campaign, spec.game, spec.seed, config))
        except (PlacementRefusedError, ValueError) as exc:
            raise PlacementError(str(exc)) from None
        with contextlib.suppress(*REDIS_DOWN, TimeoutError):
            await asyncio.wait_for(self.beat(), 1.0)  # the registry knows it before the hub's answer arrives
        return self.url, self.id

    async def stop_campaign(self, campaign: str, reason: str) -> bool:
        log.info("the hub stops campaign %s: %s", campaign, reason)
        return await self.host.stop_campaign(campaign, reason)

    async def kick(self, campaign: str, account: str, reason: str) -> bool:
        server = self.host.server(campaign)
        if server is None:
            return False
        return server.fairplay.kick_by_admin(account, reason, "hub")
