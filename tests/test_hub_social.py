"""Friends, blocks, presence and chat on a real hub, through its HTTP API and `/v1/stream`."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from tests.hubutil import Api, hub_env, next_frame


async def _friends(api: Api, a: dict[str, Any], b: dict[str, Any]) -> None:
    status, _ = await api.call("POST", "/v1/friends/requests", {"handle": b["account"]["handle"]}, a["access_token"])
    assert status == 201
    path = f"/v1/friends/requests/{a['account']['account_id']}/accept"
    assert (await api.call("POST", path, None, b["access_token"]))[0] == 200


async def test_friend_requests_and_blocks(pg_database: str) -> None:
    async with hub_env(pg_database) as (_, api):
        ada, bob, cat = await api.register("ada"), await api.register("bob"), await api.register("cat")
        A, B, C = (x["access_token"] for x in (ada, bob, cat))
        bob_id, ada_id, cat_id = (x["account"]["account_id"] for x in (bob, ada, cat))

        assert (await api.call("POST", "/v1/friends/requests", {"account": bob_id}, A))[0] == 201
        _, lists = await api.call("GET", "/v1/friends", None, B)
        assert [r["handle"] for r in lists["incoming"]] == ["ada"] and lists["friends"] == []
        assert (await api.call("POST", f"/v1/friends/requests/{bob_id}/accept", None, A))[0] == 404, "not to me"
        assert (await api.call("POST", f"/v1/friends/requests/{ada_id}/accept", None, B))[0] == 200
        _, lists = await api.call("GET", "/v1/friends", None, A)
        assert [(f["handle"], f["status"]) for f in lists["friends"]] == [("bob", "offline")]
        assert (await api.call("POST", "/v1/friends/requests", {"handle": "bob"}, A))[0] == 409

        # Crossing requests become a friendship at once.
        assert (await api.call("POST", "/v1/friends/requests", {"handle": "cat"}, A))[0] == 201
        status, body = await api.call("POST", "/v1/friends/requests", {"handle": "ada"}, C)
        assert status == 200 and body["status"] == "friends"
        assert (await api.call("DELETE", f"/v1/friends/{cat_id}", None, A))[0] == 204
        assert (await api.call("DELETE", f"/v1/friends/{cat_id}", None, A))[0] == 404

        # A block ends the friendship and stops requests and messages, both ways.
        assert (await api.call("POST", "/v1/blocks", {"handle": "bob"}, A))[0] == 201
        _, lists = await api.call("GET", "/v1/friends", None, B)
        assert lists["friends"] == []
        assert (await api.call("POST", "/v1/friends/requests", {"handle": "ada"}, B))[0] == 403
        assert (await api.call("POST", "/v1/friends/requests", {"handle": "bob"}, A))[0] == 403
        assert (await api.call("POST", "/v1/dm/ada", {"text": "hi"}, B))[0] == 403
        assert (await api.call("POST", "/v1/dm/bob", {"text": "hi"}, A))[0] == 403
        assert [b["handle"] for b in (await api.call("GET", "/v1/blocks", None, A))[1]["blocks"]] == ["bob"]
        assert (await api.call("DELETE", f"/v1/blocks/{bob_id}", None, A))[0] == 204
        assert (await api.call("POST", "/v1/dm/ada", {"text": "hi again"}, B))[0] == 201
        assert (await api.call("POST", "/v1/friends/requests", {"handle": "ada"}, A))[0] == 400, "that is you"
        # A message goes to a handle or to an account id, and a handle shaped like an id still works.
        odd = await api.register("a_player12")
        assert (await api.call("POST", "/v1/dm/a_player12", {"text": "hi"}, A))[0] == 201
        assert (await api.call("POST", f"/v1/dm/{odd['account']['account_id']}", {"text": "hi"}, A))[0] == 201
        assert (await api.call("POST", "/v1/dm/a_nobody1234", {"text": "hi"}, A))[0] == 404


async def test_presence_of_friends_on_streams(pg_database: str) -> None:
    async with hub_env(pg_database) as (_, api):
        ada, bob = await api.register("ada"), await api.register("bob")
        await _friends(api, ada, bob)
        ws_a = await api.stream(ada["access_token"])
        ws_b = await api.stream(bob["access_token"])
        bob_id = bob["account"]["account_id"]
        frame = await next_frame(ws_a, "presence", account=bob_id)
        assert frame["status"] == "online"
        _, lists = await api.call("GET", "/v1/friends", None, ada["access_token"])
        assert lists["friends"][0]["status"] == "online"
        await ws_b.close()
        frame = await next_frame(ws_a, "presence", account=bob_id)
        assert frame["status"] == "offline"
        await ws_a.close()


async def test_campaign_chat_history_limits_and_moderation(pg_database: str) -> None:
    async with hub_env(pg_database, chat_per_window=5, chat_window_s=30, chat_history=3) as (hub, api):
        ada, bob, eve = await api.register("ada"), await api.register("bob"), await api.register("eve")
        A, B, E = (x["access_token"] for x in (ada, bob, eve))
        _, camp = await api.call("POST", "/v1/campaigns", {"title": "Chatty", "game": "startales"}, A)
        cid = camp["campaign_id"]
        await hub.campaigns.add_member(cid, bob["account"]["account_id"])
        path = f"/v1/campaigns/{cid}/chat"

        for i in range(4):
            assert (await api.call("POST", path, {"text": f"old {i}"}, A))[0] == 201
        ws_b = await api.stream(B)
        await ws_b.send_json({"op": "join", "channel": f"c:{cid}"})
        history = await next_frame(ws_b, "history")
        assert [m["text"] for m in history["messages"]] == ["old 1", "old 2", "old 3"], "the last N on join"

        status, msg = await api.call("POST", path, {"text": "  hi\u202e there\x07\x1b[31m  ", "client_msg_id": "m1"}, A)
        assert status == 201 and msg["text"] == "hi there[31m" and msg["handle"] == "ada"
        got = await next_frame(ws_b, "chat", id=msg["id"])
        assert got["text"] == "hi there[31m" and got["from"] == ada["account"]["account_id"]
        status, dup = await api.call("POST", path, {"text": "hi there", "client_msg_id": "m1"}, A)
        assert status == 201 and dup["id"] == msg["id"] and dup["duplicate"], "a retried post is one message"

        status, body = await api.call("POST", path, {"text": "x" * 501}, A)
        assert status == 400 and "500" in body["message"]
        assert (await api.call("POST", path, {"text": "\u200b\x00\u202e"}, A))[0] == 400
        assert (await api.call("POST", path, {"text": "let me in"}, E))[0] == 403, "not a member"
        assert (await api.call("GET", path, None, E))[0] == 403
        await ws_b.send_json({"op": "join", "channel": f"c:{cid}"})
        status, body = await api.call("POST", path, {"text": "over"}, A)
        assert status == 429 and body["error"] == "too_many_requests", "5 per window: 4 old + 1 new"

        # Muted and banned accounts cannot post; nothing is stored.
        before = await hub.pool.fetchval("SELECT count(*) FROM chat_messages")
        await hub.accounts.set_muted(bob["account"]["account_id"], dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        assert (await api.call("POST", path, {"text": "muted"}, B))[1]["message"] == "this account is muted"
        await hub.accounts.set_muted(bob["account"]["account_id"], None)
        await hub.fairplay.add_ban(account=bob["account"]["account_id"], campaign=cid, reason="x", created_by="t")
        status, body = await api.call("POST", path, {"text": "banned"}, B)
        assert status == 403 and "banned" in body["message"]
        assert await hub.pool.fetchval("SELECT count(*) FROM chat_messages") == before
        status, hist = await api.call("GET", path + "?limit=2", None, B)
        assert status == 200 and [m["text"] for m in hist["messages"]] == ["old 3", "hi there[31m"]
        await ws_b.close()


async def test_direct_messages_reach_both_accounts_only(pg_database: str) -> None:
    async with hub_env(pg_database) as (_, api):
        ada, bob, eve = await api.register("ada"), await api.register("bob"), await api.register("eve")
        ws_b = await api.stream(bob["access_token"])
        ws_e = await api.stream(eve["access_token"])
        status, msg = await api.call("POST", "/v1/dm/bob", {"text": "psst"}, ada["access_token"])
        assert status == 201 and msg["channel"].startswith("dm:")
        got = await next_frame(ws_b, "chat")
        assert got["text"] == "psst" and got["handle"] == "ada"
        await ws_e.send_json({"op": "ping"})
        assert (await next_frame(ws_e, "pong")) == {"t": "pong"}, "eve got nothing before her pong"
        # History is per pair, derived from the caller: eve asking for bob sees her own (empty) channel.
        _, hist = await api.call("GET", "/v1/dm/ada", None, bob["access_token"])
        assert [m["text"] for m in hist["messages"]] == ["psst"]
        _, hist = await api.call("GET", "/v1/dm/bob", None, eve["access_token"])
        assert hist["messages"] == []
        for ws in (ws_b, ws_e):
            await ws.close()


async def test_stream_refuses_bad_tokens_and_bad_frames(pg_database: str) -> None:
    async with hub_env(pg_database) as (_, api):
        ada = await api.register("ada")
        ws = await api.session.ws_connect(api.base + "/v1/stream")
        await ws.send_json({"op": "auth", "token": "not.a.token"})
        err = await ws.receive_json(timeout=5)
        assert err["error"] == "unauthorized"
        msg = await ws.receive(timeout=5)
        assert msg.data == 4001
        # Auth by first frame works (browsers cannot set headers on a WebSocket).
        ws = await api.session.ws_connect(api.base + "/v1/stream")
        await ws.send_json({"op": "auth", "token": ada["access_token"]})
        assert (await ws.receive_json(timeout=5))["t"] == "hello"
        await ws.send_str("not json")
        assert (await next_frame(ws, "error"))["message"]
        await ws.send_str("[" * 4000)  # nests past the parser's recursion limit: refused like any bad frame
        assert (await next_frame(ws, "error"))["message"]
        await ws.send_json({"op": "join", "channel": "c:c_0123456789abcdef0123"})
        assert "member" in (await next_frame(ws, "error"))["message"]
        for _ in range(10):
            await ws.send_bytes(b"\x00")
        msg = await ws.receive(timeout=5)
        while msg.type != 8:  # CLOSE
            msg = await ws.receive(timeout=5)
        assert msg.data == 1008


async def test_friend_requests_reports_and_streams_of_one_account_are_bounded(pg_database: str) -> None:
    """Requesting, declining one's own request and requesting again would notify the target without
    end; each request and report counts against the account's budget. One account cannot hold an
    unbounded number of streams either."""
    async with hub_env(pg_database, social_per_window=3, streams_per_account=2) as (_, api):
        ada, bob = await api.register("ada"), await api.register("bob")
        T, bob_id = ada["access_token"], bob["account"]["account_id"]
        statuses = []
        for _ in range(3):
            statuses.append((await api.call("POST", "/v1/friends/requests", {"handle": "bob"}, T))[0])
            await api.call("POST", f"/v1/friends/requests/{bob_id}/decline", {}, T)
        status, body = await api.call("POST", "/v1/reports", {"handle": "bob", "reason": "spam"}, T)
        assert statuses == [201, 201, 201] and status == 429 and body["error"] == "too_many_requests"
        streams = [await api.stream(T) for _ in range(2)]  # (each has said hello)
        third = await api.session.ws_connect(api.base + "/v1/stream", headers={"Authorization": f"Bearer {T}"})
        msg = await third.receive(timeout=5)
        while msg.type != 8:  # CLOSE
            msg = await third.receive(timeout=5)
        assert msg.data == 1008
        for ws in streams:
            await ws.close()



async def test_a_report_resolved_as_a_ban(pg_database: str) -> None:
    """An admin resolves a report: a campaign-only ban needs a report made in a campaign (else it
    would be a ban everywhere); a plain ban lands in the game servers' bans table."""
    async with hub_env(pg_database) as (hub, api):
        ada, _, eve = await api.register("ada"), await api.register("bob"), await api.register("eve")
        await hub.accounts.set_role(ada["account"]["account_id"], "admin")
        _, ada = await api.call("POST", "/v1/auth/login", {"login": "ada", "password": "correct horse battery"})
        _, bob = await api.call("POST", "/v1/auth/login", {"login": "bob", "password": "correct horse battery"})
        eve_id = eve["account"]["account_id"]
        status, rep = await api.call("POST", "/v1/reports", {"handle": "eve", "reason": "cheating"},
                                     bob["access_token"])  # fmt: skip
        assert status == 201
        path = f"/v1/admin/reports/{rep['report_id']}"
        status, body = await api.call("POST", path, {"action": "ban", "campaign_only": True}, ada["access_token"])
        assert status == 404 and "campaign" in body["message"]
        assert [b for b in await hub.fairplay.list_bans(time.time()) if b.account == eve_id] == []
        status, _ = await api.call("POST", path, {"action": "ban"}, ada["access_token"])
        assert status == 200
        bans = [b for b in await hub.fairplay.list_bans(time.time()) if b.account == eve_id]
        assert len(bans) == 1 and bans[0].campaign is None
