"""End to end, as a user runs it: two `arbiter hub` processes with `--spawn-local` (each may start one
`arbiter serve`), PostgreSQL and Redis. Ada registers on hub A and creates campaigns; Bob logs in
through hub B and joins; both play over the SDK; they see each other's presence and chat across the
two hubs; the leaderboard shows both; a second campaign lands on the second game server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench import hub as bench_hub
from engine.security.auth import AuthCode
from netcode.client import ArbiterClient, ServerError
from tests.hubutil import REDIS_URL, RING, Api, eventually, next_frame, redis_prefix
from tests.pgutil import dsn, fresh_database


@contextlib.asynccontextmanager
async def hub_process(db: str, prefix: str, data: Path) -> AsyncIterator[str]:
    spawn = ["--spawn-local", "--spawn-capacity", "1", "--spawn-data-dir", str(data)]
    cheap = ["--argon2-memory-kib", "256", "--argon2-time-cost", "1"]  # tests only; bench.hub uses OWASP's
    async with bench_hub.hub_process(dsn(db), prefix, [*spawn, *cheap], RING, REDIS_URL) as (url, _):
        yield url


async def test_two_hubs_two_servers_two_players(tmp_path: Path) -> None:
    async with fresh_database() as db, redis_prefix() as prefix:
        hubs = hub_process(db, prefix, tmp_path / "a"), hub_process(db, prefix, tmp_path / "b")
        async with hubs[0] as url_a, hubs[1] as url_b, Api(url_a) as a, Api(url_b) as b:
            await _scenario(a, b)


async def _scenario(a: Api, b: Api) -> None:
    ada = await a.register("ada")
    bob_new = {"email": "bob@example.com", "handle": "bob", "password": "bob's passphrase"}
    status, bob = await b.call("POST", "/v1/auth/register", bob_new)
    assert status == 201
    status, bob = await b.call("POST", "/v1/auth/login", {"login": "bob", "password": "bob's passphrase"})
    assert status == 200
    A, B = ada["access_token"], bob["access_token"]
    ada_id, bob_id = ada["account"]["account_id"], bob["account"]["account_id"]
    assert (await a.call("POST", "/v1/friends/requests", {"handle": "bob"}, A))[0] == 201
    assert (await b.call("POST", f"/v1/friends/requests/{ada_id}/accept", None, B))[0] == 200

    _, c1 = await a.call("POST", "/v1/campaigns", {"title": "Together", "game": "startales", "max_players": 8}, A)
    cid = c1["campaign_id"]
    ws_a = await a.stream(A)
    ws_b = await b.stream(B)

    # Join: ada through hub A (the campaign is placed and started), bob through hub B (same server).
    status, seat_a = await a.call("POST", f"/v1/campaigns/{cid}/join", None, A)
    assert status == 200, seat_a
    status, seat_b = await b.call("POST", f"/v1/campaigns/{cid}/join", None, B)
    assert status == 200 and seat_b["url"] == seat_a["url"], seat_b
    ca = await ArbiterClient.connect(seat_a["url"], "ada", seat_a["token"])
    cb = await ArbiterClient.connect(seat_b["url"], "bob", seat_b["token"])
    for _ in range(20):
        ca.send_input(1.0, 0.0)
        cb.send_input(0.0, 1.0)
        await ca.next_snapshot()
        await cb.next_snapshot()

    # Presence across hubs: the game server says bob plays; ada's stream (hub A) hears it.
    frame = await next_frame(ws_a, "presence", timeout=15, account=bob_id, status="in_campaign")
    assert frame["campaign"] == cid
    # Chat across hubs: ada posts through A, bob reads it on B; bob's direct message reaches A.
    await ws_b.send_json({"op": "join", "channel": f"c:{cid}"})
    await next_frame(ws_b, "history")
    status, msg = await a.call("POST", f"/v1/campaigns/{cid}/chat", {"text": "glhf bob"}, A)
    assert status == 201
    got = await next_frame(ws_b, "chat", id=msg["id"])
    assert got["text"] == "glhf bob" and got["handle"] == "ada"
    assert (await b.call("POST", "/v1/dm/ada", {"text": "thanks!"}, B))[0] == 201
    assert (await next_frame(ws_a, "chat"))["text"] == "thanks!"

    # The leaderboard (pushed by the game server) shows them both, through either hub.
    async def both_ranked() -> bool:
        _, board = await b.call("GET", f"/v1/campaigns/{cid}/leaderboard", None, B)
        return {e["handle"] for e in board.get("entries", [])} == {"ada", "bob"}

    await eventually(both_ranked)
    _, around = await a.call("GET", f"/v1/campaigns/{cid}/leaderboard/around-me?n=1", None, A)
    assert around["rank"] in (1, 2) and all(isinstance(e["score"], int) for e in around["entries"])

    # A second campaign goes to the other hub's spawner (the first one is full): a second game server.
    _, c2 = await b.call("POST", "/v1/campaigns", {"title": "Elsewhere", "game": "wander"}, B)
    status, seat_c = await b.call("POST", f"/v1/campaigns/{c2['campaign_id']}/join", None, B)
    assert status == 200 and seat_c["url"] != seat_a["url"], seat_c
    cc = await ArbiterClient.connect(seat_c["url"], "bob", seat_c["token"])
    assert cc.welcome is not None and cc.welcome.game == "wander"
    # A token for campaign 1 is refused by campaign 2's server.
    _, seat_x = await a.call("POST", f"/v1/campaigns/{cid}/join", None, A)
    with pytest.raises(ServerError) as refused:
        await ArbiterClient.connect(seat_c["url"], "ada", seat_x["token"])
    assert refused.value.code == AuthCode.TOKEN_WRONG_CAMPAIGN

    for c in (ca, cb, cc):
        await c.close()
    for ws in (ws_a, ws_b):
        await ws.close()
