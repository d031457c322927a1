"""The game server's hub link (engine/hub_link.py) against a real GameServer and Redis: registration
with a TTL, presence on join and leave, leaderboard pushes (idempotent, global = sum), achievements
as notifications, control requests (stop, kick, start refused), and a Redis outage that never
stops the tick."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from engine.hub_link import HubLink, HubLinkConfig
from engine.security.auth import TokenIssuer, TokenVerifier
from netcode.client import ArbiterClient
from persistence.redis_bus import Bus
from persistence.redis_layout import RedisKeys, finish, open_redis
from persistence.redis_leaderboard import Leaderboards, progress_score
from persistence.redis_presence import Presence
from persistence.redis_registry import CampaignSpec, Registry, new_request, send_control
from tests.hubutil import REDIS_URL, RING, OwnRedis, eventually, redis_prefix
from tests.serverutil import running_server, url, wait_for

CAMP = "c_0123456789abcdef0123"


def _link(server: Any, redis_url: str, prefix: str) -> HubLink:
    return HubLink(server, HubLinkConfig(redis_url, prefix, "ws://play.example:{port}/", "srv-test", 0.1, 0.5))


async def test_registration_presence_scores_and_control() -> None:
    async with redis_prefix() as prefix, running_server(TokenVerifier(RING, CAMP), campaign=CAMP) as server:
        keys = RedisKeys(prefix)
        redis = open_redis(REDIS_URL)
        blocking = open_redis(REDIS_URL, blocking=5)
        registry, presence, boards = Registry(redis, keys), Presence(redis, keys), Leaderboards(redis, keys)
        events: list[dict[str, Any]] = []
        ready = asyncio.Event()
        bus_stop = asyncio.Event()
        bus_task = asyncio.create_task(Bus(redis, keys).listen(events.append, stop=bus_stop, ready=ready))
        await ready.wait()
        link = _link(server, REDIS_URL, prefix)
        await link.start()
        try:
            record = await registry.locate(CAMP)
            assert record is not None and record.url == f"ws://play.example:{server.port}/"
            assert record.kind == "serve" and not record.accepts and record.games == ["startales"]
            assert await redis.pttl(keys.server("srv-test")) <= 500

            issuer = TokenIssuer(RING)
            ada = await ArbiterClient.connect(url(server), "ada", issuer.issue("a_ada", CAMP, ttl=60))
            bob = await ArbiterClient.connect(url(server), "bob", issuer.issue("a_bob", CAMP, ttl=60))

            async def both_in() -> bool:
                st = await presence.status(["a_ada", "a_bob"])
                return all(s.status == "in_campaign" and s.campaign == CAMP for s in st.values())

            await eventually(both_in)
            rec = await registry.locate(CAMP)
            assert rec is not None and rec.campaigns[CAMP].accounts == ["a_ada", "a_bob"] and rec.ccu == 2
            assert any(
                e["t"] == "presence" and e["account"] == "a_ada" and e["status"] == "in_campaign" for e in events
            )

            # Scores: a balance change on the server reaches the campaign and the global board.
            eid = server.campaign.accounts["a_ada"]
            arr = server.campaign.world.arrays["bal_metal"]
            arr[(eid & 0xFFFF) - server.campaign.player_lo] = 40

            async def scored() -> bool:
                return (await boards.top(CAMP, 5))[:1] == [(1, "a_ada", 40)]

            await eventually(scored)
            assert await boards.top(None, 5) == [(1, "a_ada", 40), (2, "a_bob", 0)]
            await boards.set_scores(CAMP, {"a_ada": 40})  # the same push again changes nothing
            await boards.set_scores("c_other", {"a_ada": 2})
            assert (await boards.top(None, 1)) == [(1, "a_ada", 42)], "global = sum over campaigns"
            assert progress_score({"0": 40}, 0, 0b101) == 240

            # An achievement earned while playing becomes a notification for its player.
            server.campaign.world.arrays["achievements"][(eid & 0xFFFF) - server.campaign.player_lo] |= 1 << 3

            def notified() -> bool:
                return any(e["t"] == "notify" and e.get("achievement") == 3 for e in events)

            await wait_for(notified)

            # Kick through the control queue; then the leave shows in presence.
            req = new_request("kick", CAMP, 5.0, account="a_bob", reason="test")
            assert await send_control(redis, blocking, keys, "srv-test", req) == {"ok": True}

            async def bob_gone() -> bool:
                return (await presence.status(["a_bob"]))["a_bob"].status == "offline"

            await eventually(bob_gone)
            spec = CampaignSpec("c_another0123456789ab", "startales", 1, 4)
            answer = await send_control(
                redis, blocking, keys, "srv-test", new_request("start", spec.campaign, 5.0, spec=spec)
            )
            assert answer is not None and not answer["ok"] and "one campaign" in answer["error"]
            own = new_request("start", CAMP, 5.0, spec=CampaignSpec(CAMP, "startales", 1, 4))
            answer = await send_control(redis, blocking, keys, "srv-test", own)
            assert answer == {"ok": True, "url": record.url, "server": "srv-test"}
            await ada.close()
            await bob.close()
        finally:
            await link.close()
            await finish([bus_task], bus_stop, grace=3.0)
            await redis.aclose()
            await blocking.aclose()
        # A clean stop leaves the registry at once.
        redis = open_redis(REDIS_URL)
        assert await redis.get(keys.campaign_server(CAMP)) is None
        assert await redis.get(keys.server("srv-test")) is None
        await redis.aclose()


async def test_any_game_scores_and_a_stop_request_stops_the_server() -> None:
    """wander declares no buildings nor achievements: its players are ranked all the same."""
    async with redis_prefix() as prefix:
        keys = RedisKeys(prefix)
        redis = open_redis(REDIS_URL)
        blocking = open_redis(REDIS_URL, blocking=5)
        async with running_server(campaign=CAMP, game="wander", game_config={"npcs": 5}) as server:
            link = _link(server, REDIS_URL, prefix)
            await link.start()
            client = await ArbiterClient.connect(url(server), "walker")

            async def ranked() -> bool:
                return await Leaderboards(redis, keys).top(CAMP, 5) == [(1, "walker", 0)]

            await eventually(ranked)
            beats = link.beats
            await wait_for(lambda: link.beats > beats + 2)  # the heartbeat goes on
            answer = await send_control(
                redis, blocking, keys, "srv-test", new_request("stop", CAMP, 5.0, reason="over")
            )
            assert answer == {"ok": True}
            await wait_for(lambda: server.host is not None and server.host.stopped, 10)
            await client.close()
            await link.close()
        await redis.aclose()
        await blocking.aclose()


async def test_redis_outage_never_stops_the_tick_and_the_link_resyncs() -> None:
    async with OwnRedis() as own, running_server(campaign=CAMP) as server:
        prefix = "outage:"
        link = _link(server, own.url, prefix)
        await link.start()
        redis = open_redis(own.url)
        try:
            client = await ArbiterClient.connect(url(server), "ada")
            await wait_for(lambda: link.beats >= 2)
            own.stop()
            tick = server.campaign.tick_count
            await wait_for(lambda: link.failures >= 3, 10)
            await wait_for(lambda: server.campaign.tick_count > tick + 60, 10)  # a second of ticks without Redis
            await client.next_snapshot()
            await own.start()  # back, and empty
            keys = RedisKeys(prefix)

            async def back() -> bool:
                raw = await redis.get(keys.presence_game("ada"))
                return (
                    raw is not None
                    and json.loads(raw)["campaign"] == CAMP
                    and await redis.exists(keys.server("srv-test")) == 1
                )

            await eventually(back, 10)

            async def rescored() -> bool:  # the same beat pushes the scores, a moment after presence
                return await Leaderboards(redis, keys).top(CAMP, 5) == [(1, "ada", 0)]

            await eventually(rescored, 5)
            await client.close()
        finally:
            await link.close()
            await redis.aclose()
