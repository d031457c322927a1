"""Campaigns on a real hub: creation, discovery, private invites, placement on the server with the
most free capacity (fake placement handlers speaking the real Redis protocol), join tokens bound to
their campaign, the waitlist, kicks, bans, the lifecycle and what happens when a server is down."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from engine.security.auth import AuthCode, AuthError, TokenVerifier
from hub.schedule import next_weekly
from tests.hubutil import REDIS_URL, RING, Api, FakeServer, eventually, hub_env


async def _create(api: Api, token: str, **fields: Any) -> dict[str, Any]:
    status, body = await api.call("POST", "/v1/campaigns", {"title": "Dawn", "game": "startales", **fields}, token)
    assert status == 201, body
    return dict(body)


async def test_create_discover_and_private_invites(pg_database: str) -> None:
    async with hub_env(pg_database) as (_, api):
        ada = (await api.register("ada"))["access_token"]
        bob = (await api.register("bob"))["access_token"]
        pub = await _create(api, ada, title="Open skies", max_players=4, seed=7, config={"npcs": 3})
        assert pub["status"] == "open" and pub["seed"] == 7 and pub["config"] == {"npcs": 3} and pub["role"] == "owner"
        priv = await _create(api, ada, title="Secret garden", visibility="private")
        assert priv["invite_code"] and priv["max_players"] == 50

        status, found = await api.call("GET", "/v1/campaigns?q=skies&game=startales&free=1", token=bob)
        assert status == 200 and [c["campaign_id"] for c in found["campaigns"]] == [pub["campaign_id"]]
        status, found = await api.call("GET", "/v1/campaigns?q=garden", token=bob)
        assert found["campaigns"] == [], "private campaigns are not discoverable"
        status, found = await api.call("GET", "/v1/campaigns?q=%25", token=bob)
        assert found["campaigns"] == [], "% is a literal, not a wildcard"

        cid = priv["campaign_id"]
        assert (await api.call("GET", f"/v1/campaigns/{cid}", token=bob))[0] == 404
        status, seen = await api.call("GET", f"/v1/campaigns/{cid}?invite={priv['invite_code']}", token=bob)
        assert status == 200 and "invite_code" not in seen
        assert (await api.call("POST", f"/v1/campaigns/{cid}/join", {"invite": "wrong-code-123"}, bob))[0] == 404
        status, mine = await api.call("GET", "/v1/campaigns/mine", token=ada)
        assert {c["campaign_id"] for c in mine["campaigns"]} == {pub["campaign_id"], cid}


async def test_join_places_on_most_free_capacity_and_tokens_are_bound(pg_database: str) -> None:
    async with hub_env(pg_database) as (hub, api):
        prefix = hub.cfg.redis_prefix
        async with FakeServer(REDIS_URL, prefix, "small", capacity=1) as small, \
                FakeServer(REDIS_URL, prefix, "big", capacity=3) as big:  # fmt: skip
            ada = await api.register("ada")
            c1 = await _create(api, ada["access_token"], max_players=4)
            c2 = await _create(api, ada["access_token"], max_players=4)
            status, seat = await api.call("POST", f"/v1/campaigns/{c1['campaign_id']}/join", None, ada["access_token"])
            assert status == 200 and seat["server"] == "big" and seat["url"] == big.url and seat["expires_in"] == 60
            assert [s.campaign for s in big.started] == [c1["campaign_id"]] and not small.started
            spec = big.started[0]
            assert (spec.game, spec.seed, spec.max_players) == ("startales", c1["seed"], 4)

            claims = TokenVerifier(RING, c1["campaign_id"]).verify(seat["token"])
            assert claims.account == ada["account"]["account_id"] and claims.name == "ada"
            assert claims.exp - claims.iat == 60
            with pytest.raises(AuthError) as err:  # campaign B's server refuses campaign A's token
                TokenVerifier(RING, c2["campaign_id"]).verify(seat["token"])
            assert err.value.code is AuthCode.TOKEN_WRONG_CAMPAIGN

            # Running: no second start, same server.
            status, again = await api.call("POST", f"/v1/campaigns/{c1['campaign_id']}/join", None, ada["access_token"])
            assert status == 200 and again["server"] == "big" and len(big.started) == 1
            row = await hub.campaigns.get(c1["campaign_id"])
            assert row is not None and row.status == "running" and row.data_at == big.data
            # The next campaign goes where there is most room again: big has 2 free, small 1.
            status, seat2 = await api.call("POST", f"/v1/campaigns/{c2['campaign_id']}/join", None, ada["access_token"])
            assert status == 200 and seat2["server"] == "big"


async def test_waitlist_when_full(pg_database: str) -> None:
    async with hub_env(pg_database) as (hub, api), FakeServer(REDIS_URL, hub.cfg.redis_prefix, "srv") as srv:
        tok = {h: (await api.register(h)) for h in ("ann", "ben", "cat", "dan")}
        cid = (await _create(api, tok["ann"]["access_token"], max_players=2))["campaign_id"]

        async def join(h: str) -> tuple[int, Any]:
            return await api.call("POST", f"/v1/campaigns/{cid}/join", None, tok[h]["access_token"])

        assert (await join("ann"))[0] == 200
        assert (await join("ben"))[0] == 200  # the second seat: reserved while its token lives
        assert await join("cat") == (202, {"campaign_id": cid, "waitlist": {"position": 1}})
        assert (await join("dan"))[1]["waitlist"] == {"position": 2}
        assert (await join("cat"))[1]["waitlist"] == {"position": 1}, "asking again keeps the place"
        # Both play; then ben leaves the game and his reservation has lapsed: cat gets the seat, not dan.
        await hub.redis.delete(hub.keys.reservations(cid))
        srv.campaigns[cid].accounts = [tok["ann"]["account"]["account_id"]]
        srv.campaigns[cid].ccu = 1
        await srv.beat()
        assert (await join("dan"))[0] == 202
        status, seat = await join("cat")
        assert status == 200 and seat["token"]
        assert (await join("dan"))[1]["waitlist"] == {"position": 1}


async def test_kick_ban_and_leave(pg_database: str) -> None:
    async with hub_env(pg_database) as (hub, api), FakeServer(REDIS_URL, hub.cfg.redis_prefix, "srv") as srv:
        ada = await api.register("ada")
        bob = await api.register("bob")
        eve = await api.register("eve")
        cid = (await _create(api, ada["access_token"]))["campaign_id"]
        for who in (bob, eve):
            assert (await api.call("POST", f"/v1/campaigns/{cid}/join", None, who["access_token"]))[0] == 200
        bob_id = bob["account"]["account_id"]
        # Only the owner kicks; the kicked member is kicked from the server too, and stays out.
        kick = f"/v1/campaigns/{cid}/members/{bob_id}"
        assert (await api.call("DELETE", kick, None, eve["access_token"]))[0] == 403
        assert (await api.call("DELETE", kick, None, ada["access_token"]))[0] == 204
        await eventually(lambda: _true(srv.kicked == [(cid, bob_id)]))
        status, body = await api.call("POST", f"/v1/campaigns/{cid}/join", None, bob["access_token"])
        assert status == 403
        assert (await api.call("GET", f"/v1/campaigns/{cid}/members", None, bob["access_token"]))[0] == 403
        status, members = await api.call("GET", f"/v1/campaigns/{cid}/members", None, ada["access_token"])
        assert {m["handle"] for m in members["members"]} == {"ada", "eve"}

        # A fair-play ban (the game servers' table) keeps an account out of every campaign.
        await hub.fairplay.add_ban(account=eve["account"]["account_id"], reason="speed hack", created_by="referee")
        status, body = await api.call("POST", f"/v1/campaigns/{cid}/join", None, eve["access_token"])
        assert status == 403 and "banned" in body["message"] and "token" not in body
        assert (await api.call("POST", f"/v1/campaigns/{cid}/leave", None, ada["access_token"]))[0] == 409


async def _true(value: bool) -> bool:
    return value


async def test_lifecycle_schedule_complete_archive_replay(pg_database: str) -> None:
    async with hub_env(pg_database) as (hub, api), FakeServer(REDIS_URL, hub.cfg.redis_prefix, "srv") as srv:
        ada = (await api.register("ada"))["access_token"]
        start = time.time() + 1.0
        c = await _create(api, ada, schedule={"kind": "once", "start": start, "hours": 1})
        cid = c["campaign_id"]
        assert c["status"] == "scheduled" and c["ends_at"] - c["starts_at"] == 3600
        status, body = await api.call("POST", f"/v1/campaigns/{cid}/join", None, ada)
        assert status == 409 and body["error"] == "not_open"
        assert (await api.call("GET", f"/v1/campaigns/{cid}/replay", None, ada))[0] == 404

        async def opened() -> bool:
            return (await api.call("GET", f"/v1/campaigns/{cid}", None, ada))[1]["status"] == "open"

        await eventually(opened)
        assert (await api.call("POST", f"/v1/campaigns/{cid}/join", None, ada))[0] == 200
        assert (await api.call("GET", f"/v1/campaigns/{cid}", None, ada))[1]["status"] == "running"
        assert (await api.call("POST", f"/v1/campaigns/{cid}/archive", None, ada))[0] == 409
        status, done = await api.call("POST", f"/v1/campaigns/{cid}/complete", None, ada)
        assert status == 200 and done["status"] == "completed" and done["completed_at"]
        await eventually(lambda: _true(srv.stopped == [cid]))
        assert (await api.call("POST", f"/v1/campaigns/{cid}/join", None, ada))[1]["error"] == "ended"
        status, arch = await api.call("POST", f"/v1/campaigns/{cid}/archive", None, ada)
        assert status == 200 and arch["status"] == "archived"
        status, rep = await api.call("GET", f"/v1/campaigns/{cid}/replay", None, ada)
        assert status == 200 and rep["command"] == f"arbiter replay /data/{cid} --verify"

        # A one-shot window that ends completes by itself.
        c2 = await _create(api, ada, schedule={"kind": "once", "start": time.time() - 3600 + 1.0, "hours": 1})
        assert c2["status"] == "open"

        async def completed() -> bool:
            _, got = await api.call("GET", f"/v1/campaigns/{c2['campaign_id']}", None, ada)
            return bool(got["status"] == "completed")

        await eventually(completed)


async def test_a_down_server_and_where_the_data_is(pg_database: str) -> None:
    async with hub_env(pg_database) as (hub, api):
        ada = (await api.register("ada"))["access_token"]
        cid = (await _create(api, ada))["campaign_id"]
        status, body = await api.call("POST", f"/v1/campaigns/{cid}/join", None, ada)
        assert status == 503 and "free slot" in body["message"]
        async with FakeServer(REDIS_URL, hub.cfg.redis_prefix, "first", data="machine-a:/data"):
            assert (await api.call("POST", f"/v1/campaigns/{cid}/join", None, ada))[0] == 200
        # Its server is gone: the record expires (here: removed), the sweeper sets the campaign open again.
        await hub.redis.delete(hub.keys.server("first"), hub.keys.campaign_server(cid))

        async def reopened() -> bool:
            row = await hub.campaigns.get(cid)
            return row is not None and row.status == "open"

        await eventually(reopened)
        # Another machine has room, but the campaign's data is on machine-a: it is not started elsewhere.
        async with FakeServer(REDIS_URL, hub.cfg.redis_prefix, "second", data="machine-b:/data") as second:
            status, body = await api.call("POST", f"/v1/campaigns/{cid}/join", None, ada)
            assert status == 503 and "machine-a" in body["message"] and not second.started
            status, _servers = await api.call("GET", "/v1/admin/servers", None, ada)
            assert status == 403
        # machine-a is back: the campaign restarts there.
        async with FakeServer(REDIS_URL, hub.cfg.redis_prefix, "first-again", data="machine-a:/data") as back:
            status, seat = await api.call("POST", f"/v1/campaigns/{cid}/join", None, ada)
            assert status == 200 and seat["server"] == "first-again" and back.started


def test_weekly_slots() -> None:
    slots = [{"day": 0, "start": "18:00", "hours": 2}, {"day": 3, "start": "09:30", "hours": 1}]
    monday = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)  # a Monday
    assert next_weekly(slots, monday) == (monday.replace(hour=18), monday.replace(hour=20))
    inside = monday.replace(hour=19)
    assert next_weekly(slots, inside)[0] == monday.replace(hour=18), "a slot in progress is the current one"
    after = monday.replace(hour=20, minute=1)
    start, end = next_weekly(slots, after)
    assert start == dt.datetime(2026, 12, 3, 9, 30, tzinfo=dt.UTC) and end - start == dt.timedelta(hours=1)
    sunday = dt.datetime(2026, 12, 6, 23, 0, tzinfo=dt.UTC)
    assert next_weekly(slots, sunday)[0] == dt.datetime(2026, 12, 7, 18, 0, tzinfo=dt.UTC)
