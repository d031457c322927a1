"""Redis restarted (empty) in the middle of play, with a hub and a game server on a redis-server of
this test's own: play continues, presence and leaderboards come back, and no chat message that was
acknowledged is missing from the history."""

from __future__ import annotations

from typing import Any

from engine.hub_link import HubLink, HubLinkConfig
from engine.security.auth import TokenVerifier
from netcode.client import ArbiterClient
from tests.hubutil import RING, Api, OwnRedis, eventually, hub_config, next_frame, running_hub
from tests.pgutil import dsn, fresh_database
from tests.serverutil import running_server, wait_for


async def test_redis_restart_mid_play() -> None:
    async with fresh_database() as db, OwnRedis() as own:
        cfg = hub_config(dsn(db), own.url, "rr:", presence_ttl_s=3.0)
        async with running_hub(cfg) as (hub, base), Api(base) as api:
            ada, bob = await api.register("ada"), await api.register("bob")
            A, B = ada["access_token"], bob["access_token"]
            await api.call("POST", "/v1/friends/requests", {"handle": "bob"}, A)
            await api.call("POST", f"/v1/friends/requests/{ada['account']['account_id']}/accept", None, B)
            _, camp = await api.call("POST", "/v1/campaigns", {"title": "Storm", "game": "startales"}, A)
            cid = camp["campaign_id"]
            await api.call("POST", f"/v1/campaigns/{cid}/join", None, B)  # membership; no server yet: 503

            # The campaign's server, linked to the hub through the same Redis.
            async with running_server(TokenVerifier(RING, cid), campaign=cid, pg_dsn=dsn(db),
                                      progress_every_s=0.3) as server:  # fmt: skip
                link = HubLink(server, HubLinkConfig(own.url, "rr:", "", "srv-rr", 0.2, 1.0))
                await link.start()
                try:
                    await _play(api, hub, server, own, cid, ada, bob)
                finally:
                    await link.close()


async def _play(
    api: Api, hub: Any, server: Any, own: OwnRedis, cid: str, ada: dict[str, Any], bob: dict[str, Any]
) -> None:
    A, B = ada["access_token"], bob["access_token"]
    bob_id = bob["account"]["account_id"]
    clients = []
    for who in (A, B):
        status, seat = await api.call("POST", f"/v1/campaigns/{cid}/join", None, who)
        assert status == 200, seat
        clients.append(await ArbiterClient.connect(seat["url"], "x", seat["token"]))
    ws_a = await api.stream(A)
    path = f"/v1/campaigns/{cid}/chat"
    acked = []
    for i in range(5):
        status, msg = await api.call("POST", path, {"text": f"before {i}"}, A)
        assert status == 201
        acked.append(msg["id"])
    # A score, durable in PostgreSQL (the progress rows) and live in Redis.
    eid = server.campaign.accounts[bob_id]
    server.campaign.world.arrays["bal_metal"][(eid & 0xFFFF) - server.campaign.player_lo] = 77

    async def bob_scored() -> bool:
        _, board = await api.call("GET", f"/v1/campaigns/{cid}/leaderboard", None, A)
        return any(e["handle"] == "bob" and e["score"] == 77 for e in board.get("entries", []))

    await eventually(bob_scored)
    await eventually(lambda: _pg_has_score(hub, bob_id))

    # Redis dies. The game goes on; chat is refused (not acknowledged), nothing acknowledged is lost.
    own.stop()
    tick = server.campaign.tick_count
    for c in clients:
        c.send_input(0.5, 0.0)
    await wait_for(lambda: server.campaign.tick_count > tick + 60, 10)
    for c in clients:
        await c.next_snapshot()
    status, _ = await api.call("POST", path, {"text": "during"}, A)
    assert status == 503
    status, hist = await api.call("GET", path + "?limit=100", None, B)
    assert status == 200 and [m["id"] for m in hist["messages"]] == acked, "history is PostgreSQL's, Redis or not"

    # Redis is back, empty.
    await own.start()
    frame = await next_frame(ws_a, "resync", timeout=15)
    assert frame == {"t": "resync"}

    async def presence_back() -> bool:
        _, lists = await api.call("GET", "/v1/friends", None, A)
        f = lists["friends"]
        return bool(f) and f[0]["status"] == "in_campaign" and f[0]["campaign"] == cid

    await eventually(presence_back)
    await eventually(bob_scored)  # the live push, and the rebuild from PostgreSQL

    async def rebuilt() -> bool:
        return bool(await hub.boards.built())

    await eventually(rebuilt)
    _, board = await api.call("GET", "/v1/leaderboards/global", None, A)
    assert {e["handle"]: e["score"] for e in board["entries"]}["bob"] == 77
    status, msg = await api.call("POST", path, {"text": "after"}, A)
    assert status == 201
    acked.append(msg["id"])
    status, hist = await api.call("GET", path + "?limit=100", None, B)
    assert [m["id"] for m in hist["messages"]] == acked
    for c in clients:
        await c.next_snapshot()
        await c.close()
    await ws_a.close()


async def _pg_has_score(hub: Any, account: str) -> bool:
    async for _, who, score in hub.social.scores():
        if who == account and score == 77:
            return True
    return False
